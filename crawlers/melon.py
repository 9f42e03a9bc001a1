"""Melon client: chart -> song pages (+ album page when the song page lacks something) -> cover.

Melon is crawled as a browser would see it (browser-like headers) and only where its
robots.txt allows; the operator can opt out of robots.txt explicitly (logged as a warning).
Melon content is copyrighted: every cover is stored with its source URL and attribution.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from urllib.parse import urlencode

from crawlers.charsets import decode_html
from crawlers.http import FetchError, HttpClient, Response, rewrite_url
from crawlers.parsers import ChartEntry, SongRecord, parse_melon_album, parse_melon_chart, parse_melon_song
from crawlers.robots import RobotsPolicy

CHARTS = {"top100": "/chart/index.htm", "day": "/chart/day/index.htm", "week": "/chart/week/index.htm",
          "month": "/chart/month/index.htm"}
BROWSER_HEADERS = {
    "User-Agent": ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/126.0 Safari/537.36"),
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
    "Accept-Language": "ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7",
}
ROBOTS_AGENT = "SleeveBot"
LICENCE = "copyright of the rights holders (not CC0)"


class Blocked(RuntimeError):
    """robots.txt disallows this URL."""


class MelonClient:
    def __init__(self, http: HttpClient, base_url: str = "https://www.melon.com", *, obey_robots: bool = True,
                 source: str = "melon", rewrites: dict[str, str] | None = None):
        self.http, self.base, self.source = http, base_url.rstrip("/"), source
        self.rewrites = rewrites or {}
        self.robots = RobotsPolicy(http, ROBOTS_AGENT, obey=obey_robots)
        self._albums: dict[str, dict] = {}
        self._lock = threading.Lock()

    def attribution(self, record: SongRecord) -> str:
        return f"Cover of '{record.album or record.title}' by {record.artist}, from Melon ({record.source_url})"

    def licence(self, record: SongRecord) -> str:
        return LICENCE

    def get(self, url: str) -> Response:
        if not self.robots.allowed(url):
            raise Blocked(f"robots.txt disallows {url}")
        return self.http.get(url, headers={**BROWSER_HEADERS, "Referer": f"{self.base}/"})

    def page(self, url: str, what: str) -> str:
        """A page's text, decoded by its declared (or detected) charset."""
        resp = self.get(url)
        return decode_html(resp.content, resp.headers.get("content-type"), what)

    def chart_url(self, chart: str = "top100") -> str:
        if chart not in CHARTS:
            raise ValueError(f"unknown Melon chart {chart!r}; use one of {', '.join(CHARTS)}")
        return self.base + CHARTS[chart]

    def song_url(self, entry: ChartEntry) -> str:
        return f"{self.base}/song/detail.htm?{urlencode({'songId': entry.song_id})}"

    def chart(self, chart: str = "top100") -> list[ChartEntry]:
        return parse_melon_chart(self.page(self.chart_url(chart), "chart page"))

    def album(self, album_id: str) -> dict:
        """Album page, fetched once per client (two songs of one album share it)."""
        with self._lock:
            if album_id in self._albums:
                return self._albums[album_id]
        url = f"{self.base}/album/detail.htm?{urlencode({'albumId': album_id})}"
        album = parse_melon_album(self.page(url, f"album page {album_id}"), album_id)
        with self._lock:
            self._albums[album_id] = album
        return album

    def song(self, entry: ChartEntry) -> SongRecord:
        """The song page, completed from the album page where it lacks release date, genre or cover."""
        url = self.song_url(entry)
        record = parse_melon_song(self.page(url, f"song page {entry.song_id}"), entry.song_id,
                                  source_url=rewrite_url(url, self.rewrites), source=self.source)
        album_id = record.album_id or entry.album_id
        if album_id and not (record.release_date and record.genre and record.cover_url):
            try:
                album = self.album(album_id)
            except FetchError:
                album = {}
            record = replace(record, release_date=record.release_date or album.get("release_date"),
                             genre=record.genre or album.get("genre"),
                             cover_url=record.cover_url or album.get("cover_url"))
        return replace(record, album_id=album_id, album=record.album or entry.album or None)

    def cover(self, record: SongRecord) -> tuple[bytes, str] | None:
        """(bytes, public source URL) of the song's cover, or None when the page names none."""
        if not record.cover_url:
            return None
        return self.get(record.cover_url).content, rewrite_url(record.cover_url, self.rewrites)
