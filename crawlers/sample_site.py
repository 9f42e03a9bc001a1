"""A loopback web server that serves the sample catalogue the way the real sources do.

Melon's HTML shape (``/chart/index.htm``, ``/song/detail.htm?songId=``,
``/album/detail.htm?albumId=``, images under ``/cm2/album/images/``, ``/robots.txt``) and the
MusicBrainz / Cover Art Archive JSON shape (``/ws/2/release?query=``, ``/ws/2/release/{mbid}``,
``/release/{mbid}/front-500`` redirecting to the image). It listens on several ports, one per
"host" (www.melon.com, cdnimg.melon.co.kr, musicbrainz.org, coverartarchive.org), so per-host
rate limits mean what they mean in production. Every response carries an ETag and honours
``If-None-Match``. Options: fixed latency, and faults injected per path (``429:<retry-after>``,
``503:<retry-after>``, ``500``, ``truncate``), consumed in order. Every request is logged
server-side with its arrival time, so tests and the benchmark can prove the crawler's rate.

    with SampleSite(build_catalogue()) as site:
        site.urls["melon"], site.urls["musicbrainz"], ...
"""

from __future__ import annotations

import hashlib
import html
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from crawlers.catalogue import Catalogue, SampleAlbum, SampleSong

ROLES = ("melon", "melon_cdn", "musicbrainz", "coverart")
DEFAULT_ROBOTS = "User-agent: *\nDisallow: /private/\nDisallow: /search/\n"
RESIZE = "/melon/resize/282/quality/80/optimize"


@dataclass(frozen=True)
class Hit:
    host: str
    at: float  # time.monotonic() on arrival
    path: str
    status: int
    user_agent: str


def _e(text: str | None) -> str:
    return html.escape(text or "", quote=True)


class SampleSite:
    def __init__(self, catalogue: Catalogue, *, latency_s: float = 0.0, faults: dict[str, list[str]] | None = None,
                 robots_txt: str = DEFAULT_ROBOTS, hosts: int = 4):
        self.catalogue, self.latency_s, self.robots_txt = catalogue, latency_s, robots_txt
        self.faults = {path: list(seq) for path, seq in (faults or {}).items()}
        self.n_hosts = max(1, min(hosts, len(ROLES)))
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self.urls: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SampleSite:
        handler = _handler_for(self)
        for _ in range(self.n_hosts):
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="sample-site").start()
            self._servers.append(server)
        for i, role in enumerate(ROLES):
            self.urls[role] = f"http://127.0.0.1:{self._servers[i % self.n_hosts].server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> SampleSite:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what the server saw ---------------------------------------------------------------
    def _log(self, hit: Hit) -> None:
        with self._lock:
            self.hits.append(hit)

    def _next_fault(self, path: str) -> str | None:
        with self._lock:
            seq = self.faults.get(path)
            return seq.pop(0) if seq else None

    def max_rate(self, window_s: float = 1.0) -> dict[str, int]:
        """Per host: the most requests that arrived within any ``window_s`` window."""
        by_host = defaultdict(list)
        for hit in self.hits:
            by_host[hit.host].append(hit.at)
        out = {}
        for host, times in by_host.items():
            times.sort()
            best, j = 0, 0
            for i, t in enumerate(times):
                while times[j] <= t - window_s:
                    j += 1
                best = max(best, i - j + 1)
            out[host] = best
        return out

    # -- pages -----------------------------------------------------------------------------
    def route(self, path: str, query: dict[str, str]) -> tuple[int, str, bytes, dict]:
        """(status, content type, body, extra headers) for one GET."""
        cat = self.catalogue
        if path == "/robots.txt":
            return 200, "text/plain; charset=utf-8", self.robots_txt.encode(), {}
        if path in ("/chart/index.htm", "/chart/day/index.htm", "/chart/week/index.htm", "/chart/month/index.htm"):
            return _html(melon_chart_html(cat.chart))
        if path == "/song/detail.htm":
            song = cat.song_by_melon_id(query.get("songId", ""))
            return _html(melon_song_html(song, self.urls["melon_cdn"])) if song else _not_found()
        if path == "/album/detail.htm":
            album = cat.album_by_melon_id(query.get("albumId", ""))
            return _html(melon_album_html(album, self.urls["melon_cdn"])) if album else _not_found()
        if path.startswith("/cm2/album/images/"):
            album = cat.album_by_melon_id(path.rsplit("/", 1)[-1].split("_", 1)[0])
            return _image(album) if album else _not_found()
        if path == "/ws/2/release":
            return _json(mb_search(cat.releases, int(query.get("limit", 25)), int(query.get("offset", 0))))
        if path.startswith("/ws/2/release/"):
            album = cat.release(path.rsplit("/", 1)[-1])
            return _json(mb_release(album)) if album else _not_found('{"error": "Not Found"}')
        if path.startswith("/release/") and path.endswith("/front-500"):
            album = cat.release(path.split("/")[2])
            if not album or album.cover is None:
                return _not_found()
            return 307, "text/plain", b"", {"Location": f"/img/{album.release_id}-500.{album.cover_ext}"}
        if path.startswith("/img/"):
            album = cat.release(path.rsplit("/", 1)[-1].split("-500", 1)[0])
            return _image(album) if album else _not_found()
        return _not_found()


def _html(text: str):
    return 200, "text/html; charset=utf-8", text.encode("utf-8"), {}


def _json(doc: dict):
    return 200, "application/json; charset=utf-8", json.dumps(doc, ensure_ascii=False).encode("utf-8"), {}


def _image(album: SampleAlbum):
    content_type = "image/jpeg" if album.cover_ext == "jpg" else "image/png"  # a broken cover lies, as CDNs do
    return 200, content_type, album.cover, {}


def _not_found(body: str = "Not Found"):
    return 404, "text/plain; charset=utf-8", body.encode(), {}


def _handler_for(site: SampleSite):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def log_message(self, *args):  # quiet: the site keeps its own log
            pass

        def do_GET(self):  # noqa: N802 (http.server's naming)
            arrived = time.monotonic()
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fault = site._next_fault(self.path) or site._next_fault(parts.path)
            if site.latency_s:
                time.sleep(site.latency_s)
            status, ctype, body, headers = site.route(parts.path, query)
            if fault and fault.split(":")[0] in ("429", "500", "502", "503"):
                code, _, retry_after = fault.partition(":")
                status, ctype, body, headers = int(code), "text/plain", f"fault {code}".encode(), {}
                if retry_after:
                    headers["Retry-After"] = retry_after
            elif fault == "truncate":
                body = body[: len(body) // 2]
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            if status == 200 and self.headers.get("If-None-Match") == etag:
                status, body = 304, b""
            host = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            site._log(Hit(host, arrived, self.path, status, self.headers.get("User-Agent", "")))
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if status in (200, 304):
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", "max-age=0, must-revalidate")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


# -- Melon HTML shape --------------------------------------------------------------------------
def _page(title: str, body: str, og_image: str = "") -> str:
    og = f'<meta property="og:image" content="{_e(og_image)}">' if og_image else ""
    return (f'<!DOCTYPE html>\n<html lang="ko"><head><meta charset="utf-8"><title>{_e(title)} - 멜론</title>'
            f'<meta property="og:title" content="{_e(title)}">{og}</head>\n<body><div id="wrap"><div id="conts">'
            f"{body}</div></div></body></html>\n")


def melon_chart_html(chart: list[SampleSong]) -> str:
    rows = []
    for rank, song in enumerate(chart, start=1):
        album = song.album
        rows.append(
            f'<tr class="{"lst50" if rank <= 50 else "lst100"}" data-song-no="{song.melon_id}">'
            f'<td><div class="wrap t_center"><span class="rank ">{rank}</span></div></td>'
            f'<td><div class="wrap"><a href="javascript:melon.link.goAlbumDetail(\'{album.melon_id}\');" '
            f'class="image_typeAll"><img src="/cm2/album/images/{album.melon_id}_500.{album.cover_ext}'
            f'/melon/resize/120/quality/80/optimize" alt="{_e(album.title)}"></a></div></td>'
            f'<td><div class="wrap"><div class="wrap_song_info">'
            f'<div class="ellipsis rank01"><span><a href="javascript:melon.play.playSong(\'1000002721\','
            f'{song.melon_id});" title="{_e(song.title)} 재생">{_e(song.title)}</a></span></div><br>'
            f'<div class="ellipsis rank02"><a href="javascript:melon.link.goArtistDetail(\'7{song.melon_id[-4:]}\');"'
            f' title="{_e(song.artist)} - 페이지 이동">{_e(song.artist)}</a><span class="checkEllipsis">'
            f'<a href="javascript:melon.link.goArtistDetail(\'7{song.melon_id[-4:]}\');">{_e(song.artist)}</a>'
            f"</span></div></div></div></td>"
            f'<td><div class="wrap"><div class="wrap_song_info"><div class="ellipsis rank03">'
            f'<a href="javascript:melon.link.goAlbumDetail(\'{album.melon_id}\');" title="{_e(album.title)} - 페이지 이동">'
            f"{_e(album.title)}</a></div></div></div></td></tr>"
        )
    table = f'<div class="service_list_song"><table><tbody>{"".join(rows)}</tbody></table></div>'
    return _page("멜론차트 TOP100", table)


def _cover_src(album: SampleAlbum, cdn: str) -> str:
    return f"{cdn}/cm2/album/images/{album.melon_id}_500.{album.cover_ext}{RESIZE}"


def _meta_list(album: SampleAlbum) -> str:
    return (f'<div class="meta"><dl class="list"><dt>앨범</dt><dd><a href="javascript:melon.link.goAlbumDetail('
            f'\'{album.melon_id}\');" title="{_e(album.title)} - 페이지 이동">{_e(album.title)}</a></dd>'
            f"<dt>발매일</dt><dd>{album.release_date:%Y.%m.%d}</dd><dt>장르</dt><dd>{_e(album.genre)}</dd>"
            f"<dt>FLAC</dt><dd>16/24bit</dd></dl></div>")


def melon_song_html(song: SampleSong, cdn: str) -> str:
    album = song.album
    title = "" if song.defect == "missing_title" else song.title
    name = f'<div class="song_name"><strong class="none">곡명</strong>{_e(title)}</div>' if title else ""
    lyrics = "<br>\n".join(_e(line) for line in song.lyrics.split("\n")) if song.lyrics else "가사 준비중입니다."
    body = (f'<div class="section_info"><div class="wrap_info"><div class="thumb">'
            f'<a href="javascript:melon.link.goAlbumDetail(\'{album.melon_id}\');" class="image_typeAll">'
            f'<img src="{_cover_src(album, cdn)}" width="282" height="282" alt="{_e(album.title)}"></a></div>'
            f'<div class="entry"><div class="info">{name}<div class="artist">'
            f'<a href="javascript:melon.link.goArtistDetail(\'7{song.melon_id[-4:]}\');" '
            f'title="{_e(song.artist)} - 페이지 이동" class="artist_name"><span>{_e(song.artist)}</span></a></div></div>'
            f"{_meta_list(album)}</div></div></div>"
            f'<div class="section_lyric"><div class="wrap_lyric"><div class="lyric" id="d_video_summary">'
            f"<!-- height:auto; 로 변경시, 확장됨 -->{lyrics}</div></div></div>")
    return _page(title or "곡 정보", body, og_image=_cover_src(album, cdn))


def melon_album_html(album: SampleAlbum, cdn: str) -> str:
    body = (f'<div class="section_info"><div class="wrap_info"><div class="thumb">'
            f'<a href="#" class="image_typeAll"><img src="{_cover_src(album, cdn)}" width="282" height="282" '
            f'alt="{_e(album.title)}"></a></div><div class="entry"><div class="info"><div class="song_name">'
            f'<strong class="none">앨범명</strong>{_e(album.title)}</div></div>{_meta_list(album)}</div></div></div>')
    return _page(album.title, body, og_image=_cover_src(album, cdn))


# -- MusicBrainz JSON shape --------------------------------------------------------------------
def mb_search(releases: list[SampleAlbum], limit: int, offset: int) -> dict:
    ordered = sorted(releases, key=lambda a: (a.release_date, a.release_id), reverse=True)
    page = ordered[offset: offset + max(1, min(limit, 100))]
    return {"created": "2026-01-01T00:00:00.000Z", "count": len(ordered), "offset": offset,
            "releases": [{"id": a.release_id, "score": 100, "title": a.title, "status": "Official",
                          "date": a.release_date.isoformat(), "track-count": len(a.songs),
                          "artist-credit": [{"name": a.artist, "artist": {"name": a.artist}}]} for a in page]}


def mb_release(album: SampleAlbum) -> dict:
    credit = [{"name": album.artist, "joinphrase": "", "artist": {"id": "a-" + album.release_id[:8],
                                                                   "name": album.artist}}]
    return {
        "id": album.release_id, "title": album.title, "status": "Official", "date": album.release_date.isoformat(),
        "artist-credit": credit,
        "genres": [{"name": album.genre, "count": 3}, {"name": "seoul", "count": 1}],
        "cover-art-archive": {"front": album.cover is not None, "count": 1 if album.cover else 0},
        "media": [{"position": 1, "format": "Digital Media", "track-count": len(album.songs), "tracks": [
            {"id": f"t-{s.recording_id}", "position": s.track_no, "number": str(s.track_no), "title": s.title,
             "recording": {"id": s.recording_id, "title": s.title, "artist-credit": credit}}
            for s in album.songs]}],
    }
