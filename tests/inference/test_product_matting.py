"""Background removal: the embedded GrabCut matte against the synthetic photos' true masks
(no growth into the backdrop or the cast shadow, nothing of the product missed), transparent
PNGs by their own alpha, and every bad photo refused with a reason. rembg's custom-model session
runs offline on a tiny ONNX model made here; a rembg model name that is not installed is
refused instead of downloaded."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from inference.product_composite import mask_expansion
from inference.product_matting import (
    MattingError,
    PhotoLimits,
    PlainBackgroundMatter,
    cut_out,
    feather,
    load_photo,
    open_matter,
)
from inference.product_samples import draw, encode, sample_products

SAMPLES = {s.key: s for s in sample_products()}


def _expansion_and_miss(alpha: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pred, true = alpha >= 128, truth >= 0.5
    return mask_expansion(pred, true), mask_expansion(true, pred)


@pytest.mark.parametrize("sample", SAMPLES.values(), ids=lambda s: s.key)
def test_the_matte_fits_the_product_and_leaves_its_shadow(sample):
    cutout = cut_out(load_photo(sample.photo), open_matter("opencv"))
    expansion, miss = _expansion_and_miss(cutout.alpha, sample.truth)
    assert expansion <= 0.02, f"{sample.key}: the mask grew {expansion:.2%} into the backdrop"
    assert miss <= 0.02, f"{sample.key}: the mask misses {miss:.2%} of the product"
    assert cutout.source == "opencv@grabcut-1"
    soft = (cutout.alpha > 0) & (cutout.alpha < 255)
    assert soft.sum() > 0.5 * np.sqrt((cutout.alpha >= 128).sum())  # feathered edges, not a hard cut


def test_the_expansion_metric_catches_a_grown_mask():
    import cv2

    sample = SAMPLES["mug"]
    cutout = cut_out(load_photo(sample.photo), PlainBackgroundMatter())
    grown = cv2.dilate(cutout.alpha, np.ones((9, 9), np.uint8))  # 4 px into the backdrop all round
    assert _expansion_and_miss(grown, sample.truth)[0] > 0.02


def test_the_mug_handle_hole_stays_background():
    sample = SAMPLES["mug"]
    alpha = cut_out(load_photo(sample.photo), PlainBackgroundMatter()).alpha
    size = alpha.shape[0]
    hole = (round(0.5 * size), round(0.67 * size))  # inside the handle's ring
    assert sample.truth[hole] == 0 and alpha[hole] == 0


def test_feathering_does_not_grow_the_mask():
    disc = np.zeros((200, 200), bool)
    yy, xx = np.mgrid[0:200, 0:200]
    disc[(yy - 100) ** 2 + (xx - 90) ** 2 < 60 ** 2] = True
    soft = feather(disc, sigma=2.0)
    assert mask_expansion(soft >= 0.5, disc) <= 0.005 and 0 < soft[100, 30] < 1


def test_a_transparent_png_is_cut_out_by_its_own_alpha():
    rgb, truth = draw("ball", (200, 40, 40), (255, 255, 255), size=128, shadow=0)
    photo = load_photo(encode(rgb, "PNG", alpha=truth))
    cutout = cut_out(photo, matter=None)  # no model is needed
    assert cutout.source == "alpha"
    assert np.array_equal(cutout.alpha, np.clip(np.rint(truth * 255), 0, 255).astype(np.uint8))


def test_an_opaque_rgba_png_is_matted_like_any_photo():
    sample = SAMPLES["ball"]
    rgb = np.asarray(Image.open(io.BytesIO(sample.photo)).convert("RGB"))
    photo = load_photo(encode(rgb, "PNG", alpha=np.ones(rgb.shape[:2])))
    assert photo.alpha is None
    assert cut_out(photo, PlainBackgroundMatter()).source.startswith("opencv")


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _plain(colour=(230, 230, 230), size=128) -> bytes:
    return encode(np.full((size, size, 3), colour, np.uint8), "PNG")


@pytest.mark.parametrize("data, message", [
    (b"", "is empty"),
    (b"%PDF-1.7 not an image at all", "not a readable image"),
    (SAMPLES["mug"].photo[:5000], "not a readable image"),  # a truncated JPEG
    (_png_claiming(8_000, 8_000), "has 8000x8000 pixels; the limit is 40,000,000"),
    (_png_claiming(30_000, 30_000), "claims more pixels than can be decoded safely"),
    (encode(np.zeros((16, 200, 3), np.uint8), "PNG"), "the short side must be at least 32"),
])
def test_bad_uploads_are_refused_before_matting(data, message):
    with pytest.raises(MattingError, match=message):
        load_photo(data)


def test_the_byte_limit_is_checked_first():
    with pytest.raises(MattingError, match="MiB; the limit is 1 MiB"):
        load_photo(b"\x00" * (2 * 2**20), PhotoLimits(max_bytes=2**20))


def test_large_photos_are_worked_on_at_a_bounded_size():
    rgb, _ = draw("jar", (225, 140, 160), (228, 236, 244), size=512)
    photo = load_photo(encode(rgb, "PNG"), PhotoLimits(work_side=256))
    assert photo.rgb.shape == (256, 256, 3)


@pytest.mark.parametrize("photo, message", [
    (_plain(), "nothing in the photo stands out"),
    (encode(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8), "PNG"), "not plain"),
    (encode(draw("ball", (200, 40, 40), (240, 240, 240), size=256)[0][105:155, 105:155], "PNG"),
     "nothing in the photo stands out"),  # a close-up: the product fills the frame, there is no backdrop
])
def test_photos_without_a_separable_product_are_refused(photo, message):
    with pytest.raises(MattingError, match=message):
        cut_out(load_photo(photo), PlainBackgroundMatter())


def test_alpha_that_covers_nothing_or_everything_is_refused():
    rgb = np.full((64, 64, 3), 128, np.uint8)
    with pytest.raises(MattingError, match="no separable product"):
        cut_out(load_photo(encode(rgb, "PNG", alpha=np.zeros((64, 64)))), matter=None)
    almost_all = np.ones((64, 64))
    almost_all[0, 0] = 0.0
    with pytest.raises(MattingError, match="no separable background"):
        cut_out(load_photo(encode(rgb, "PNG", alpha=almost_all)), matter=None)


def test_unknown_backend_is_an_error():
    with pytest.raises(MattingError, match="unknown matting backend"):
        open_matter("photoshop")


# --- rembg: the production backend, offline ----------------------------------------------------

def _darkness_model(path) -> None:
    """A tiny ONNX 'segmentation model' in rembg's U2-Net layout: 1x3x320x320 in, 1x1x320x320
    out, high where the image is dark (a product on a light backdrop)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input", "axes"], ["mean"], keepdims=1),
         helper.make_node("Mul", ["mean", "k"], ["scaled"]),
         helper.make_node("Sigmoid", ["scaled"], ["mask"])],
        "darkness",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 320, 320])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
         helper.make_tensor("k", TensorProto.FLOAT, [], [-8.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


@pytest.fixture
def rembg_home(tmp_path, monkeypatch):
    pytest.importorskip("rembg")
    pytest.importorskip("onnx")
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net-home"))
    return tmp_path / "u2net-home"


def test_rembg_custom_session_runs_a_local_onnx_model(rembg_home, tmp_path):
    model = tmp_path / "darkness.onnx"  # outside rembg's home: Sleeve links it in
    _darkness_model(model)
    rgb, truth = draw("mug", (60, 90, 160), (240, 240, 240), size=256, shadow=0)
    matter = open_matter("rembg", str(model))
    assert matter.version.startswith("custom-") and matter.name == "rembg"
    cutout = cut_out(load_photo(encode(rgb, "PNG")), matter)
    pred, true = cutout.alpha >= 128, truth >= 0.5
    iou = (pred & true).sum() / (pred | true).sum()
    assert iou > 0.85, f"IoU {iou:.3f}"
    assert list(rembg_home.rglob("*darkness.onnx"))


def test_rembg_custom_model_from_the_store(rembg_home, tmp_path, local_store):
    model = tmp_path / "darkness.onnx"
    _darkness_model(model)
    local_store.put_file("models/matting/darkness.onnx", model)
    matter = open_matter("rembg", local_store.uri("models/matting/darkness.onnx"), cache_dir=tmp_path / "cache")
    assert matter.version.startswith("custom-")


def test_rembg_never_downloads_a_missing_model(rembg_home, monkeypatch):
    import pooch

    def no_download(*args, **kwargs):
        raise AssertionError("rembg tried to download a model")

    monkeypatch.setattr(pooch, "retrieve", no_download)
    with pytest.raises(MattingError, match="rembg model 'u2net' is not installed"):
        open_matter("rembg", "u2net")
    with pytest.raises(MattingError, match="no local model named 'sam'"):
        open_matter("rembg", "sam")
    with pytest.raises(MattingError, match="does not exist"):
        open_matter("rembg", "/nowhere/model.onnx")


def test_the_matte_is_deterministic():
    photo = load_photo(SAMPLES["jar"].photo)
    first = cut_out(photo, PlainBackgroundMatter()).alpha
    cut_out(load_photo(SAMPLES["ball"].photo), PlainBackgroundMatter())  # moves OpenCV's global RNG on
    assert np.array_equal(cut_out(photo, PlainBackgroundMatter()).alpha, first)
