"""Cover images: validate (decodable, size bounds, byte cap), store content-addressed, hash.

Objects live at ``covers/<sha[:2]>/<sha>.<ext>`` and are written create-only, so the same
image crawled twice (two songs of one album, a re-run) is stored once and never rewritten.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import imagehash  # noqa: F401  imported now, not inside the first crawl thread that hashes a cover
import scipy.fftpack  # noqa: F401  imagehash.phash imports it on first use, stalling every crawl thread for ~1 s
from PIL import Image, ImageOps  # noqa: F401  ImageOps: sleeve.phash applies EXIF orientation with it

from sleeve.ids import sha256_bytes
from sleeve.phash import phash_hex

Image.init()  # load every format plugin now, not inside the first crawl thread that opens a cover

FORMATS = {"JPEG": ("jpg", "image/jpeg"), "PNG": ("png", "image/png"), "WEBP": ("webp", "image/webp"),
           "GIF": ("gif", "image/gif")}


class CoverError(ValueError):
    """Bytes that are not a usable cover. ``reason``: not_image | cover_too_large | cover_too_small."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class CoverLimits:
    max_bytes: int = 10 * 1024 * 1024
    min_side: int = 64
    max_side: int = 6000
    max_aspect: float = 3.0


@dataclass(frozen=True)
class Cover:
    sha256: str
    width: int
    height: int
    format: str
    ext: str
    content_type: str
    size_bytes: int
    phash: str

    @property
    def key(self) -> str:
        return f"covers/{self.sha256[:2]}/{self.sha256}.{self.ext}"


def validate_cover(data: bytes, limits: CoverLimits = CoverLimits()) -> Cover:
    """Check the bytes are one decodable image within the limits; CoverError otherwise.
    Dimensions are read from the header before decoding, so a decompression bomb is refused
    without allocating its pixels."""
    if len(data) > limits.max_bytes:
        raise CoverError("cover_too_large", f"{len(data)} bytes > {limits.max_bytes}")
    if not data:
        raise CoverError("not_image", "empty body")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt, (width, height) = probe.format, probe.size
                if fmt not in FORMATS:
                    raise CoverError("not_image", f"unsupported image format {fmt}")
                if max(width, height) > limits.max_side:
                    raise CoverError("cover_too_large", f"{width}x{height} exceeds {limits.max_side}px")
                if min(width, height) < limits.min_side:
                    raise CoverError("cover_too_small", f"{width}x{height} is below {limits.min_side}px")
                if max(width, height) / min(width, height) > limits.max_aspect:
                    raise CoverError("bad_aspect", f"{width}x{height} is not cover-shaped")
                probe.load()  # full decode: truncated files fail here
                phash = phash_hex(probe)  # the snapshot's hash: EXIF orientation applied
    except CoverError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise CoverError("cover_too_large", str(exc)) from None
    except Exception as exc:  # PIL raises many types for garbage: all mean "not an image"
        raise CoverError("not_image", f"cannot decode image ({type(exc).__name__})") from None
    ext, content_type = FORMATS[fmt]
    return Cover(sha256_bytes(data), width, height, fmt, ext, content_type, len(data), phash)


def store_cover(store, data: bytes, cover: Cover) -> tuple[str, bool]:
    """Put the bytes at their content address; returns (uri, written_now)."""
    written = store.put_bytes(cover.key, data, content_type=cover.content_type, create_only=True)
    return store.uri(cover.key), written
