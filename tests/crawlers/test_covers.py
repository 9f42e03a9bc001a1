"""Cover validation and content-addressed storage."""

import io
import random

import pytest
from PIL import Image

from crawlers.catalogue import draw_cover
from crawlers.covers import CoverError, CoverLimits, store_cover, validate_cover


def _png(w, h):
    out = io.BytesIO()
    Image.new("RGB", (w, h), (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


def test_valid_cover_metadata():
    data = draw_cover(random.Random(1), 128, "JPEG")
    cover = validate_cover(data)
    assert (cover.width, cover.height, cover.format, cover.ext) == (128, 128, "JPEG", "jpg")
    assert cover.key == f"covers/{cover.sha256[:2]}/{cover.sha256}.jpg" and len(cover.phash) == 16


@pytest.mark.parametrize(("data", "limits", "reason"), [
    (b"<html>403</html>", CoverLimits(), "not_image"),
    (b"", CoverLimits(), "not_image"),
    (_png(300, 300)[:200], CoverLimits(), "not_image"),  # truncated file
    (_png(32, 32), CoverLimits(), "cover_too_small"),
    (_png(300, 300), CoverLimits(max_bytes=100), "cover_too_large"),
    (_png(900, 900), CoverLimits(max_side=512), "cover_too_large"),
    (_png(600, 100), CoverLimits(), "bad_aspect"),
])
def test_bad_covers_are_named(data, limits, reason):
    with pytest.raises(CoverError) as err:
        validate_cover(data, limits)
    assert err.value.reason == reason


def test_store_is_content_addressed_and_create_only(store):
    data = draw_cover(random.Random(2), 96)
    cover = validate_cover(data)
    uri, written = store_cover(store, data, cover)
    again_uri, again = store_cover(store, data, cover)
    assert written and not again and uri == again_uri == store.uri(cover.key)
    assert store.get_bytes(cover.key) == data and store.list("covers") == [cover.key]


def test_the_crawler_hashes_a_cover_as_the_snapshot_does():
    """The snapshot dedupes with the crawler's stored hash: an EXIF-rotated JPEG and the same
    picture stored upright must get one hash, the one ``sleeve.phash`` gives."""
    from sleeve.phash import distance, phash_hex

    upright = Image.open(io.BytesIO(draw_cover(random.Random(2), 160, "JPEG"))).convert("RGB")
    upright = upright.crop((0, 0, 160, 120))  # not square: a rotation changes the picture
    rotated = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways, EXIF says turn it back
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: turn 90 degrees clockwise to display
    out = io.BytesIO()
    rotated.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    cover = validate_cover(out.getvalue())
    assert cover.phash == phash_hex(Image.open(io.BytesIO(out.getvalue())))
    assert distance(int(cover.phash, 16), int(phash_hex(upright), 16)) <= 4  # the upright picture, JPEG-compressed
