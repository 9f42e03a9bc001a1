"""`make bench` part: product-shot fidelity on the demo set, and the embedded matting against
what a user of stock OpenCV writes.

- ``product_fidelity_psnr_db``: the lowest masked PSNR (product core, after every step: paste,
  shadow, an img2img-style repaint of the whole frame, PNG round trip) over the demo set's
  products x positions; 100 is the cap for identical pixels.
- ``product_mask_expansion``: the largest extra mask area (share of the true product area the
  matte adds outside it) over the demo set, for Sleeve's matting and for the baseline: the
  OpenCV GrabCut tutorial recipe (a rectangle around the product, 5 iterations, no backdrop
  model), which takes in the product's cast shadow.
- matting seconds per photo, 3 rounds each (median, min, max).
"""

from __future__ import annotations

import io
import time

import numpy as np


def _baseline_mask(rgb: np.ndarray) -> np.ndarray:
    """Stock GrabCut from a rectangle 5 % in from the border."""
    import cv2

    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    rect = (round(0.05 * w), round(0.05 * h), round(0.9 * w), round(0.9 * h))
    cv2.setRNGSeed(0)
    cv2.grabCut(rgb, mask, rect, np.zeros((1, 65)), np.zeros((1, 65)), 5, cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def measure(rounds: int = 3, frame: int = 256) -> dict:
    """metric -> value (or the list of round values)."""
    from PIL import Image

    from inference.product_composite import (
        compose,
        fidelity,
        mask_expansion,
        parse_placement,
        place,
        report_db,
    )
    from inference.product_matting import PlainBackgroundMatter, cut_out, load_photo
    from inference.product_samples import sample_products

    samples = sample_products()
    photos = [load_photo(s.photo) for s in samples]
    matter = PlainBackgroundMatter()
    ours_s, base_s, cutouts, baseline = [], [], [], []
    for _ in range(rounds):
        started = time.perf_counter()
        cutouts = [cut_out(p, matter) for p in photos]
        ours_s.append((time.perf_counter() - started) / len(photos))
        started = time.perf_counter()
        baseline = [_baseline_mask(p.rgb) for p in photos]
        base_s.append((time.perf_counter() - started) / len(photos))
    truths = [s.truth >= 0.5 for s in samples]
    rng = np.random.default_rng(0)
    worst = float("inf")
    for cutout in cutouts:
        for position in ("centre", "left", "right", "bottom", {"x": 0.8, "y": 0.3}):
            layer = place(cutout.rgb, cutout.alpha, parse_placement(position, 0.6), (frame, frame))
            background = rng.integers(0, 256, (frame, frame, 3), dtype=np.uint8)
            repaint = rng.integers(0, 256, (frame, frame, 3), dtype=np.uint8)
            shot, steps = compose(layer, background, harmonise=lambda image, r=repaint: r)
            buf = io.BytesIO()
            Image.fromarray(shot).save(buf, format="PNG")
            steps["stored"] = fidelity(np.asarray(Image.open(buf).convert("RGB")), layer)
            worst = min(worst, *steps.values())
    ours = [c.alpha >= 128 for c in cutouts]

    def worst_case(masks, against):  # the largest share one mask adds to the other
        return round(max(mask_expansion(m, t) for m, t in zip(masks, against, strict=True)), 5)

    return {
        "product_fidelity_psnr_db": report_db(worst),
        "product_mask_expansion": worst_case(ours, truths),
        "product_mask_missed": worst_case(truths, ours),
        "baseline_mask_expansion": worst_case(baseline, truths),
        "baseline_mask_missed": worst_case(truths, baseline),
        "matting_s_per_photo": [round(s, 3) for s in ours_s],
        "baseline_matting_s_per_photo": [round(s, 3) for s in base_s],
    }


DESCRIPTIONS = {
    "product_fidelity_psnr_db": "lowest masked PSNR of the product's pixels over the demo set's products x 5 "
                                "positions, after paste, shadow, a whole-frame repaint and a PNG round trip (cap 100)",
    "product_mask_expansion": "largest share of the true product area Sleeve's matte adds outside the product",
    "baseline_mask_expansion": ("largest share of the true product area stock OpenCV GrabCut (rectangle init, "
                                "5 iterations) adds outside the product"),
    "matting_s_per_photo": "Sleeve's matting, seconds per photo (4 synthetic products, CPU)",
    "baseline_matting_s_per_photo": "stock OpenCV GrabCut matting, seconds per photo (the same 4 products)",
}


def run() -> dict:
    values = measure()
    values["product_mask_expansion_baseline_over_ours"] = round(
        values["baseline_mask_expansion"] / max(values["product_mask_expansion"], 1e-6), 1)
    values["matting_speedup_vs_grabcut"] = [round(b / o, 2) for o, b in zip(
        values["matting_s_per_photo"], values["baseline_matting_s_per_photo"], strict=True)]
    return values


if __name__ == "__main__":
    import json

    print(json.dumps(measure(), indent=2))
