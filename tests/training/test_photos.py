"""Photo validation: counts, unreadable/tiny/oversized/duplicate files, EXIF orientation and
metadata stripping, per-user storage."""

import io

import pytest
from PIL import ExifTags, Image

from sleeve.keys import user_prefix
from training.photos import (
    PhotoError,
    PhotoLimits,
    read_uploads,
    store_photos,
    synthetic_photos,
    validate_photos,
)


def _jpeg_with_exif(width=400, height=300, orientation=6) -> bytes:
    """A landscape JPEG whose EXIF says 'rotate 90° CW to view' and carries a GPS position."""
    img = Image.new("RGB", (width, height), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, width // 2, height))  # left half blue: shows the rotation
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.Make] = "SecretCam"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (37.0, 33.0, 59.0)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_synthetic_photos_are_valid_distinct_and_deterministic():
    photos = synthetic_photos(4, seed=7)
    assert photos == synthetic_photos(4, seed=7)
    assert len(set(photos)) == 4
    assert photos != synthetic_photos(4, seed=8)
    assert len(validate_photos(photos)) == 4


def test_exif_orientation_is_applied_and_all_metadata_stripped():
    raw = _jpeg_with_exif()
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the input has GPS
    photo = validate_photos([raw] + synthetic_photos(2))[0]
    img = Image.open(io.BytesIO(photo.png))
    assert (img.width, img.height) == (300, 400)  # portrait after honouring orientation 6
    # Orientation 6 turns the blue left half into the top half.
    assert img.getpixel((150, 20))[2] > 150 and img.getpixel((150, 380))[0] > 150
    assert not img.getexif() and "exif" not in img.info and "icc_profile" not in img.info
    assert b"SecretCam" not in photo.png and b"GPS" not in photo.png


def test_all_problems_reported_together_by_position():
    good = synthetic_photos(3, seed=1)
    tiny = io.BytesIO()
    Image.new("RGB", (64, 64)).save(tiny, format="PNG")
    uploads = [good[0], good[0], b"not an image at all", tiny.getvalue(), good[1][:200], None, good[2]]
    with pytest.raises(PhotoError) as err:
        validate_photos(uploads)
    problems = err.value.problems
    assert "photo 2 is an exact duplicate of photo 1" in problems
    assert "photo 3 is not a readable image (UnidentifiedImageError)" in problems
    assert any(p.startswith("photo 4 is 64x64; the short side must be at least 256") for p in problems)
    assert any(p.startswith("photo 5 is not a readable image") for p in problems)  # truncated JPEG
    assert "photo 6 could not be read from the store" in problems
    assert len(problems) == 5


def test_counts_size_and_pixel_duplicates():
    with pytest.raises(PhotoError, match="2 photo\\(s\\) given; at least 3 are needed"):
        validate_photos(synthetic_photos(2))
    with pytest.raises(PhotoError, match="21 photos given; at most 20 are allowed"):
        validate_photos(synthetic_photos(21))
    with pytest.raises(PhotoError, match="photo 1 is .* MiB; the limit is 1 MiB"):
        validate_photos([b"x" * (2 * 2**20)] + synthetic_photos(3), PhotoLimits(max_bytes=2**20))
    # Same pixels in another container is still the same photo.
    png = io.BytesIO()
    Image.open(io.BytesIO(validate_photos(synthetic_photos(3))[0].png)).save(png, format="PNG", compress_level=1)
    first = validate_photos(synthetic_photos(3))[0].png
    with pytest.raises(PhotoError, match="photo 2 is an exact duplicate of photo 1"):
        validate_photos([first, png.getvalue()] + synthetic_photos(3)[1:])


def test_large_photos_are_downscaled():
    big = io.BytesIO()
    Image.new("RGB", (2400, 1600), (10, 200, 10)).save(big, format="JPEG")
    photo = validate_photos([big.getvalue()] + synthetic_photos(2))[0]
    assert (photo.width, photo.height) == (1024, 683)


def test_photos_are_stored_under_the_user_prefix(store):
    photos = validate_photos(synthetic_photos(3, seed=3))
    uris = store_photos(store, "user-42", photos)
    assert all(uri.startswith(store.url + "/users/user-42/photos/") for uri in uris)
    assert store_photos(store, "user-42", photos) == uris  # content-addressed: idempotent
    assert len(store.list(user_prefix("user-42"))) == 3
    for i, photo in enumerate(photos):
        store.put_bytes(f"users/user-42/uploads/{i}.png", photo.png)
    uploads = [store.uri(f"users/user-42/uploads/{i}.png") for i in range(3)]
    assert read_uploads(store, "user-42", uploads) == [p.png for p in photos]
    assert read_uploads(store, "user-42", [store.uri("users/user-42/uploads/missing.png")]) == [None]
    with pytest.raises(PhotoError, match="photo 1 is not an upload of this user"):
        read_uploads(store, "user-42", uris[:1])  # normalised photos are not uploads
    with pytest.raises(ValueError, match="never an email"):
        user_prefix("alice@example.com")
