"""GPU job: champion vs challenger on a fixed, versioned evaluation set.

    python -m training.evaluate_job --manifest <snapshot URI> --config '<json>' --output <URI prefix>

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
from training.evaluate import (
    EVAL_SET,
    clip_scores,
    contact_sheet,
    held_out_note,
    image_stats,
    load_clip,
    stat_distance,
)
from training.snapshot import VAL, split_items


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
