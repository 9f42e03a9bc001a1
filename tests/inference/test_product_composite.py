"""Compositing: positions and scales (with their documented fallbacks and their errors), the
product's pixels kept exactly after every step, and a fidelity check that fails when a step
(a harmonisation that forgets to paste the product back) changes them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.product_composite import (
    MIN_PSNR_DB,
    MIN_SCALE,
    PlacementError,
    compose,
    contact_shadow,
    fidelity,
    mask_expansion,
    masked_psnr,
    parse_placement,
    paste,
    place,
    report_db,
)
from inference.product_samples import draw

FRAME = (256, 256)


@pytest.fixture(scope="module")
def cutout():
    rgb, truth = draw("bottle", (70, 150, 95), (214, 218, 222), size=256, shadow=0)
    return rgb, np.clip(np.rint(truth * 255), 0, 255).astype(np.uint8)


def _background(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (*FRAME[::-1], 3), dtype=np.uint8)


@pytest.mark.parametrize("spec, scale, message", [
    ("top", 0.6, "unknown position 'top'"),
    ({"x": 1.2, "y": 0.5}, 0.6, "x=1.2 is out of range"),
    ({"x": 0.5, "y": -0.1}, 0.6, "y=-0.1 is out of range"),
    ({"x": 0.5}, 0.6, "needs x and y"),
    ({"x": 0.5, "y": 0.5, "z": 1}, 0.6, "needs x and y"),
    ({"x": float("nan"), "y": 0.5}, 0.6, "must be a number"),
    ({"x": True, "y": 0.5}, 0.6, "must be a number"),
    ("centre", 1.5, "scale=1.5 is out of range"),
    ("centre", 0, "scale=0 is out of range"),
    ("centre", "big", "scale must be a number"),
    (3, 0.6, "unknown position 3"),
])
def test_positions_and_scales_out_of_range_are_errors(spec, scale, message):
    with pytest.raises(PlacementError, match=message):
        parse_placement(spec, scale)


def test_a_tiny_scale_is_raised_to_the_minimum():
    placement = parse_placement("Center", 0.05)
    assert placement.name == "centre" and placement.scale == MIN_SCALE and placement.requested_scale == 0.05
    assert parse_placement({"x": 0.2, "y": 0.8, "scale": 0.5}).key == "x0.2-y0.8@0.5"


def test_the_product_fills_its_share_of_the_frame(cutout):
    layer = place(*cutout, parse_placement("centre", 0.6), FRAME)
    x0, y0, x1, y1 = layer.box
    assert abs(max(x1 - x0, y1 - y0) - 0.6 * 256) <= 2  # cropped to the product first: never tiny
    assert abs((x0 + x1) / 2 - 128) <= 2 and not layer.moved


@pytest.mark.parametrize("name, check", [
    ("left", lambda cx, cy, box: cx < 0.4 * 256),
    ("right", lambda cx, cy, box: cx > 0.6 * 256),
    ("bottom", lambda cx, cy, box: 256 - box[3] <= 0.05 * 256 and abs(cx - 128) <= 2),
])
def test_named_positions(cutout, name, check):
    layer = place(*cutout, parse_placement(name, 0.4), FRAME)
    x0, y0, x1, y1 = layer.box
    assert check((x0 + x1) / 2, (y0 + y1) / 2, layer.box)


def test_a_product_pushed_off_the_frame_is_moved_inside(cutout):
    layer = place(*cutout, parse_placement({"x": 1.0, "y": 1.0}, 0.6), FRAME)
    x0, y0, x1, y1 = layer.box
    assert layer.moved and x1 <= 256 and y1 <= 256
    assert int(layer.alpha.astype(bool).sum()) == int(place(*cutout, parse_placement("centre", 0.6), FRAME)
                                                      .alpha.astype(bool).sum())  # nothing cut off


def test_no_backdrop_colour_fringes_the_scaled_product():
    rgb = np.full((200, 200, 3), 255, np.uint8)  # a white backdrop ...
    rgb[50:150, 50:150] = (200, 0, 0)  # ... around a red square
    alpha = np.zeros((200, 200), np.uint8)
    alpha[50:150, 50:150] = 255
    layer = place(rgb, alpha, parse_placement("centre", 0.35), (64, 64))
    edge = (layer.alpha > 0) & (layer.alpha < 255)
    assert edge.any() and layer.rgb[edge][:, 1].max() <= 2  # premultiplied: no white in the edge pixels


def test_every_step_keeps_the_product_pixels(cutout):
    layer = place(*cutout, parse_placement("left", 0.6), FRAME)
    shot, steps = compose(layer, _background(), harmonise=lambda image: _background(1))
    assert set(steps) == {"paste", "shadow", "harmonise"} and all(math.isinf(v) for v in steps.values())
    assert np.array_equal(shot[layer.core], layer.rgb[layer.core])
    outside = layer.alpha == 0
    assert np.array_equal(shot[outside], _background(1)[outside])  # the harmonised frame, outside only


def test_a_harmonisation_that_leaks_into_the_product_fails_the_check(cutout):
    layer = place(*cutout, parse_placement("centre", 0.6), FRAME)

    def warm_grade(image):  # a colour grade over the whole frame, the product included
        return np.clip(image.astype(int) + (12, 4, -8), 0, 255).astype(np.uint8)

    _, steps = compose(layer, _background(), harmonise=warm_grade, repaste=False)
    assert steps["harmonise"] < MIN_PSNR_DB and math.isinf(steps["shadow"])
    _, fixed = compose(layer, _background(), harmonise=warm_grade)
    assert math.isinf(fixed["harmonise"])


def test_the_shadow_darkens_only_the_background(cutout):
    layer = place(*cutout, parse_placement("centre", 0.6), FRAME)
    shadow = contact_shadow(layer)
    below = np.zeros_like(layer.core)
    below[layer.box[3]:min(256, layer.box[3] + 4), layer.box[0]:layer.box[2]] = True
    assert shadow[below & (layer.alpha == 0)].max() > 0.1  # a visible shadow at the product's base
    grey = np.full((*FRAME[::-1], 3), 200, np.uint8)
    shot, _ = compose(layer, grey)
    assert np.array_equal(paste(layer, grey)[layer.core], shot[layer.core])


def test_masked_psnr_and_expansion_measure_what_they_say():
    a = np.zeros((10, 10, 3), np.uint8)
    b = a.copy()
    b[0, 0] = (10, 10, 10)  # one pixel off by 10 in every channel
    mask = np.ones((10, 10), bool)
    assert masked_psnr(b, a, mask) == pytest.approx(10 * math.log10(255 ** 2 / (100 / 100)))
    mask[0, 0] = False
    assert math.isinf(masked_psnr(b, a, mask))
    with pytest.raises(ValueError, match="mask is empty"):
        masked_psnr(a, a, np.zeros((10, 10), bool))
    truth = np.zeros((10, 10), bool)
    truth[2:8, 2:8] = True
    grown = truth.copy()
    grown[1, 2:8] = True
    assert mask_expansion(grown, truth) == pytest.approx(6 / 36) and mask_expansion(truth, truth) == 0
    assert report_db(math.inf) == 100.0 and report_db(41.234) == 41.23


def test_fidelity_compares_the_core_only(cutout):
    layer = place(*cutout, parse_placement("centre", 0.6), FRAME)
    image = paste(layer, _background())
    rim = (layer.alpha > 0) & (layer.alpha < 255)
    image[rim] = 0  # the feathered rim blends with the background by design
    assert math.isinf(fidelity(image, layer))
    image[layer.core.nonzero()[0][0], layer.core.nonzero()[1][0]] += 1
    assert fidelity(image, layer) < math.inf
