"""A personalisation request's photos: validate, normalise, strip metadata, store per user.

Photos are personal data. Nothing here logs their bytes, names or EXIF; errors name the photo
by its position ("photo 3") and the problem. Before anything is stored or trained on, each
photo is rotated upright from its EXIF orientation and re-encoded from pixels only, so EXIF
(GPS, camera serials, timestamps), ICC/XMP and text chunks are all dropped. Normalised photos
live under ``users/<user_id>/photos/<sha256>.png``, the one prefix ``forget_user`` removes.
A request names its uploads by URI, and only the user's own upload area
(``users/<user_id>/uploads/`` of the store) is read: :func:`upload_keys`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

from sleeve.ids import sha256_bytes
from sleeve.images import open_image
from sleeve.keys import uploads_prefix, user_prefix
from sleeve.store import ObjectStore, StoreError, check_key

MIN_PHOTOS, MAX_PHOTOS = 3, 20


class PhotoError(ValueError):
    """The request's photos are not usable; ``problems`` lists each one in words."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class PhotoLimits:
    min_photos: int = MIN_PHOTOS
    max_photos: int = MAX_PHOTOS
    min_side: int = 256  # px: smaller photos carry too little of a face to learn from
    max_side: int = 1024  # px: normalised photos are downscaled to this (training crops anyway)
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard, checked before decoding


@dataclass(frozen=True)
class Photo:
    """One normalised photo: upright RGB PNG bytes with no metadata."""

    png: bytes
    sha256: str
    width: int
    height: int


def normalise(data: bytes, limits: PhotoLimits = PhotoLimits()) -> Photo:
    """Decode one upload (bounded, see :func:`sleeve.images.open_image`), honour EXIF
    orientation, and re-encode pixels only as PNG. Raises ValueError with the problem (not the
    content)."""
    upright = open_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    if min(upright.size) < limits.min_side:
        raise ValueError(f"is {upright.width}x{upright.height}; the short side must be at least {limits.min_side} px")
    # A fresh image from the pixels alone: no EXIF/ICC/XMP/text survives the copy.
    clean = Image.new("RGB", upright.size)
    clean.paste(upright.convert("RGB"))
    clean.thumbnail((limits.max_side, limits.max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    clean.save(out, format="PNG", optimize=False)
    png = out.getvalue()
    return Photo(png=png, sha256=sha256_bytes(png), width=clean.width, height=clean.height)


def validate_photos(uploads: list[bytes | None], limits: PhotoLimits = PhotoLimits()) -> list[Photo]:
    """Normalise every upload and check the set; raises PhotoError listing ALL problems at once
    (a user fixes them in one go). ``None`` stands for a photo that could not be read."""
    problems = []
    n = len(uploads)
    if n < limits.min_photos:
        problems.append(f"{n} photo(s) given; at least {limits.min_photos} are needed")
    if n > limits.max_photos:
        problems.append(f"{n} photos given; at most {limits.max_photos} are allowed")
    photos: list[Photo] = []
    seen_raw: dict[str, int] = {}
    seen_pixels: dict[str, int] = {}
    for i, data in enumerate(uploads, start=1):
        if data is None:
            problems.append(f"photo {i} could not be read from the store")
            continue
        raw = sha256_bytes(data)
        if raw in seen_raw:
            problems.append(f"photo {i} is an exact duplicate of photo {seen_raw[raw]}")
            continue
        seen_raw[raw] = i
        try:
            photo = normalise(data, limits)
        except ValueError as exc:
            problems.append(f"photo {i} {exc}")
            continue
        if photo.sha256 in seen_pixels:  # same pixels, different metadata or container
            problems.append(f"photo {i} is an exact duplicate of photo {seen_pixels[photo.sha256]}")
            continue
        seen_pixels[photo.sha256] = i
        photos.append(photo)
    if problems:
        raise PhotoError(problems)
    return photos


def upload_keys(store: ObjectStore, user_id: str, uris: list[str]) -> list[str]:
    """The store keys of a user's uploads. Only URIs under ``<store>/users/<user_id>/uploads/``
    are accepted: not a path on the worker, another user's files, another bucket or a ``..``
    detour. Raises PhotoError naming every other one by position, before anything is read."""
    root, prefix = store.url.rstrip("/") + "/", uploads_prefix(user_id)
    keys, problems = [], []
    for i, uri in enumerate(uris, start=1):
        key = uri[len(root):] if isinstance(uri, str) and uri.startswith(root) else ""
        try:
            ok = key.startswith(prefix) and check_key(key) == key
        except StoreError:
            ok = False
        if not ok:
            problems.append(f"photo {i} is not an upload of this user: photo URIs must lie under "
                            f"{root}{prefix}")
        keys.append(key)
    if problems:
        raise PhotoError(problems)
    return keys


def read_uploads(store: ObjectStore, user_id: str, uris: list[str]) -> list[bytes | None]:
    """The user's uploads (see :func:`upload_keys`); None for one that cannot be read."""
    out: list[bytes | None] = []
    for key in upload_keys(store, user_id, uris):
        try:
            out.append(store.get_bytes(key))
        except (StoreError, OSError):
            out.append(None)
    return out


def store_photos(store: ObjectStore, user_id: str, photos: list[Photo]) -> list[str]:
    """Write normalised photos under the user's prefix (content-addressed, immutable)."""
    uris = []
    for photo in photos:
        key = check_key(f"{user_prefix(user_id)}photos/{photo.sha256}.png")
        store.put_bytes(key, photo.png, content_type="image/png", create_only=True)
        uris.append(store.uri(key))
    return uris


def synthetic_photos(n: int, seed: int = 0, size: int = 320) -> list[bytes]:
    """``n`` distinct procedurally drawn "photos" of one synthetic face (same identity from
    ``seed``, different pose/light per photo) as JPEG bytes: demo and test data, no real person."""
    import random

    rng = random.Random(seed)
    skin = tuple(rng.randint(150, 235) for _ in range(3))
    hair = tuple(rng.randint(10, 90) for _ in range(3))
    eye = tuple(rng.randint(20, 120) for _ in range(3))
    face_w, face_h = rng.uniform(0.38, 0.46), rng.uniform(0.5, 0.6)
    out = []
    for i in range(n):
        r = random.Random(f"{seed}:{i}")
        bg = tuple(r.randint(40, 220) for _ in range(3))
        img = Image.new("RGB", (size, size), bg)
        d = ImageDraw.Draw(img)
        cx, cy = size * r.uniform(0.42, 0.58), size * r.uniform(0.45, 0.58)
        w, h = size * face_w * r.uniform(0.85, 1.1), size * face_h * r.uniform(0.85, 1.1)
        d.ellipse((cx - w / 2 - 8, cy - h / 2 - 14, cx + w / 2 + 8, cy + h / 4), fill=hair)
        d.ellipse((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), fill=skin)
        for side in (-1, 1):
            ex, ey = cx + side * w * 0.2, cy - h * 0.08
            d.ellipse((ex - w * 0.07, ey - h * 0.04, ex + w * 0.07, ey + h * 0.04), fill="white")
            d.ellipse((ex - w * 0.03, ey - h * 0.03, ex + w * 0.03, ey + h * 0.03), fill=eye)
        smile = r.uniform(0.05, 0.12)
        d.arc((cx - w * 0.18, cy + h * 0.1, cx + w * 0.18, cy + h * (0.2 + smile)), 10, 170, fill=(120, 40, 40), width=3)
        img = img.filter(ImageFilter.GaussianBlur(r.uniform(0, 1.2)))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out
