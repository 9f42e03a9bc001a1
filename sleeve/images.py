"""Decoding untrusted image bytes within bounds: the one guard uploads go through.

The pixel count is read from the header before any pixel is decoded, so a decompression bomb
(a small file that claims 50,000 x 50,000 pixels) is refused without allocating it; truncated
or garbage bytes fail with the decoder's error class only (never the bytes). Messages read as
the predicate of a sentence ("photo 3 " + message), so callers can name the upload.
"""

from __future__ import annotations

import io


class ImageDecodeError(ValueError):
    """The bytes are not an image Sleeve will decode; the message says why."""


def open_image(data: bytes, *, max_bytes: int, max_pixels: int, upright: bool = True):
    """The decoded PIL image (first frame), rotated upright from its EXIF orientation unless
    ``upright`` is False. Raises :class:`ImageDecodeError`."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageDecodeError("is empty")
    if len(data) > max_bytes:
        raise ImageDecodeError(f"is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:.0f} MiB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:
                raise ImageDecodeError(f"has {img.width}x{img.height} pixels; the limit is {max_pixels:,}")
            img.load()
            return ImageOps.exif_transpose(img) if upright else img.copy()
    except Image.DecompressionBombError:  # Pillow's own guard, at twice its warning size
        raise ImageDecodeError(f"claims more pixels than can be decoded safely (the limit is {max_pixels:,})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageDecodeError):
            raise
        raise ImageDecodeError(f"is not a readable image ({type(exc).__name__})") from None
