"""A loopback web server that serves the sample catalogue the way the real sources do.

Melon's HTML shape (``/chart/index.htm``, ``/song/detail.htm?songId=``,
``/album/detail.htm?albumId=``, images under ``/cm2/album/images/``, ``/robots.txt``) and the
MusicBrainz / Cover Art Archive JSON shape (``/ws/2/release?query=``, ``/ws/2/release/{mbid}``,
``/release/{mbid}/front-500`` redirecting to the image). It listens on several ports, one per
"host" (www.melon.com, cdnimg.melon.co.kr, musicbrainz.org, coverartarchive.org), so per-host
rate limits mean what they mean in production. Every response carries an ETag and honours
``If-None-Match``. Every request is logged server-side with its arrival time, so tests and the
benchmark can prove the crawler's rate.

Options: fixed latency; the charset HTML pages are served in, where it is declared and as what
(``charset``; ``declare``: any of header / meta / http-equiv, or none; ``declared_charset``, to
make a page lie); and faults injected per path, consumed in order (see :data:`FAULTS`).

Several catalogues ("tenants") can share the hosts: tenant ``t`` serves its role ``r`` on host
``(t + r) % hosts``, so with as many tenants as hosts every host carries every role once and
all hosts have the same amount of work (the benchmark's politeness ceiling is reachable).

    with SampleSite(build_catalogue()) as site:
        site.urls["melon"], site.urls["musicbrainz"], ...
"""

from __future__ import annotations

import hashlib
import html
import json
import pickle
import socket
import struct
import subprocess
import sys
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
DECLARE = ("header", "meta", "http-equiv")
FAULTS = {
    "429:<s>, 503:<s>": "that status with Retry-After: <s> (omit ':<s>' for none); also 500, 502",
    "truncate": "the first half of the body, declared as complete",
    "reset": "headers and half the body, then a TCP reset",
    "trickle:<s>": "the body one byte every <s> seconds",
    "trickle_headers:<s>": "the status line and headers one byte every <s> seconds",
    "loop": "302 back to the same URL",
    "body:<text>": "200 with <text> as the body instead of the page",
}


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
    def __init__(self, catalogue: Catalogue | list[Catalogue], *, latency_s: float = 0.0,
                 faults: dict[str, list[str]] | None = None, robots_txt: str = DEFAULT_ROBOTS, hosts: int = 4,
                 charset: str = "utf-8", declare: tuple[str, ...] = ("header", "meta"),
                 declared_charset: str | None = None):
        self.tenants = list(catalogue) if isinstance(catalogue, list | tuple) else [catalogue]
        self.catalogue, self.latency_s, self.robots_txt = self.tenants[0], latency_s, robots_txt
        self.faults = {path: list(seq) for path, seq in (faults or {}).items()}
        self.n_hosts = max(1, hosts if len(self.tenants) > 1 else min(hosts, len(ROLES)))
        if len(self.tenants) > self.n_hosts:
            raise ValueError(f"{len(self.tenants)} tenants need at least as many hosts (hosts={hosts})")
        if set(declare) - set(DECLARE):
            raise ValueError(f"declare={declare!r}: use any of {', '.join(DECLARE)}")
        self.charset, self.declare, self.declared_charset = charset, tuple(declare), declared_charset or charset
        self.hits: list[Hit] = []
        self._lock = threading.Lock()
        self._servers: list[ThreadingHTTPServer] = []
        self._tenant_of: dict[tuple[int, str], int] = {}  # (host index, role) -> tenant
        self.tenant_urls: list[dict[str, str]] = []
        self.urls: dict[str, str] = {}

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> SampleSite:
        for index in range(self.n_hosts):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self, index))
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True, name="sample-site").start()
            self._servers.append(server)
        for tenant in range(len(self.tenants)):
            urls = {}
            for r, role in enumerate(ROLES):
                index = (tenant + r) % self.n_hosts
                self._tenant_of[(index, role)] = tenant
                urls[role] = f"http://127.0.0.1:{self._servers[index].server_address[1]}"
            self.tenant_urls.append(urls)
        self.urls = self.tenant_urls[0]
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
        return max_in_window(self.hits, window_s)

    # -- pages -----------------------------------------------------------------------------
    def tenant(self, index: int, path: str) -> int:
        """Which tenant host ``index`` serves ``path`` for (robots.txt is the same for all)."""
        return self._tenant_of.get((index, _role_of(path)), 0)

    def _html(self, text: str) -> tuple[int, str, bytes, dict]:
        """A page in the site's charset, declared where the options say."""
        label = self.declared_charset
        meta = {"meta": f'<meta charset="{label}">',
                "http-equiv": f'<meta http-equiv="Content-Type" content="text/html; charset={label}">'}
        declared = "".join(meta[d] for d in self.declare if d in meta)
        text = text.replace('<meta charset="utf-8">', declared, 1)
        ctype = f"text/html; charset={label}" if "header" in self.declare else "text/html"
        return 200, ctype, text.encode(self.charset), {}

    def route(self, path: str, query: dict[str, str], tenant: int = 0) -> tuple[int, str, bytes, dict]:
        """(status, content type, body, extra headers) for one GET."""
        cat, cdn = self.tenants[tenant], self.tenant_urls[tenant]["melon_cdn"]
        if path == "/robots.txt":
            return 200, "text/plain; charset=utf-8", self.robots_txt.encode(), {}
        if path in ("/chart/index.htm", "/chart/day/index.htm", "/chart/week/index.htm", "/chart/month/index.htm"):
            return self._html(melon_chart_html(cat.chart))
        if path == "/song/detail.htm":
            song = cat.song_by_melon_id(query.get("songId", ""))
            return self._html(melon_song_html(song, cdn)) if song else _not_found()
        if path == "/album/detail.htm":
            album = cat.album_by_melon_id(query.get("albumId", ""))
            return self._html(melon_album_html(album, cdn)) if album else _not_found()
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


def _role_of(path: str) -> str:
    if path.startswith("/cm2/"):
        return "melon_cdn"
    if path.startswith("/ws/2/"):
        return "musicbrainz"
    if path.startswith(("/release/", "/img/")):
        return "coverart"
    return "melon"


def max_in_window(hits: list[Hit], window_s: float = 1.0) -> dict[str, int]:
    """Per host: the most requests that arrived within any ``window_s`` window."""
    by_host = defaultdict(list)
    for hit in hits:
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


def _json(doc: dict):
    return 200, "application/json; charset=utf-8", json.dumps(doc, ensure_ascii=False).encode("utf-8"), {}


def _image(album: SampleAlbum):
    if album.cover is None:
        return _not_found()
    content_type = "image/jpeg" if album.cover_ext == "jpg" else "image/png"  # a broken cover lies, as CDNs do
    return 200, content_type, album.cover, {}


def _not_found(body: str = "Not Found"):
    return 404, "text/plain; charset=utf-8", body.encode(), {}


def _handler_for(site: SampleSite, index: int):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

        def log_message(self, *args):  # quiet: the site keeps its own log
            pass

        def parse_request(self):  # the request line has just been read: that is its arrival
            self.arrived = time.monotonic()
            return super().parse_request()

        def do_GET(self):  # noqa: N802 (http.server's naming)
            arrived = self.arrived
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            fault = site._next_fault(self.path) or site._next_fault(parts.path)
            if site.latency_s:
                time.sleep(site.latency_s)
            status, ctype, body, headers = site.route(parts.path, query, site.tenant(index, parts.path))
            kind, _, arg = (fault or "").partition(":")
            if kind in ("429", "500", "502", "503"):
                status, ctype, body, headers = int(kind), "text/plain", f"fault {kind}".encode(), {}
                if arg:
                    headers["Retry-After"] = arg
            elif kind == "loop":
                status, ctype, body, headers = 302, "text/plain", b"", {"Location": self.path}
            elif kind == "body":
                status, body = 200, arg.encode("utf-8")
            elif kind == "truncate":  # a complete response of half a page
                body = body[: len(body) // 2]
            etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
            if status == 200 and self.headers.get("If-None-Match") == etag:
                status, body = 304, b""
            host = f"{self.server.server_address[0]}:{self.server.server_address[1]}"
            site._log(Hit(host, arrived, self.path, status, self.headers.get("User-Agent", "")))
            head = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}", f"Content-Type: {ctype}",
                    f"Content-Length: {len(body)}"]
            if status in (200, 304):
                head += [f"ETag: {etag}", "Cache-Control: max-age=0, must-revalidate"]
            head += [f"{name}: {value}" for name, value in headers.items()]
            head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
            try:
                self._send(kind, arg, head_bytes, body)
            except OSError:  # the client gave up (a deadline): nothing to do
                self.close_connection = True

        def _send(self, kind: str, arg: str, head: bytes, body: bytes) -> None:
            if kind == "trickle_headers":
                self._trickle(head, float(arg))
                self.wfile.write(body)
            elif kind == "trickle":
                self.wfile.write(head)
                self._trickle(body, float(arg))
            elif kind == "reset":  # half the body, then SO_LINGER 0: close sends RST, not FIN
                self.wfile.write(head + body[: len(body) // 2])
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
            else:
                self.wfile.write(head + body)

        def _trickle(self, data: bytes, every_s: float) -> None:
            for i in range(len(data)):
                self.wfile.write(data[i: i + 1])
                time.sleep(every_s)

    return Handler


def serve_stdio() -> None:
    """Child side of :class:`SampleSiteProcess`: (catalogues, options) in on stdin, the tenants'
    URLs out; serve until stdin says stop (or closes), then send the request log."""
    catalogues, options = pickle.load(sys.stdin.buffer)
    site = SampleSite(catalogues, **options).start()
    pickle.dump(site.tenant_urls, sys.stdout.buffer)
    sys.stdout.buffer.flush()
    sys.stdin.buffer.readline()
    site.stop()
    pickle.dump(site.hits, sys.stdout.buffer)
    sys.stdout.buffer.flush()


class SampleSiteProcess:
    """A :class:`SampleSite` in its own process, so that the server's work does not share the
    crawler's interpreter lock (a benchmark measures the crawler, not the server). ``hits`` is
    filled when it stops; arrival times use the system-wide monotonic clock."""

    def __init__(self, catalogue: Catalogue | list[Catalogue], **options):
        self.catalogues, self.options = catalogue, options
        self.hits: list[Hit] = []
        self.tenant_urls: list[dict[str, str]] = []
        self.urls: dict[str, str] = {}

    def __enter__(self) -> SampleSiteProcess:
        self._process = subprocess.Popen(
            [sys.executable, "-c", "from crawlers.sample_site import serve_stdio; serve_stdio()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        pickle.dump((self.catalogues, self.options), self._process.stdin)
        self._process.stdin.flush()
        self.tenant_urls = pickle.load(self._process.stdout)
        self.urls = self.tenant_urls[0]
        return self

    def __exit__(self, *exc) -> None:
        self._process.stdin.write(b"stop\n")
        self._process.stdin.flush()
        self.hits = pickle.load(self._process.stdout)
        self._process.stdin.close()
        self._process.wait(timeout=30)

    def max_rate(self, window_s: float = 1.0) -> dict[str, int]:
        return max_in_window(self.hits, window_s)


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
        "release-group": {"id": "rg-" + album.release_id[3:], "primary-type": "Album",
                          "first-release-date": album.release_date.isoformat()},
        "genres": [{"name": album.genre, "count": 3}, {"name": "seoul", "count": 1}],
        "cover-art-archive": {"front": album.cover is not None, "count": 1 if album.cover else 0},
        "media": [{"position": 1, "format": "Digital Media", "track-count": len(album.songs), "tracks": [
            {"id": f"t-{s.recording_id}", "position": s.track_no, "number": str(s.track_no), "title": s.title,
             "recording": {"id": s.recording_id, "title": s.title, "artist-credit": credit}}
            for s in album.songs]}],
    }
