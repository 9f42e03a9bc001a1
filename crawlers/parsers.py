"""Pure parsers: page text in, validated records out. No network, no clock, no warehouse.

Melon markup (chart rows ``tr.lst50``/``tr.lst100``, song page ``dl.list`` + ``#d_video_summary``)
and MusicBrainz ``/ws/2`` JSON. Anything unusable raises :class:`ParseError` with a short
machine-readable ``reason`` (for the quarantine table) and a human-readable detail.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import date

from bs4 import BeautifulSoup, Comment, NavigableString, Tag

MAX_TITLE = 500
MAX_LYRICS = 20_000
# What Melon shows instead of lyrics: these mean "no lyrics", not lyrics.
NO_LYRICS = ("가사 준비중", "가사 준비 중", "등록된 가사가 없습니다", "가사가 없습니다", "no lyrics",
             "lyrics not available", "lyrics are not available")
_ID_CALL = re.compile(r"\(\s*'?(\d+)'?")
_RESIZE = re.compile(r"(\.(?:jpe?g|png|webp|gif))(?:/melon/.*|\?.*)$", re.I)


class ParseError(ValueError):
    """A page or record that cannot be used. ``reason``: malformed_page | missing_field | bad_value."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class ChartEntry:
    rank: int
    song_id: str
    title: str
    artist: str
    album: str
    album_id: str | None


@dataclass(frozen=True)
class SongRecord:
    source: str
    source_id: str
    title: str
    artist: str
    album: str | None = None
    album_id: str | None = None
    release_date: date | None = None
    genre: str | None = None
    lyrics: str = ""
    source_url: str | None = None
    cover_url: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def validated(self) -> SongRecord:
        """Trimmed copy, or ParseError naming the first problem."""
        title, artist = _clean(self.title), _clean(self.artist)
        if not self.source_id:
            raise ParseError("missing_field", "source_id is empty")
        if not title:
            raise ParseError("missing_field", f"title is empty for {self.source}:{self.source_id}")
        if not artist:
            raise ParseError("missing_field", f"artist is empty for {self.source}:{self.source_id}")
        if len(title) > MAX_TITLE:
            raise ParseError("bad_value", f"title longer than {MAX_TITLE} characters")
        lyrics = clean_lyrics(self.lyrics or "")
        if len(lyrics) > MAX_LYRICS:
            raise ParseError("bad_value", f"lyrics longer than {MAX_LYRICS} characters")
        return replace(self, title=title, artist=artist, album=_clean(self.album) or None,
                       genre=_clean(self.genre) or None, lyrics=lyrics)

    def fields(self) -> dict:
        """The stored fields (what the content hash covers). ``cover_url`` is where the image
        was fetched from, not song data; the cover's own hash stands for it."""
        out = asdict(self)
        out.pop("extra")
        out.pop("cover_url")
        out["release_date"] = self.release_date.isoformat() if self.release_date else None
        return out


def _clean(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


def clean_lyrics(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines).strip()
    text = re.sub(r"\n{3,}", "\n\n", text)
    if not text or any(text.lower().startswith(p) for p in NO_LYRICS):
        return ""
    return text


def parse_date(text: str | None) -> date | None:
    """'2023.05.01', '2023-05-01', '2023-05' and '2023' (first day of the period); else None."""
    match = re.match(r"^\s*(\d{4})(?:[.\-/](\d{1,2}))?(?:[.\-/](\d{1,2}))?\s*$", text or "")
    if not match:
        return None
    year, month, day = (int(g) if g else 1 for g in match.groups())
    try:
        return date(year, month, day)
    except ValueError:
        return None


def melon_cover_url(url: str | None) -> str | None:
    """Full-size image URL: drop Melon's resize suffix ('.../x_500.jpg/melon/resize/282/...')."""
    if not url:
        return None
    return _RESIZE.sub(r"\1", url.strip())


def _soup(html: str) -> BeautifulSoup:
    return BeautifulSoup(html, "lxml")


def _js_id(href: str | None) -> str | None:
    match = _ID_CALL.search(href or "")
    return match.group(1) if match else None


def parse_melon_chart(html: str) -> list[ChartEntry]:
    """Rows of a Melon chart page. A page without its closing tag is truncated, not short."""
    if "</html>" not in html.lower():
        raise ParseError("malformed_page", "chart page is truncated (no closing </html>)")
    rows = _soup(html).select("tr.lst50, tr.lst100")
    if not rows:
        raise ParseError("malformed_page", "chart page has no tr.lst50/tr.lst100 rows")
    entries = []
    for position, row in enumerate(rows, start=1):
        rank_text = _clean(row.select_one("span.rank").get_text()) if row.select_one("span.rank") else ""
        title = row.select_one("div.ellipsis.rank01")
        artist = row.select_one("div.ellipsis.rank02")
        album = row.select_one("div.ellipsis.rank03")
        album_link = album.select_one("a") if album else None
        artist_links = artist.select("span.checkEllipsis a") or artist.select("a") if artist else []
        entries.append(ChartEntry(
            rank=int(rank_text) if rank_text.isdigit() else position,
            song_id=(row.get("data-song-no") or "").strip(),
            title=_clean(title.get_text()) if title else "",
            artist=", ".join(dict.fromkeys(_clean(a.get_text()) for a in artist_links)) if artist else "",
            album=_clean(album.get_text()) if album else "",
            album_id=_js_id(album_link.get("href")) if album_link else None,
        ))
    return entries


def _dl_pairs(soup: BeautifulSoup) -> dict[str, object]:
    """Melon's ``dl.list``: each ``dt`` label (앨범, 발매일, 장르, …) paired with its ``dd``."""
    pairs = {}
    for dl in soup.select("dl.list"):
        for dt in dl.find_all("dt"):
            dd = dt.find_next_sibling("dd")
            if dd is not None:
                pairs.setdefault(_clean(dt.get_text()), dd)
    return pairs


def _og_image(soup: BeautifulSoup) -> str | None:
    meta = soup.select_one('meta[property="og:image"]')
    return meta.get("content") if meta else None


def _lyrics_text(node) -> str:
    """Text with ``<br>`` as the only line break: source newlines are HTML whitespace."""
    if node is None:
        return ""
    parts = []
    for child in node.descendants:
        if isinstance(child, Tag) and child.name == "br":
            parts.append("\n")
        elif isinstance(child, NavigableString) and not isinstance(child, Comment):
            parts.append(re.sub(r"\s+", " ", str(child)))
    return "".join(parts)


def parse_melon_song(html: str, song_id: str, source_url: str | None = None, source: str = "melon") -> SongRecord:
    """A Melon song page (song/detail.htm?songId=) -> validated SongRecord."""
    if "</html>" not in html.lower():
        raise ParseError("malformed_page", f"song page {song_id} is truncated (no closing </html>)")
    soup = _soup(html)
    name = soup.select_one("div.song_name")
    if name is None:
        raise ParseError("missing_field", f"song page {song_id} has no div.song_name (title)")
    for label in name.select("strong, span.none"):  # the hidden '곡명' label
        label.decompose()
    artist_nodes = soup.select("div.artist a.artist_name") or soup.select("div.artist")
    artist = ", ".join(dict.fromkeys(_clean(a.get_text()) for a in artist_nodes))
    meta = _dl_pairs(soup)
    album_dd = meta.get("앨범")
    album_link = album_dd.select_one("a") if album_dd is not None else None
    thumb = soup.select_one("div.thumb img") or soup.select_one("a.image_typeAll img")
    return SongRecord(
        source=source,
        source_id=str(song_id),
        title=name.get_text(),
        artist=artist,
        album=album_dd.get_text() if album_dd is not None else None,
        album_id=_js_id(album_link.get("href")) if album_link else None,
        release_date=parse_date(meta["발매일"].get_text()) if "발매일" in meta else None,
        genre=meta["장르"].get_text() if "장르" in meta else None,
        lyrics=_lyrics_text(soup.select_one("div#d_video_summary")),
        source_url=source_url,
        cover_url=melon_cover_url(_og_image(soup) or (thumb.get("src") if thumb else None)),
    ).validated()


def parse_melon_album(html: str, album_id: str) -> dict:
    """A Melon album page -> {album_id, title, release_date, genre, cover_url}."""
    if "</html>" not in html.lower():
        raise ParseError("malformed_page", f"album page {album_id} is truncated (no closing </html>)")
    soup = _soup(html)
    meta = _dl_pairs(soup)
    thumb = soup.select_one("div.thumb img") or soup.select_one("a.image_typeAll img")
    name = soup.select_one("div.song_name")
    if name is not None:
        for label in name.select("strong, span.none"):
            label.decompose()
    return {
        "album_id": str(album_id),
        "title": _clean(name.get_text()) if name else None,
        "release_date": parse_date(meta["발매일"].get_text()) if "발매일" in meta else None,
        "genre": _clean(meta["장르"].get_text()) if "장르" in meta else None,
        "cover_url": melon_cover_url((thumb.get("src") if thumb else None) or _og_image(soup)),
    }


def _load_json(text: str | bytes, what: str) -> dict:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ParseError("malformed_page", f"{what} is not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict):
        raise ParseError("malformed_page", f"{what} is not a JSON object")
    return doc


def parse_mb_release_search(text: str | bytes) -> tuple[list[dict], int]:
    """/ws/2/release?query=...&fmt=json -> ([{id, title, date}], total count)."""
    doc = _load_json(text, "release search")
    if "releases" not in doc:
        raise ParseError("malformed_page", "release search has no 'releases' list")
    releases = [{"id": r.get("id"), "title": r.get("title"), "date": parse_date(r.get("date"))}
                for r in doc["releases"] if r.get("id")]
    return releases, int(doc.get("count", len(releases)))


def _artist_credit(credits: list | None) -> str:
    return "".join(f"{c.get('name') or c.get('artist', {}).get('name', '')}{c.get('joinphrase', '')}"
                   for c in credits or []).strip()


def parse_mb_release(text: str | bytes, source_url_for=None,
                     source: str = "musicbrainz") -> tuple[list[SongRecord], list[tuple[str, ParseError]]]:
    """/ws/2/release/{mbid}?inc=recordings+artist-credits+genres -> (one record per good track,
    [(track id, error)] for the bad ones: a bad track does not sink its release).

    MusicBrainz has no lyrics; the genre is the release's most-voted genre (or tag)."""
    doc = _load_json(text, "release lookup")
    mbid = doc.get("id")
    if not mbid:
        raise ParseError("missing_field", "release lookup has no id")
    if "media" not in doc:
        raise ParseError("missing_field", f"release {mbid} has no media (was inc=recordings sent?)")
    votes = sorted(doc.get("genres") or doc.get("tags") or [], key=lambda g: (-g.get("count", 0), g.get("name", "")))
    genre = votes[0]["name"] if votes else None
    release_artist = _artist_credit(doc.get("artist-credit"))
    records, bad = [], []
    for medium in doc["media"]:
        for track in medium.get("tracks") or []:
            recording = track.get("recording") or {}
            rid = recording.get("id") or track.get("id")
            try:
                records.append(_track_record(
                source=source,
                source_id=str(rid or ""),
                title=track.get("title") or recording.get("title") or "",
                artist=_artist_credit(track.get("artist-credit") or recording.get("artist-credit")) or release_artist,
                album=doc.get("title"),
                album_id=mbid,
                release_date=parse_date(doc.get("date")),
                genre=genre,
                lyrics="",
                source_url=source_url_for(rid) if source_url_for else None,
                extra={"position": track.get("position")},
                ))
            except ParseError as exc:
                bad.append((str(rid or f"{mbid}#{track.get('position')}"), exc))
    if not records and not bad:
        raise ParseError("missing_field", f"release {mbid} has no tracks")
    return records, bad


def _track_record(**kwargs) -> SongRecord:
    return SongRecord(**kwargs).validated()
