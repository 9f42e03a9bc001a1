"""GPU job: train one user's DreamBooth LoRA (file in, file out; see :mod:`sleeve.jobs`).

    python -m training.personalize_job --manifest URI --config JSON --output URI

Manifest (written by :func:`training.dreambooth.write_train_manifest`)::

    {"request_id", "user_id", "class_noun", "photo_uris": [...], "base_model", "model_version",
     "class_image_uris": [...], "class_cache_hit"}

The class (prior-preservation) images are made beforehand by the batch generator (the DAG's
``class_images`` step). Config: any :class:`training.trainer.TrainConfig` field (steps, rank,
learning_rate, train_text_encoder, prior_loss_weight, ...). Output (the user's adapter folder, e.g. ``users/<id>/adapters/<request>/``):
the trainer's ``pytorch_lora_weights.safetensors`` + kohya copy + ``training_config.json``, the
model card, ``dreambooth.json`` (token, prompts, class images) and ``result.json``. A re-run
whose output already holds a finished adapter returns it without training again.

Personal data stays in the store: latents and checkpoints live in a temporary folder that is
removed when the job ends, so nothing of the user's face is left on the GPU worker.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sleeve.jobs import output_location, run_job, upload_output
from sleeve.store import read_json, write_json

RECORD = "dreambooth.json"


def tokenizer_vocab(base_model: str) -> set[str]:
    """Every entry of the base model's tokenizers (SD 1.5 has one, SDXL two)."""
    from transformers import CLIPTokenizer

    vocab: set[str] = set()
    for sub in ("tokenizer", "tokenizer_2"):
        try:
            vocab |= set(CLIPTokenizer.from_pretrained(base_model, subfolder=sub).get_vocab())
        except (OSError, ValueError):
            continue  # SD 1.5: no second tokenizer
    if not vocab:
        raise ValueError(f"base model {base_model} has no CLIP tokenizer")
    return vocab


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    from training.dataset import Example
    from training.dreambooth import choose_token, class_prompt, instance_prompt
    from training.trainer import TrainConfig, train_lora, write_model_card

    missing = [k for k in ("request_id", "user_id", "class_noun", "photo_uris", "base_model")
                if not manifest.get(k)]
    if missing:
        raise ValueError(f"personalize manifest lacks {missing}")
    out_store, prefix = output_location(output_uri)
    if out_store.exists(prefix + RECORD) and out_store.exists(prefix + "pytorch_lora_weights.safetensors"):
        print("adapter already trained for this request: reusing it", flush=True)
        return {**read_json(out_store, prefix + RECORD), "reused": True, "gpu_seconds": 0.0}

    base_model, noun = manifest["base_model"], manifest["class_noun"]
    train_config = TrainConfig.from_dict({"base_model": base_model, **config})
    token = choose_token(manifest["user_id"], tokenizer_vocab(base_model))
    class_uris, cache_hit = manifest.get("class_image_uris") or [], bool(manifest.get("class_cache_hit"))
    print(f"class images: {len(class_uris)} ({'cached' if cache_hit else 'generated'})", flush=True)

    examples = [Example(uri=uri, caption=instance_prompt(token, noun)) for uri in manifest["photo_uris"]]
    priors = [Example(uri=uri, caption=class_prompt(noun), is_prior=True) for uri in class_uris]
    with tempfile.TemporaryDirectory(prefix="personalize-") as tmp:
        out_dir = Path(tmp) / "adapter"
        trained = train_lora(train_config, examples, out_dir, class_examples=priors or None,
                             work_dir=Path(tmp) / "work", cache_dir=Path(tmp) / "cache")
        if trained.cache.get("dropped_images"):
            raise ValueError(f"{len(trained.cache['dropped_images'])} photo(s) could not be read for training")
        record = {
            "request_id": manifest["request_id"], "user_id": manifest["user_id"], "kind": "dreambooth",
            "token": token, "class_noun": noun, "instance_prompt": instance_prompt(token, noun),
            "class_prompt": class_prompt(noun), "class_images": class_uris, "class_cache_hit": cache_hit,
            "prior_loss_weight": train_config.prior_loss_weight,
            "train_text_encoder": train_config.train_text_encoder, "photos": len(examples),
            "base_model": base_model, "steps": trained.steps, "final_loss": trained.final_loss,
            "rank": trained.rank, "alpha": trained.alpha, "mixed_precision": trained.mixed_precision,
            "train_seconds": trained.seconds, "adapter_uri": output_uri.rstrip("/"),
            "weights_uri": output_uri.rstrip("/") + "/pytorch_lora_weights.safetensors",
        }
        card = write_model_card(out_dir, train_config, manifest_uri=manifest.get("manifest_uri", ""),
                                counts={"photos": len(examples), "class_images": len(priors)}, result=trained,
                                version=manifest.get("model_version", "unversioned"), kind="dreambooth")
        with card.open("a") as f:  # the DreamBooth specifics; no photo, no user data
            f.write(f"\n## DreamBooth\n- Instance prompt: `{record['instance_prompt']}`\n"
                    f"- Class prompt: `{record['class_prompt']}` ({len(priors)} prior images, "
                    f"prior loss weight {train_config.prior_loss_weight})\n"
                    f"- Text-encoder LoRA: {train_config.train_text_encoder}\n")
        upload_output(output_uri, out_dir)
    # The record goes last: its presence means the adapter is complete.
    write_json(out_store, prefix + RECORD, record)
    return record


if __name__ == "__main__":
    run_job(main)
