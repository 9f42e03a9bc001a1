"""GPU job: train the weekly style LoRA from a snapshot manifest.

    python -m training.train_job --manifest <snapshot URI> --config '<json>' --output <URI prefix>
    accelerate launch -m training.train_job ...     # several GPUs (data-parallel)

Config: ``train`` (a :class:`training.trainer.TrainConfig` dict; ``base_model`` required),
``version`` (registry version name for the card), ``rating_weighted`` (bool, default false),
``work_dir`` (folder for resumable checkpoints, shared by all processes of the job; a retried
task that passes the same one resumes; default: inside the job's scratch folder, which does not
outlive a killed job), ``cache_dir`` (latent/text caches shared across weeks), ``kind``
(style|dreambooth). ``train.objective`` sft | dpo | sft+dpo picks the loss (DPO learns from the
manifest's train preference pairs against ``train.reference``, the production adapter; the pairs
are part of the checkpoints' fingerprint). Only the snapshot's ``train`` split is trained on; its
held-out ``val`` items are left for the evaluation gate. Output: the adapter folder (weights,
kohya copy, card, config) under ``--output`` and a result manifest with ``adapter_uri``, losses,
cache statistics, the number of train / held-out examples and pairs, ``objective``,
``resumed_from`` and ``resume`` (where it resumed, or why it started fresh), ``world_size``,
``rank_digests`` and ``gpu_seconds``. Once the adapter is uploaded its checkpoints are deleted.
The adapter is assembled in the job's scratch folder (:mod:`sleeve.scratch`).
"""

from __future__ import annotations

from pathlib import Path

from sleeve.ids import content_hash
from sleeve.jobs import is_main_process, run_job, upload_output
from sleeve.scratch import job_scratch
from training.checkpoints import clear as clear_checkpoints
from training.dataset import Example
from training.dpo import pairs_from_manifest
from training.snapshot import TRAIN, VAL, split_items
from training.trainer import TrainConfig, train_lora, write_model_card


def examples_from_manifest(manifest: dict, rating_weighted: bool = False) -> list[Example]:
    """The snapshot's ``train`` split as examples (held-out items never reach the trainer); with
    ``rating_weighted`` a generated image's loss weight is its mean rating over the mean rating
    of the generated train images (mean weight 1; covers weigh 1)."""
    items = split_items(manifest, TRAIN)
    ratings = [i["rating"] for i in items if i.get("rating") is not None]
    mean = sum(ratings) / len(ratings) if ratings else 1.0
    out = []
    for item in items:
        weight = item["rating"] / mean if rating_weighted and item.get("rating") is not None else 1.0
        out.append(Example(uri=item["uri"], caption=item.get("caption", ""), sha256=item.get("sha256", ""),
                           weight=round(weight, 6)))
    return out


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    train_config = TrainConfig.from_dict(dict(config["train"]))
    examples = examples_from_manifest(manifest, bool(config.get("rating_weighted", False)))
    pairs = pairs_from_manifest(manifest, TRAIN) if train_config.objective != "sft" else []
    if train_config.objective == "sft+dpo" and not pairs:  # a week without pairs still learns its liked images
        train_config.objective = "sft"
    with job_scratch(f"train-{content_hash(output_uri)[:16]}") as folder:
        out_dir, work_dir = folder / "adapter", Path(config.get("work_dir") or folder / "work")
        result = train_lora(train_config, examples, out_dir, pairs=pairs, work_dir=work_dir,
                            cache_dir=config.get("cache_dir"))
        if not is_main_process():
            return {}
        manifest_uri = config.get("manifest_uri", "")
        write_model_card(out_dir, train_config, manifest_uri=manifest_uri, counts=manifest.get("counts", {}),
                         result=result, version=config.get("version", "unversioned"), kind=config.get("kind", "style"))
        upload_output(output_uri, out_dir)
        clear_checkpoints(work_dir)
    return {
        "adapter_uri": output_uri.rstrip("/"), "steps": result.steps, "resumed_from": result.resumed_from,
        "resume": result.resume_note, "final_loss": result.final_loss, "losses": result.losses,
        "cache": result.cache, "rank": result.rank, "alpha": result.alpha, "mixed_precision": result.mixed_precision,
        "train_seconds": result.seconds, "world_size": result.world_size, "rank_digests": result.rank_digests,
        "examples": len(examples) if train_config.objective != "dpo" else 0, "pairs": len(pairs),
        "objective": train_config.objective, "held_out": len(split_items(manifest, VAL)),
    }


if __name__ == "__main__":
    run_job(main)
