"""Evaluation building blocks: the fixed eval set, image statistics, CLIP score, contact sheet.

The GPU job that uses them to compare champion and challenger is :mod:`training.evaluate_job`.
"""

from __future__ import annotations

from pathlib import Path

EVAL_SET = {
    "version": "eval-v1",
    "items": [
        {"prompt": "album cover art of a lonely city at night, neon rain, film grain", "seed": 11},
        {"prompt": "album cover art of the sea at sunset, warm pastel, minimal", "seed": 22},
        {"prompt": "album cover art of a red car on an empty road, retro style", "seed": 33},
        {"prompt": "album cover art of flowers and stars, dreamy soft portrait", "seed": 44},
    ],
}


def image_stats(images) -> dict:
    """Cheap distribution statistics of a list of PIL images."""
    import numpy as np

    arrays = [np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0 for im in images]
    hsv = [np.asarray(im.convert("HSV"), dtype=np.float32) / 255.0 for im in images]
    return {
        "brightness": float(np.mean([a.mean() for a in arrays])),
        "contrast": float(np.mean([a.std() for a in arrays])),
        "saturation": float(np.mean([h[..., 1].mean() for h in hsv])),
        "channel_mean": [float(x) for x in np.mean([a.mean(axis=(0, 1)) for a in arrays], axis=0)],
        "channel_std": [float(x) for x in np.mean([a.std(axis=(0, 1)) for a in arrays], axis=0)],
        "blank_images": int(sum(a.std() < 0.01 or not np.isfinite(a).all() for a in arrays)),
    }


def stat_distance(a: dict, b: dict) -> float:
    """L1 distance between two images' colour statistics (0 = same colour distribution)."""
    return float(sum(abs(x - y) for x, y in zip(a["channel_mean"] + a["channel_std"],
                                                  b["channel_mean"] + b["channel_std"], strict=True)))


def contact_sheet(columns: dict[str, list], labels: list[str], path: Path) -> Path:
    """Grid PNG: one row per prompt, one column per model, with a header line."""
    from PIL import Image, ImageDraw

    names = list(columns)
    size = columns[names[0]][0].size[0]
    cell, header = max(size, 96), 14
    sheet = Image.new("RGB", (cell * len(names), header + cell * len(labels)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(names):
        draw.text((c * cell + 2, 1), name, fill="black")
        for r, image in enumerate(columns[name]):
            sheet.paste(image.resize((cell, cell)), (c * cell, header + r * cell))
    sheet.save(path, format="PNG")
    return path


def load_clip(clip_model: str, device=None) -> tuple:
    """CLIP model + processor from a hub id or a ``save_pretrained`` folder; fails naming it."""
    from transformers import CLIPModel, CLIPProcessor

    try:
        model, processor = CLIPModel.from_pretrained(clip_model), CLIPProcessor.from_pretrained(clip_model)
    except (OSError, ValueError) as exc:
        raise ValueError(f"clip_model {clip_model!r} is not a loadable CLIP model (hub id or folder): {exc}") from exc
    return model.eval().to(device or "cpu"), processor


def clip_scores(images, prompts: list[str], clip: tuple) -> list[float]:
    """CLIPScore per image/prompt pair: 100 * max(cos(image embedding, text embedding), 0).

    The CLIPScore of Hessel et al. (2021) as torchmetrics documents it, computed with
    transformers directly: torchmetrics 1.9's ``CLIPScore`` loads only a few known hub ids (no
    local folders) and expects the tensors transformers 4's ``get_*_features`` returned
    (transformers 5 returns model outputs)."""
    import torch

    model, processor = clip
    device = next(model.parameters()).device
    max_tokens = model.config.text_config.max_position_embeddings
    pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    text = processor(text=prompts, return_tensors="pt", padding=True, truncation=True, max_length=max_tokens)
    with torch.inference_mode():
        image_emb = model.get_image_features(pixel_values=pixels.to(device, model.dtype)).pooler_output
        text_emb = model.get_text_features(input_ids=text["input_ids"].to(device),
                                           attention_mask=text["attention_mask"].to(device)).pooler_output
    cos = torch.nn.functional.cosine_similarity(image_emb.float(), text_emb.float(), dim=-1)
    return [float(x) for x in (100 * cos).clamp(min=0)]


def held_out_note(held_out: int, used: int) -> str:
    """What the validation loss was measured on, for the run record and the report."""
    if used:
        return f"val_loss on {used} held-out image(s) of {held_out} in the snapshot's val split, not trained on"
    if held_out:
        return f"val_loss not measured: none of the {held_out} held-out image(s) could be read"
    return "val_loss not measured: the snapshot has no held-out (val) images"
