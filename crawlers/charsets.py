"""Page bytes -> text, by the charset the page declares, or detected when it declares none.

Order, as browsers do it: a byte-order mark, the ``Content-Type`` header, a ``<meta charset>``
or ``<meta http-equiv="Content-Type">`` near the top, then detection (strict UTF-8 first, then
charset_normalizer). The first usable declaration decides; an unknown label is skipped. Decoding
is strict: bytes that are not valid in the chosen charset raise :class:`ParseError`
(``bad_encoding``) with where the charset came from, so no page is ever stored with U+FFFD
from a decode.
"""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

from crawlers.parsers import ParseError

META_SCAN = 8192  # bytes searched for a <meta> declaration (HTML asks for 1024; pages run longer)
BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
# Labels that mean a superset on the web (WHATWG Encoding): EUC-KR pages use cp949's extra syllables.
SUPERSETS = {"euc_kr": "cp949", "gb2312": "gb18030", "gbk": "gb18030", "shift_jis": "cp932",
             "iso8859-1": "cp1252", "ascii": "cp1252"}
_HEADER_CHARSET = re.compile(r"charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?\s*([\w.:-]+)", re.I)


def codec_for(label: str | None) -> str | None:
    """Python codec for a charset label, or None when the label is unknown."""
    try:
        name = codecs.lookup(label.strip()).name if label else None
    except LookupError:
        return None
    return SUPERSETS.get(name, name)


def _declared(body: bytes, content_type: str | None) -> tuple[str, str] | None:
    """(codec, where) of the first usable declaration."""
    for mark, codec in BOMS:
        if body.startswith(mark):
            return codec, "byte-order mark"
    match = _HEADER_CHARSET.search(content_type or "")
    if match and codec_for(match.group(1)):
        return codec_for(match.group(1)), "Content-Type header"
    for match in _META_CHARSET.finditer(body[:META_SCAN]):
        if codec_for(match.group(1).decode("ascii", "ignore")):
            return codec_for(match.group(1).decode("ascii")), "<meta>"
    return None


def _detected(body: bytes) -> tuple[str, str] | None:
    try:
        body.decode("utf-8")
        return "utf-8", "detected"
    except UnicodeDecodeError:
        pass
    best = from_bytes(body).best()
    return (codec_for(best.encoding) or best.encoding, "detected") if best else None


def decode_html(body: bytes, content_type: str | None = None, what: str = "page") -> str:
    """The page's text; ParseError ``bad_encoding`` when it cannot be decoded without damage."""
    found = _declared(body, content_type) or _detected(body)
    if found is None:
        raise ParseError("bad_encoding", f"{what}: no charset declared and none detected")
    codec, where = found
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        if exc.end == len(body) and "end of data" in exc.reason:  # cut off inside a character
            raise ParseError("malformed_page", f"{what} is truncated (ends inside a {codec} character)") from None
        raise ParseError("bad_encoding", f"{what}: bytes {exc.start}-{exc.end} are not valid {codec} "
                                         f"({where})") from None
    text = text.removeprefix("\ufeff")
    if "\x00" in text:  # UTF-16 read as a single-byte charset, or binary: the parser would make U+FFFD
        raise ParseError("bad_encoding", f"{what}: decoded as {codec} ({where}) it contains NUL characters")
    return text
