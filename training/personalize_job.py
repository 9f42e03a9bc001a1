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

Personal data stays under the user's prefix ``users/<user_id>/`` of the store: the photos must
lie there, and the training's checkpoints are kept there too
(``users/<user_id>/personalize/<request_id>/checkpoints/``), so a retry resumes on whichever
worker it runs and ``forget_user`` deletes them with the rest; they go once the adapter is
complete. On the worker, latents, local checkpoints and the adapter before upload live in the
job's scratch folder (:mod:`sleeve.scratch`), removed when the job ends; a killed job's folder
is swept by the next job on that worker or by ``forget_user``.
"""

from __future__ import annotations

from sleeve.jobs import output_location, run_job, upload_output
from sleeve.keys import personalize_prefix, user_prefix
from sleeve.scratch import job_scratch
from sleeve.store import read_json, write_json
from training.checkpoints import clear as clear_checkpoints

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


def _under(uri: str, home: str) -> bool:
    from sleeve.store import StoreError, check_key

    try:
        return uri.startswith(home) and bool(check_key(uri[len(home):]))
    except StoreError:  # '..', '//', ...
        return False


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    from training.dataset import Example
    from training.dreambooth import choose_token, class_prompt, instance_prompt
    from training.trainer import TrainConfig, train_lora, write_model_card

    missing = [k for k in ("request_id", "user_id", "class_noun", "photo_uris", "base_model")
                if not manifest.get(k)]
    if missing:
        raise ValueError(f"personalize manifest lacks {missing}")
    user_id, request_id = manifest["user_id"], manifest["request_id"]
    out_store, prefix = output_location(output_uri)
    # Everything of the user is read and written under <store>/users/<user_id>/ only.
    marker = "/" + user_prefix(user_id)
    if marker not in output_uri or not _under(output_uri, output_uri[:output_uri.index(marker) + len(marker)]):
        raise ValueError(f"personalize job for user {user_id}: the output {output_uri} is not under .../{marker[1:]}")
    home = output_uri[:output_uri.index(marker) + len(marker)]
    outside = [i for i, uri in enumerate(manifest["photo_uris"], start=1) if not _under(str(uri), home)]
    if outside:
        raise ValueError(f"personalize job for user {user_id}: photo(s) {outside} lie outside {home}")
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
    checkpoints = home[:-len(user_prefix(user_id))] + personalize_prefix(user_id, request_id) + "checkpoints"
    with job_scratch(f"personalize-{request_id}", user_id=user_id) as folder:
        out_dir, work_dir = folder / "adapter", folder / "work"
        trained = train_lora(train_config, examples, out_dir, class_examples=priors or None, work_dir=work_dir,
                             cache_dir=folder / "cache", checkpoint_mirror=checkpoints)
        if trained.cache.get("dropped_images"):
            raise ValueError(f"{len(trained.cache['dropped_images'])} photo(s) could not be read for training")
        record = {
            "request_id": manifest["request_id"], "user_id": manifest["user_id"], "kind": "dreambooth",
            "token": token, "class_noun": noun, "instance_prompt": instance_prompt(token, noun),
            "class_prompt": class_prompt(noun), "class_images": class_uris, "class_cache_hit": cache_hit,
            "prior_loss_weight": train_config.prior_loss_weight,
            "train_text_encoder": train_config.train_text_encoder, "photos": len(examples),
            "base_model": base_model, "steps": trained.steps, "resumed_from": trained.resumed_from,
            "resume": trained.resume_note, "final_loss": trained.final_loss,
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
        clear_checkpoints(work_dir, checkpoints)
    return record


if __name__ == "__main__":
    run_job(main)
