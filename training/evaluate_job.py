"""GPU job: champion vs challenger on a fixed, versioned evaluation set.

    python -m training.evaluate --manifest <snapshot URI> --config '<json>' --output <URI prefix>

Config: ``base_model``, ``challenger_uri`` (adapter folder URI), ``champion_uri`` (adapter URI
or null: the base model is the champion), ``resolution``, ``steps`` (inference steps),
``val_items`` (at most this many held-out images for validation loss, default 8),
``clip_model`` (optional CLIP hub id or folder, e.g. ``openai/clip-vit-base-patch32``; unset:
no CLIP score, a note says so). Both models render the same prompts with the same seeds.
Metrics per model: ``val_loss`` (diffusion loss at fixed noise levels and fixed noise on the
snapshot's held-out ``val`` split only -- images the challenger was not trained on), image
statistics (brightness, contrast, saturation, distance of colour statistics to the held-out
images, blank images) and, when configured, ``clip_score`` (mean over the eval prompts; the
per-prompt scores are in the result's ``clip_scores``). The result says which
split the loss used (``val_split``) and on how many images (``val_images``); with no held-out
images ``val_loss`` is NaN, a note says so and the gate keeps the champion. Writes
``contact_sheet.png`` (rows: prompts; columns: champion, challenger) and ``metrics.json``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sleeve.jobs import download_output, output_location, run_job
from training.snapshot import VAL, split_items

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


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    import torch
    from diffusers import DDPMScheduler, DiffusionPipeline

    from training.dataset import Example
    from training.trainer import WEIGHTS_NAME, Components, PreparedData, resolve_precision, validation_loss

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(resolve_precision("auto"), torch.float32)
    resolution, steps = int(config.get("resolution", 64)), int(config.get("steps", 4))
    clip_model = config.get("clip_model") or None
    clip = load_clip(clip_model, device) if clip_model else None  # before the slow part: a bad id fails fast
    pipe = DiffusionPipeline.from_pretrained(config["base_model"], dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    work = Path(tempfile.mkdtemp(prefix="sleeve-eval-"))
    models = {"champion": config.get("champion_uri"), "challenger": config["challenger_uri"]}
    for name, uri in models.items():
        if uri:
            pipe.load_lora_weights(str(download_output(uri, work / name)), weight_name=WEIGHTS_NAME, adapter_name=name)
    sdxl = getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if sdxl else [])
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if sdxl else [])
    parts = Components(config["base_model"], pipe.unet, pipe.vae, DDPMScheduler.from_config(pipe.scheduler.config),
                       tokenizers, encoders, sdxl, device, dtype)
    held_out = split_items(manifest, VAL)
    val_examples = [Example.from_manifest(i) for i in held_out[: int(config.get("val_items", 8))]]
    data = PreparedData(parts, val_examples, resolution, config.get("cache_dir"), cache_text=False)
    reference = image_stats([_load(e.uri, resolution) for e in data.examples]) if data.examples else None
    notes = [held_out_note(len(held_out), len(data.examples))]
    if not clip:
        notes.append("clip_score skipped: no clip_model configured")

    eval_set = config.get("eval_set") or EVAL_SET
    prompts = [i["prompt"] for i in eval_set["items"]]
    metrics, columns, per_prompt = {}, {}, {}
    for name, uri in models.items():
        if uri:
            pipe.enable_lora()
            pipe.set_adapters([name])
        else:
            pipe.disable_lora()
        images = [pipe(prompt=i["prompt"], num_inference_steps=steps, height=resolution, width=resolution,
                       generator=torch.Generator("cpu").manual_seed(i["seed"])).images[0] for i in eval_set["items"]]
        columns[name if uri else "champion (base)"] = images
        stats = image_stats(images)
        m = {"val_loss": validation_loss(parts, data), **{k: v for k, v in stats.items() if not isinstance(v, list)}}
        if reference:
            m["stat_distance"] = stat_distance(stats, reference)
        if clip:
            per_prompt[name] = clip_scores(images, prompts, clip)
            m["clip_score"] = sum(per_prompt[name]) / len(per_prompt[name])
        metrics[name] = m
    sheet = contact_sheet(columns, prompts, work / "contact_sheet.png")
    store, prefix = output_location(output_uri)
    store.put_file(prefix + "contact_sheet.png", sheet, content_type="image/png")
    result = {"eval_set_version": eval_set["version"], "champion_is_base": not models["champion"],
              "metrics": metrics, "notes": notes, "contact_sheet_uri": store.uri(prefix + "contact_sheet.png"),
              "val_split": VAL, "val_images": len(data.examples), "clip_model": clip_model, "clip_scores": per_prompt}
    from sleeve.store import write_json

    write_json(store, prefix + "metrics.json", result)
    return result


def _load(uri: str, resolution: int):
    from training.dataset import decode_image, read_image_bytes

    return decode_image(read_image_bytes(uri)).resize((resolution, resolution))


if __name__ == "__main__":
    run_job(main)
