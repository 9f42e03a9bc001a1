"""Placing a cut-out product on a generated background, and proving its pixels survived.

    placement = parse_placement("left", scale=0.6)              # or {"x": 0.3, "y": 0.6, "scale": 0.5}
    layer = place(cutout.rgb, cutout.alpha, placement, (1024, 1024))  # the product at its spot
    shot, steps = compose(layer, background, harmonise=None)          # shadow, paste, harmonise?
    fidelity(shot, layer)                                       # masked PSNR, inf when exact

- The product is cropped to its mask first and scaled so its longer side is ``scale`` of the
  frame (never below :data:`MIN_SCALE`: a naive resize of the whole photo leaves it tiny), in
  premultiplied alpha so no backdrop colour fringes the edge.
- Named positions put the product's box centre at a fixed point (``bottom`` rests it near the
  lower edge); ``x``/``y`` are fractions of the frame in [0, 1]. A box that would leave the
  frame is moved inside it: the documented fallback, recorded as ``moved``.
- A soft contact shadow darkens the background under the product, never the product.
- The optional harmonisation (an img2img pass, see :mod:`inference.product_job`) may repaint
  the whole frame; the product is pasted back after it, so only pixels OUTSIDE the mask change.
- Fidelity: inside the product's solid core (alpha = 255) the shot must equal the placed
  cut-out; :func:`fidelity` gives the masked PSNR (inf when identical) after every step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MIN_SCALE, MAX_SCALE = 0.3, 1.0
DEFAULT_SCALE = 0.6
MARGIN = 0.03  # of the frame, kept free around a moved product
NAMED = {"centre": (0.5, 0.52), "center": (0.5, 0.52), "left": (0.3, 0.55), "right": (0.7, 0.55),
         "bottom": (0.5, None)}  # bottom: centred, resting on the lower margin
MIN_PSNR_DB = 40.0
PSNR_CAP_DB = 100.0  # identical images have infinite PSNR; JSON and reports get this cap instead


class PlacementError(ValueError):
    """A position or scale that cannot be used; the message names it."""


@dataclass(frozen=True)
class Placement:
    name: str  # centre | left | right | bottom | xy
    x: float | None = None
    y: float | None = None
    scale: float = DEFAULT_SCALE
    requested_scale: float = DEFAULT_SCALE

    @property
    def key(self) -> str:
        where = self.name if self.name != "xy" else f"x{self.x:g}-y{self.y:g}"
        return f"{where}@{self.scale:g}"

    def to_dict(self) -> dict:
        return {"name": self.name, "x": self.x, "y": self.y, "scale": self.scale,
                "requested_scale": self.requested_scale}


def _fraction(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PlacementError(f"position {name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise PlacementError(f"position {name}={value} is out of range: use a fraction of the frame in [0, 1]")
    return float(value)


def parse_placement(spec: object, scale: object = DEFAULT_SCALE) -> Placement:
    """A position (``"centre"``, ``"left"``, ``"right"``, ``"bottom"``, or ``{"x", "y"}`` with an
    optional ``"scale"``) and a scale -> a Placement. Scales below :data:`MIN_SCALE` are raised to
    it (documented fallback, ``requested_scale`` keeps the ask); anything else out of range
    is a PlacementError."""
    if isinstance(spec, dict):
        unknown = sorted(set(spec) - {"x", "y", "scale"})
        if unknown or not {"x", "y"} <= set(spec):
            raise PlacementError(f"a position object needs x and y (and optionally scale), got {sorted(spec)}")
        x, y = _fraction("x", spec["x"]), _fraction("y", spec["y"])
        name, scale = "xy", spec.get("scale", scale)
    elif isinstance(spec, str) and spec.strip().lower() in NAMED:
        name, x, y = spec.strip().lower().replace("center", "centre"), None, None
    else:
        raise PlacementError(f"unknown position {spec!r}; use centre, left, right, bottom or {{\"x\": .., \"y\": ..}}")
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise PlacementError(f"scale must be a number, got {scale!r}")
    if not 0 < scale <= MAX_SCALE:
        raise PlacementError(f"scale={scale} is out of range: the product's share of the frame must be in "
                             f"(0, {MAX_SCALE:g}]; values below {MIN_SCALE:g} are raised to {MIN_SCALE:g}")
    return Placement(name, x, y, max(float(scale), MIN_SCALE), float(scale))


@dataclass(frozen=True)
class Layer:
    """The product at its place in the frame: straight (not premultiplied) RGB and 8-bit alpha."""

    rgb: np.ndarray  # HxWx3 uint8 (zero where alpha is 0)
    alpha: np.ndarray  # HxW uint8
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 of the product in the frame
    moved: bool  # the requested spot was moved to keep the product inside the frame

    @property
    def core(self) -> np.ndarray:
        return self.alpha == 255

    @property
    def mask(self) -> np.ndarray:
        return self.alpha >= 128


def crop_box(alpha: np.ndarray, pad: int = 2) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(alpha)
    h, w = alpha.shape
    return max(0, xs.min() - pad), max(0, ys.min() - pad), min(w, xs.max() + 1 + pad), min(h, ys.max() + 1 + pad)


def _resize_premultiplied(rgb: np.ndarray, alpha: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resample colour weighted by alpha, so transparent (backdrop) pixels lend no colour."""
    import cv2

    a = alpha.astype(np.float32) / 255.0
    shrink = size[0] < rgb.shape[1]
    method = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
    pre = cv2.resize(rgb.astype(np.float32) * a[..., None], size, interpolation=method)
    a2 = np.clip(cv2.resize(a, size, interpolation=method), 0.0, 1.0)
    colour = np.where(a2[..., None] > 1e-4, pre / np.maximum(a2[..., None], 1e-4), 0.0)
    alpha8 = np.rint(a2 * 255).astype(np.uint8)
    rgb8 = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    rgb8[alpha8 == 0] = 0
    return rgb8, alpha8


def place(rgb: np.ndarray, alpha: np.ndarray, placement: Placement, frame: tuple[int, int]) -> Layer:
    """The cut-out (photo ``rgb`` and its ``alpha``) cropped, scaled and positioned in a frame
    of ``(width, height)``."""
    width, height = frame
    x0, y0, x1, y1 = crop_box(alpha)
    crop_rgb, crop_alpha = rgb[y0:y1, x0:x1], alpha[y0:y1, x0:x1]
    ch, cw = crop_alpha.shape
    factor = placement.scale * min(width / cw, height / ch)
    size = (max(1, round(cw * factor)), max(1, round(ch * factor)))
    prod_rgb, prod_alpha = _resize_premultiplied(crop_rgb, crop_alpha, size)
    pw, ph = size
    margin = round(MARGIN * min(width, height))
    if placement.name == "xy":
        cx, cy = placement.x, placement.y
    else:
        cx, cy = NAMED[placement.name]
    left = round(cx * width - pw / 2)
    top = round(height - margin - ph) if cy is None else round(cy * height - ph / 2)
    lo_x, hi_x = min(margin, width - pw), max(width - margin - pw, 0)
    lo_y, hi_y = min(margin, height - ph), max(height - margin - ph, 0)
    new_left, new_top = min(max(left, lo_x), hi_x), min(max(top, lo_y), hi_y)
    layer_rgb = np.zeros((height, width, 3), np.uint8)
    layer_alpha = np.zeros((height, width), np.uint8)
    sx0, sy0 = max(0, -new_left), max(0, -new_top)
    dx0, dy0 = max(0, new_left), max(0, new_top)
    dx1, dy1 = min(width, new_left + pw), min(height, new_top + ph)
    layer_rgb[dy0:dy1, dx0:dx1] = prod_rgb[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    layer_alpha[dy0:dy1, dx0:dx1] = prod_alpha[sy0:sy0 + dy1 - dy0, sx0:sx0 + dx1 - dx0]
    return Layer(layer_rgb, layer_alpha, (dx0, dy0, dx1, dy1), (new_left, new_top) != (left, top))


def paste(layer: Layer, background: np.ndarray) -> np.ndarray:
    """Alpha-composite the product over ``background`` (uint8, same size) in integers, so
    where alpha is 255 the result IS the product pixel."""
    a = layer.alpha.astype(np.uint32)[..., None]
    out = (layer.rgb.astype(np.uint32) * a + background.astype(np.uint32) * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def contact_shadow(layer: Layer, strength: float = 0.45) -> np.ndarray:
    """A soft shadow map (float32 HxW in [0, strength]) under the product: an ellipse at its
    base plus its own silhouette squashed onto the floor, both blurred."""
    import cv2

    h, w = layer.alpha.shape
    x0, y0, x1, y1 = layer.box
    pw, ph = x1 - x0, y1 - y0
    shadow = np.zeros((h, w), np.float32)
    cx, base = (x0 + x1) / 2, y1 - max(1, round(0.02 * ph))
    cv2.ellipse(shadow, (round(cx), round(base)), (max(1, round(0.46 * pw)), max(1, round(0.06 * ph))),
                0, 0, 360, 1.0, -1)
    squash = cv2.resize((layer.alpha[y0:y1, x0:x1] >= 128).astype(np.float32), (pw, max(1, round(0.15 * ph))),
                        interpolation=cv2.INTER_AREA)
    top = min(h - squash.shape[0], max(0, base - squash.shape[0] // 2))
    shadow[top:top + squash.shape[0], x0:x1] = np.maximum(shadow[top:top + squash.shape[0], x0:x1], 0.6 * squash)
    sigma = max(0.8, 0.05 * max(pw, ph))
    return strength * np.clip(cv2.GaussianBlur(shadow, (0, 0), sigma), 0, 1)


def darken(background: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(background.astype(np.float32) * (1.0 - shadow[..., None])), 0, 255).astype(np.uint8)


def masked_psnr(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR (dB, 8-bit) over the pixels where ``mask`` is True; inf when they are identical."""
    if not mask.any():
        raise ValueError("the mask is empty: there are no product pixels to compare")
    diff = image[mask].astype(np.float64) - reference[mask].astype(np.float64)
    mse = float(np.mean(diff ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


def fidelity(image: np.ndarray, layer: Layer) -> float:
    """Masked PSNR of ``image`` against the placed cut-out over its solid core."""
    return masked_psnr(image, layer.rgb, layer.core)


def mask_expansion(mask: np.ndarray, truth: np.ndarray) -> float:
    """Extra mask area: the share of ``truth``'s area that ``mask`` adds outside it."""
    return float((mask & ~truth).sum() / max(1, truth.sum()))


def report_db(psnr: float) -> float:
    """A PSNR for JSON and reports: capped at :data:`PSNR_CAP_DB` (inf means identical)."""
    return round(min(psnr, PSNR_CAP_DB), 2)


Harmoniser = Callable[[np.ndarray], np.ndarray]  # composite uint8 HxWx3 -> repainted frame, same size


def compose(layer: Layer, background: np.ndarray, *, shadow_strength: float = 0.45,
            harmonise: Harmoniser | None = None, repaste: bool = True) -> tuple[np.ndarray, dict[str, float]]:
    """The shot and the fidelity (masked PSNR, dB) after each step: ``paste`` (the product on
    the raw background), ``shadow`` (on the shadowed background) and, with ``harmonise``, the
    repainted frame with the product pasted back (``repaste=False`` exists to show what a pass
    that forgets it does: the fidelity check must catch it)."""
    steps = {"paste": fidelity(paste(layer, background), layer)}
    shaded = darken(background, contact_shadow(layer, shadow_strength)) if shadow_strength > 0 else background
    shot = paste(layer, shaded)
    steps["shadow"] = fidelity(shot, layer)
    if harmonise is not None:
        repainted = harmonise(shot)
        shot = paste(layer, repainted) if repaste else repainted
        steps["harmonise"] = fidelity(shot, layer)
    return shot, steps
