"""Pure parsers: page text in, validated records out. No network, no clock, no warehouse.

Melon markup (chart rows ``tr.lst50``/``tr.lst100``, song page ``dl.list`` + ``#d_video_summary``)
and MusicBrainz ``/ws/2`` JSON. Anything unusable raises :class:`ParseError` with a short
machine-readable ``reason`` (for the quarantine table) and a human-readable detail.
HTML goes straight to lxml with XPath queries compiled at import (bs4 on top was 8x slower),
with libxml2's size limits lifted (``huge_tree``: pages up to the HTTP layer's cap parse
completely); a limit it still hits is an error, never a silently shortened page. JSON is
checked for its shape where it enters: a value of the wrong type names its path.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from numbers import Real

from lxml import etree

MAX_TITLE = 500
MAX_LYRICS = 20_000
# What Melon shows instead of lyrics: these mean "no lyrics", not lyrics.
NO_LYRICS = ("가사 준비중", "가사 준비 중", "등록된 가사가 없습니다", "가사가 없습니다", "no lyrics",
             "lyrics not available", "lyrics are not available")
_ID_CALL = re.compile(r"\(\s*'?(\d+)'?")
_RESIZE = re.compile(r"(\.(?:jpe?g|png|webp|gif))(?:/melon/.*|\?.*)$", re.I)
_WS = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")
_DATE = re.compile(r"^\s*(\d{4})(?:[.\-/](\d{1,2}))?(?:[.\-/](\d{1,2}))?\s*$")
_HTML_END = re.compile("</html>", re.I)


class ParseError(ValueError):
    """A page or record that cannot be used. ``reason``: malformed_page | missing_field | bad_value |
    bad_encoding | parser_limit."""

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
        for name, value in (("title", title), ("artist", artist), ("album", self.album), ("genre", self.genre),
                            ("lyrics", lyrics)):
            if value and "\ufffd" in value:  # text some decode already damaged: storing it keeps the damage
                raise ParseError("bad_encoding", f"{name} of {self.source}:{self.source_id} contains U+FFFD "
                                                 "(replacement characters from a wrong decode)")
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
    return _WS.sub(" ", text or "").strip()


def clean_lyrics(text: str) -> str:
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n")]
    text = "\n".join(lines).strip()
    text = _BLANK_LINES.sub("\n\n", text)
    if not text or any(text.lower().startswith(p) for p in NO_LYRICS):
        return ""
    return text


def parse_date(text: str | None) -> date | None:
    """'2023.05.01', '2023-05-01', '2023-05' and '2023' (first day of the period); else None."""
    match = _DATE.match(text or "")
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


def _class(name: str) -> str:
    """XPath test for one class among an element's classes (what CSS ``.name`` means)."""
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


def _xpath(expr: str) -> etree.XPath:
    return etree.XPath(expr, smart_strings=False)


# Compiled once. Scoped queries start with '.', so they look below the given element; like CSS,
# an ancestor test (ancestor::span) may match above it.
_CHART_ROWS = _xpath(f"//tr[{_class('lst50')} or {_class('lst100')}]")
_RANK = _xpath(f".//span[{_class('rank')}]")
_RANK_TITLE, _RANK_ARTIST, _RANK_ALBUM = (_xpath(f".//div[{_class('ellipsis')} and {_class(c)}]")
                                          for c in ("rank01", "rank02", "rank03"))
_CHECK_ELLIPSIS_LINKS = _xpath(f".//a[ancestor::span[{_class('checkEllipsis')}]]")
_LINKS = _xpath(".//a")
_SONG_NAME = _xpath(f"//div[{_class('song_name')}]")
_NAME_LABELS = _xpath(f".//strong | .//span[{_class('none')}]")  # the hidden '곡명'/'앨범명' label
_ARTIST_LINKS = _xpath(f"//div[{_class('artist')}]//a[{_class('artist_name')}]")
_ARTIST_DIVS = _xpath(f"//div[{_class('artist')}]")
_META_TERMS = _xpath(f"//dl[{_class('list')}]//dt")
_THUMB = _xpath(f"//div[{_class('thumb')}]//img")
_ALBUM_THUMB = _xpath(f"//a[{_class('image_typeAll')}]//img")
_OG_IMAGE = _xpath("//meta[@property='og:image']")
_LYRICS = _xpath("//div[@id='d_video_summary']")
_LYRIC_PARTS = _xpath(".//text() | .//br")  # document order
# Page text as a reader sees it: no comments, nothing inside script/style/template or ruby annotations.
_HIDDEN = ("script", "style", "template", "rt", "rp")
_VISIBLE_TEXT = _xpath(".//text()[not(ancestor::*[" + " or ".join(f"self::{t}" for t in _HIDDEN) + "])]")
_parsers = threading.local()


def _parser(name: str, **options) -> etree.HTMLParser:
    """This thread's parser (lxml parsers are best not shared between the crawler's threads)."""
    parser = getattr(_parsers, name, None)
    if parser is None:
        parser = etree.HTMLParser(huge_tree=True, **options)
        setattr(_parsers, name, parser)
    return parser


def _page(html: str, what: str) -> etree._Element:
    """Parsed page, or ParseError when it is truncated (a short page is not a complete one) or
    when the parser stopped early at one of its limits (it would return the part it read)."""
    if "</html>" not in html and not _HTML_END.search(html):  # `in` first: the common case is cheap
        raise ParseError("malformed_page", f"{what} is truncated (no closing </html>)")
    if "\x00" in html:  # libxml2 turns NUL into U+FFFD
        raise ParseError("bad_encoding", f"{what} contains NUL characters")
    parser = _parser("html")
    try:
        root = etree.HTML(html, parser)
    except ValueError:  # a str with an <?xml encoding=...?> declaration: let libxml2 read bytes
        parser = _parser("html_bytes", encoding="utf-8")
        root = etree.HTML(html.encode("utf-8"), parser)
    fatal = next((e for e in parser.error_log if e.level == etree.ErrorLevels.FATAL), None)
    if fatal is not None:
        raise ParseError("parser_limit", f"{what} stops parsing at line {fatal.line}: {fatal.message.strip()}")
    return root if root is not None else etree.Element("html")


def _first(query: etree.XPath, node: etree._Element) -> etree._Element | None:
    found = query(node)
    return found[0] if found else None


def _text(node: etree._Element) -> str:
    """The node's visible text (see ``_VISIBLE_TEXT``); the XPath only runs when a hidden tag is near."""
    if next(node.iterancestors(*_HIDDEN), None) is None and next(node.iterdescendants(*_HIDDEN), None) is None:
        return "".join(node.itertext())  # the usual case; itertext() skips comments
    return "".join(_VISIBLE_TEXT(node))


def _drop(node: etree._Element) -> None:
    """Remove an element but keep the text that follows it (lxml stores that on the element)."""
    parent = node.getparent()
    if parent is None:
        return
    if node.tail:
        previous = node.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + node.tail
        else:
            parent.text = (parent.text or "") + node.tail
    parent.remove(node)


def _title_node(root: etree._Element) -> etree._Element | None:
    """The first ``div.song_name`` without its hidden label."""
    name = _first(_SONG_NAME, root)
    if name is not None:
        for label in _NAME_LABELS(name):
            _drop(label)
    return name


def _js_id(href: str | None) -> str | None:
    match = _ID_CALL.search(href or "")
    return match.group(1) if match else None


def _link_id(node: etree._Element | None) -> str | None:
    """The id in the first link's ``javascript:...goAlbumDetail('id')`` href."""
    link = _first(_LINKS, node) if node is not None else None
    return _js_id(link.get("href")) if link is not None else None


def parse_melon_chart(html: str) -> list[ChartEntry]:
    """Rows of a Melon chart page. A page without its closing tag is truncated, not short."""
    rows = _CHART_ROWS(_page(html, "chart page"))
    if not rows:
        raise ParseError("malformed_page", "chart page has no tr.lst50/tr.lst100 rows")
    entries = []
    for position, row in enumerate(rows, start=1):
        rank = _first(_RANK, row)
        rank_text = _clean(_text(rank)) if rank is not None else ""
        title, artist, album = _first(_RANK_TITLE, row), _first(_RANK_ARTIST, row), _first(_RANK_ALBUM, row)
        artist_links = (_CHECK_ELLIPSIS_LINKS(artist) or _LINKS(artist)) if artist is not None else []
        entries.append(ChartEntry(
            rank=int(rank_text) if rank_text.isdigit() else position,
            song_id=(row.get("data-song-no") or "").strip(),
            title=_clean(_text(title)) if title is not None else "",
            artist=", ".join(dict.fromkeys(_clean(_text(a)) for a in artist_links)),
            album=_clean(_text(album)) if album is not None else "",
            album_id=_link_id(album),
        ))
    return entries


def _dl_pairs(root: etree._Element) -> dict[str, etree._Element]:
    """Melon's ``dl.list``: each ``dt`` label (앨범, 발매일, 장르, …) paired with its ``dd``."""
    pairs = {}
    for dt in _META_TERMS(root):
        dd = next(dt.itersiblings("dd"), None)
        if dd is not None:
            pairs.setdefault(_clean(_text(dt)), dd)
    return pairs


def _meta_text(meta: dict[str, etree._Element], label: str) -> str | None:
    return _text(meta[label]) if label in meta else None


def _og_image(root: etree._Element) -> str | None:
    meta = _first(_OG_IMAGE, root)
    return meta.get("content") if meta is not None else None


def _thumb_src(root: etree._Element) -> str | None:
    thumb = _first(_THUMB, root)
    if thumb is None:
        thumb = _first(_ALBUM_THUMB, root)
    return thumb.get("src") if thumb is not None else None


def _lyrics_text(node: etree._Element | None) -> str:
    """Text with ``<br>`` as the only line break: source newlines are HTML whitespace."""
    if node is None:
        return ""
    return "".join(_WS.sub(" ", part) if isinstance(part, str) else "\n" for part in _LYRIC_PARTS(node))


def parse_melon_song(html: str, song_id: str, source_url: str | None = None, source: str = "melon") -> SongRecord:
    """A Melon song page (song/detail.htm?songId=) -> validated SongRecord."""
    root = _page(html, f"song page {song_id}")
    name = _title_node(root)
    if name is None:
        raise ParseError("missing_field", f"song page {song_id} has no div.song_name (title)")
    artist_nodes = _ARTIST_LINKS(root) or _ARTIST_DIVS(root)
    meta = _dl_pairs(root)
    album_dd = meta.get("앨범")
    return SongRecord(
        source=source,
        source_id=str(song_id),
        title=_text(name),
        artist=", ".join(dict.fromkeys(_clean(_text(a)) for a in artist_nodes)),
        album=_meta_text(meta, "앨범"),
        album_id=_link_id(album_dd),
        release_date=parse_date(_meta_text(meta, "발매일")),
        genre=_meta_text(meta, "장르"),
        lyrics=_lyrics_text(_first(_LYRICS, root)),
        source_url=source_url,
        cover_url=melon_cover_url(_og_image(root) or _thumb_src(root)),
    ).validated()


def parse_melon_album(html: str, album_id: str) -> dict:
    """A Melon album page -> {album_id, title, release_date, genre, cover_url}."""
    root = _page(html, f"album page {album_id}")
    meta, thumb = _dl_pairs(root), _thumb_src(root)
    name = _title_node(root)
    return {
        "album_id": str(album_id),
        "title": _clean(_text(name)) if name is not None else None,
        "release_date": parse_date(_meta_text(meta, "발매일")),
        "genre": _clean(_meta_text(meta, "장르")) if "장르" in meta else None,
        "cover_url": melon_cover_url(thumb or _og_image(root)),
    }


def _load_json(text: str | bytes, what: str) -> dict:
    try:
        doc = json.loads(text)
    except UnicodeDecodeError as exc:
        raise ParseError("bad_encoding", f"{what} is not UTF-8 (bytes {exc.start}-{exc.end})") from None
    except ValueError as exc:
        raise ParseError("malformed_page", f"{what} is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    if not isinstance(doc, dict):
        raise ParseError("malformed_page", f"{what} is not a JSON object")
    return doc


_KINDS = {str: "a string", list: "a list", dict: "an object", Real: "a number", bool: "true or false"}


def _get(obj: dict, key: str, kind: type, where: str, path: str = "", *, required: bool = False):
    """``obj[key]`` when it has the JSON type ``kind``; None when absent (or null) and optional;
    otherwise ParseError naming ``where`` and the path (``genres[0].count``). JSON's true/false
    are not numbers."""
    value, name = obj.get(key), f"{path}.{key}" if path else key
    if value is None:
        if required:
            raise ParseError("missing_field", f"{where}: {name} is missing" + (" (null)" if key in obj else ""))
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ParseError("bad_value", f"{where}: {name} is a {type(value).__name__}, not {_KINDS[kind]}")
    return value


def _objects(items: list, name: str, where: str) -> list[dict]:
    """``items`` when every one is a JSON object; else ParseError naming the first that is not."""
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ParseError("bad_value", f"{where}: {name}[{i}] is a {type(item).__name__}, not an object")
    return items


def parse_mb_release_search(text: str | bytes) -> tuple[list[dict], int]:
    """/ws/2/release?query=...&fmt=json -> ([{id, title, date}], total count)."""
    where = "release search"
    doc = _load_json(text, where)
    releases = []
    for i, r in enumerate(_objects(_get(doc, "releases", list, where, required=True), "releases", where)):
        path = f"releases[{i}]"
        releases.append({"id": _get(r, "id", str, where, path), "title": _get(r, "title", str, where, path),
                         "date": parse_date(_get(r, "date", str, where, path))})
    count = _get(doc, "count", Real, where)
    return [r for r in releases if r["id"]], int(count) if count is not None else len(releases)


@dataclass(frozen=True)
class MbRelease:
    """A release lookup: one record per good track, (track id, error) for each bad one, and
    whether the Cover Art Archive has a front image (None: the release does not say)."""

    records: list[SongRecord]
    bad: list[tuple[str, ParseError]]
    front_cover: bool | None


def _artist_credit(credits: list | None, where: str) -> str:
    names = []
    for i, c in enumerate(_objects(credits or [], "artist-credit", where)):
        path = f"artist-credit[{i}]"
        artist = _get(c, "artist", dict, where, path) or {}
        names.append(f"{_get(c, 'name', str, where, path) or _get(artist, 'name', str, where, path + '.artist') or ''}"
                     f"{_get(c, 'joinphrase', str, where, path) or ''}")
    return "".join(names).strip()


def _genre(doc: dict, where: str) -> str | None:
    """The most-voted genre (or tag); ties by name."""
    votes = []
    for key in ("genres", "tags"):
        for i, g in enumerate(_objects(_get(doc, key, list, where) or [], key, where)):
            path = f"{key}[{i}]"
            name = _get(g, "name", str, where, path)
            if not name:
                raise ParseError("bad_value", f"{where}: {path} has no name")
            votes.append((-(_get(g, "count", Real, where, path) or 0), name))
        if votes:
            break
    return min(votes)[1] if votes else None


def parse_mb_release(text: str | bytes, source_url_for=None, source: str = "musicbrainz") -> MbRelease:
    """/ws/2/release/{mbid}?inc=recordings+artist-credits+genres+release-groups -> MbRelease.
    A bad track does not sink its release; a release-level field of the wrong shape does.

    MusicBrainz has no lyrics; the genre is the release's most-voted genre (or tag); a release
    without a date takes its release group's first release date."""
    doc = _load_json(text, "release lookup")
    mbid = _get(doc, "id", str, "release lookup")
    if not mbid:
        raise ParseError("missing_field", "release lookup has no id")
    where = f"release {mbid}"
    media = _objects(_get(doc, "media", list, where) or [], "media", where)
    if "media" not in doc:
        raise ParseError("missing_field", f"{where} has no media (was inc=recordings sent?)")
    # Once per release, not per track: genre, artist, album, date, cover flag.
    genre, release_artist = _genre(doc, where), _artist_credit(_get(doc, "artist-credit", list, where), where)
    album = _get(doc, "title", str, where)
    group = _get(doc, "release-group", dict, where) or {}
    release_date = parse_date(_get(doc, "date", str, where)) or \
        parse_date(_get(group, "first-release-date", str, where, "release-group"))
    archive = _get(doc, "cover-art-archive", dict, where)
    front = _get(archive, "front", bool, where, "cover-art-archive") if archive is not None else None
    records, bad = [], []
    for m, medium in enumerate(media, start=1):
        tracks = _get(medium, "tracks", list, where, f"media[{m - 1}]") or []
        for t, track in enumerate(tracks, start=1):
            key = f"{mbid}#{m}.{t}"
            try:
                if not isinstance(track, dict):
                    raise ParseError("bad_value", f"{where}: track {t} of medium {m} is a "
                                                  f"{type(track).__name__}, not an object")
                at = f"{where}: track {t} of medium {m}"
                recording = _get(track, "recording", dict, at) or {}
                rid = _get(recording, "id", str, at, "recording") or _get(track, "id", str, at)
                key = rid or key
                credit = _get(track, "artist-credit", list, at) or \
                    _get(recording, "artist-credit", list, at, "recording")
                records.append(SongRecord(
                    source=source,
                    source_id=rid or "",
                    title=_get(track, "title", str, at) or _get(recording, "title", str, at, "recording") or "",
                    artist=_artist_credit(credit, at) or release_artist,
                    album=album,
                    album_id=mbid,
                    release_date=release_date,
                    genre=genre,
                    source_url=source_url_for(rid) if source_url_for and rid else None,
                    extra={"position": track.get("position")},
                ).validated())
            except ParseError as exc:
                bad.append((key, exc))
    if not records and not bad:
        raise ParseError("missing_field", f"{where} has no tracks")
    return MbRelease(records, bad, front)
