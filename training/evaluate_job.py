"""GPU job: champion vs challenger on a fixed, versioned evaluation set.

    python -m training.evaluate_job --manifest <snapshot URI> --config '<json>' --output <URI prefix>

Config: ``base_model``, ``challenger_uri`` (adapter folder URI), ``champion_uri`` (adapter URI
or null: the base model is the champion), ``resolution``, ``steps`` (inference steps),
``max_eval_images`` (at most this many held-out and this many reference images, chosen by
content hash so every source is represented; default 256), ``cache_dir`` (optional, shared across
weeks: latents, and each model's losses per image, so the champion is not evaluated again on
the reference it saw last week; :class:`training.trainer.LossMemo`), ``clip_model`` (optional CLIP hub
id or folder, e.g. ``openai/clip-vit-base-patch32``; unset: no CLIP score, a note says so).

The gate's evidence is ``paired``: for the snapshot's held-out ``val`` split (images no model
trained on) and for its ``reference`` set (earlier promoted weeks' held-out images), each
image's diffusion loss under the champion and under the challenger, with the same noise at the
same noise levels for both (:func:`training.trainer.validation_losses`), aligned by image:
``{"ids", "sources", "weeks", "champion": [...], "challenger": [...]}``; and ``pairs``, the
held-out preference pairs (two covers of one request its user rated at least ``min_rating_gap``
apart, in the held-out groups), each image's loss under both models the same way and
``"pairs": [[preferred index, dispreferred index, request id], ...]``: the evidence that the
challenger moved towards what users preferred, whatever the objective; and ``reference_pairs``,
the same for the reference's pairs (earlier promoted weeks' held-out pairs). Metrics per model:
``val_loss`` (their mean), image statistics of renders of the fixed eval prompts (same prompts
and seeds for both: brightness, contrast, saturation, distance of colour statistics to the
held-out and reference generated images, blank images) and, when configured, ``clip_score`` (mean over the eval
prompts; per prompt in ``clip_scores``). With no held-out images ``val_loss`` is null, a note
says so and the gate keeps the champion. Writes ``contact_sheet.png`` (rows: prompts; columns:
champion, challenger) and ``metrics.json``.
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
from training.snapshot import VAL, held_out_pairs, reference_items, reference_pairs, split_items

MAX_EVAL_IMAGES = 256


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    import torch
    from diffusers import DDPMScheduler, DiffusionPipeline

    from training.dataset import Example
    from training.trainer import (
        WEIGHTS_NAME,
        Components,
        LossMemo,
        PreparedData,
        resolve_precision,
        validation_losses,
    )

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(resolve_precision("auto"), torch.float32)
    resolution, steps = int(config.get("resolution", 64)), int(config.get("steps", 4))
    clip_model = config.get("clip_model") or None
    clip = load_clip(clip_model, device) if clip_model else None  # before the slow part: a bad id fails fast
    pipe = DiffusionPipeline.from_pretrained(config["base_model"], dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    work = Path(tempfile.mkdtemp(prefix="sleeve-eval-"))
    models = {"champion": config.get("champion_uri"), "challenger": config["challenger_uri"]}
    weights = {}  # model -> its adapter's weights file (None: the bare base model)
    for name, uri in models.items():
        weights[name] = download_output(uri, work / name) / WEIGHTS_NAME if uri else None
        if uri:
            pipe.load_lora_weights(str(weights[name].parent), weight_name=WEIGHTS_NAME, adapter_name=name)
    sdxl = getattr(pipe.unet.config, "addition_embed_type", None) == "text_time"
    tokenizers = [pipe.tokenizer] + ([pipe.tokenizer_2] if sdxl else [])
    encoders = [pipe.text_encoder] + ([pipe.text_encoder_2] if sdxl else [])
    parts = Components(config["base_model"], pipe.unet, pipe.vae, DDPMScheduler.from_config(pipe.scheduler.config),
                       tokenizers, encoders, sdxl, device, dtype)
    limit = int(config.get("max_eval_images", MAX_EVAL_IMAGES))
    held_out = split_items(manifest, VAL)
    pair_sets = {"pairs": held_out_pairs(manifest), "reference_pairs": reference_pairs(manifest)}
    sets = {"val": _subset(held_out, limit), "reference": _subset(reference_items(manifest), limit),
            **{name: _pair_images(pairs, limit) for name, pairs in pair_sets.items()}}
    data = {name: PreparedData(parts, [Example.from_manifest(i) for i in items], resolution, config.get("cache_dir"),
                               cache_text=False) for name, items in sets.items()}
    paired = {name: _aligned(sets[name], data[name]) for name in sets}
    for name, pairs in pair_sets.items():
        paired[name]["pairs"] = _pair_index(pairs, paired[name]["ids"])
    # The colour statistics the renders should stay near: the well-rated generated images held
    # out this week and earlier weeks (covers are the catalogue's look, not what users rated).
    liked = [i["uri"] for name in ("val", "reference") for i in _by_uri(sets[name], data[name])
             if i.get("source") == "generated"]
    target = image_stats([_load(uri, resolution) for uri in liked]) if liked else None
    notes = [held_out_note(len(held_out), len(data["val"].examples))]
    if sets["reference"]:
        notes.append(f"reference: {len(data['reference'].examples)} held-out image(s) of "
                     f"{len(set(paired['reference']['weeks']))} earlier promoted week(s)")
    if paired["reference_pairs"]["pairs"]:
        notes.append(f"reference pairs: {len(paired['reference_pairs']['pairs'])} held-out preference pair(s) of "
                     f"earlier promoted weeks")
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
        # An image is computed once per model: across the sets it is in (a liked held-out cover
        # is also in a pair) and across weeks (the champion saw the reference last week).
        memo = LossMemo.open(config.get("cache_dir"), parts, resolution, weights[name])
        for set_name, prepared in data.items():
            paired[set_name][name] = validation_losses(parts, prepared, memo=memo)
        memo.save()
        losses = paired["val"][name]
        m = {"val_loss": sum(losses) / len(losses) if losses else None,  # None, not NaN: results are JSON
             **{k: v for k, v in stats.items() if not isinstance(v, list)}}
        if paired["reference"][name]:
            m["reference_loss"] = sum(paired["reference"][name]) / len(paired["reference"][name])
        if target:
            m["stat_distance"] = stat_distance(stats, target)
        if clip:
            per_prompt[name] = clip_scores(images, prompts, clip)
            m["clip_score"] = sum(per_prompt[name]) / len(per_prompt[name])
        metrics[name] = m
    sheet = contact_sheet(columns, prompts, work / "contact_sheet.png")
    store, prefix = output_location(output_uri)
    store.put_file(prefix + "contact_sheet.png", sheet, content_type="image/png")
    result = {"eval_set_version": eval_set["version"], "champion_is_base": not models["champion"],
              "metrics": metrics, "notes": notes, "contact_sheet_uri": store.uri(prefix + "contact_sheet.png"),
              "val_split": VAL, "val_images": len(data["val"].examples), "reference_images": len(data["reference"].examples),
              "paired": paired, "clip_model": clip_model, "clip_scores": per_prompt}
    from sleeve.store import write_json

    write_json(store, prefix + "metrics.json", result)
    return result


def _subset(items: list[dict], limit: int) -> list[dict]:
    """At most ``limit`` items, the same ones every time: the lowest content hashes (a stable
    sample across sources and weeks, unlike the manifest's order)."""
    return sorted(items, key=lambda i: (i.get("sha256") or "", i.get("uri") or ""))[:max(0, limit)]


def _pair_images(pairs: list[dict], limit: int) -> list[dict]:
    """The pairs' images, each once (with its request's prompt as caption), at most ``limit``,
    by request so that no pair loses one side."""
    images: dict[str, dict] = {}
    for pair in sorted(pairs,
                       key=lambda p: (p["request_id"], p["preferred"]["sha256"], p["dispreferred"]["sha256"])):
        sides = [pair[side] for side in ("preferred", "dispreferred")]
        new = [s for s in sides if s["sha256"] not in images]
        if len(images) + len(new) > limit:
            break
        for side in new:
            images[side["sha256"]] = {"source": "generated", "ref": side["ref"], "uri": side["uri"],
                                      "sha256": side["sha256"], "caption": pair.get("caption", "")}
    return list(images.values())


def _pair_index(pairs: list[dict], ids: list[str]) -> list[list]:
    """[preferred index, dispreferred index, request id] of each pair whose two images were
    evaluated (``ids``: the evaluated images' content hashes, in loss order)."""
    index = {sha: n for n, sha in enumerate(ids)}
    return [[index[p["preferred"]["sha256"]], index[p["dispreferred"]["sha256"]], p["request_id"]]
            for p in pairs if p["preferred"]["sha256"] in index and p["dispreferred"]["sha256"] in index]


def _by_uri(items: list[dict], prepared) -> list[dict]:
    """The manifest item of each readable example, in the examples' order."""
    by_uri = {i["uri"]: i for i in items}
    return [by_uri[e.uri] for e in prepared.examples]


def _aligned(items: list[dict], prepared) -> dict:
    """Which images the losses belong to (the readable ones, in order), filled per model."""
    kept = _by_uri(items, prepared)
    return {"ids": [i.get("sha256") or i["uri"] for i in kept], "sources": [i.get("source") for i in kept],
            "weeks": [i.get("week") for i in kept]}


def _load(uri: str, resolution: int):
    from training.dataset import decode_image, read_image_bytes

    return decode_image(read_image_bytes(uri)).resize((resolution, resolution))


if __name__ == "__main__":
    run_job(main)
