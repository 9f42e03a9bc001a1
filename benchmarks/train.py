"""`make bench` part: the LoRA trainer vs a plain diffusers + peft loop, and caching's effect.

Same tiny SDXL, same images, batch size, steps, resolution and LoRA config. The plain loop
does what a first training script does: every step decodes the images and runs the VAE and both
text encoders. Ours reads latents/text embeddings from the content-keyed caches. "epoch 2" is
a second run over the same data with the caches warm (next week's run over mostly-seen images).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

STEPS, BATCH, IMAGES = 12, 2, 8


def _examples(directory: Path):
    import io

    import numpy as np
    from PIL import Image

    from training.dataset import Example

    out = []
    for i in range(IMAGES):
        rng = np.random.default_rng(i)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).resize((96, 96)).save(buf, format="PNG")
        path = directory / f"{i}.png"
        path.write_bytes(buf.getvalue())
        out.append(Example(uri=str(path), caption=f"album cover art {i} blue sea", sha256=f"bench-{i}"))
    return out


def plain_loop(base_model: str, examples, steps: int = STEPS) -> float:
    """Seconds for ``steps`` steps of an uncached diffusers+peft LoRA loop (loop only)."""
    import torch

    from training.dataset import decode_image, preprocess, read_image_bytes
    from training.trainer import (
        TrainConfig,
        add_lora,
        encode_image,
        encode_prompts,
        load_components,
        per_sample_loss,
    )

    config = TrainConfig(base_model=base_model, steps=steps, batch_size=BATCH, gradient_checkpointing=False)
    parts = load_components(base_model)
    groups = add_lora(parts, config)
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for step in range(steps):
        batch = [examples[(step * BATCH + j) % len(examples)] for j in range(BATCH)]
        prepared = [preprocess(decode_image(read_image_bytes(e.uri)), config.resolution) for e in batch]
        latents = torch.stack([encode_image(parts, t) for t, _ in prepared])
        time_ids = torch.tensor([ids for _, ids in prepared], dtype=torch.float32)
        with torch.no_grad():
            cond = encode_prompts(parts, [e.caption for e in batch])
        noise = torch.randn(latents.shape, generator=gen)
        timesteps = torch.randint(0, 1000, (BATCH,), generator=gen)
        loss = per_sample_loss(parts, latents, cond, time_ids, timesteps, noise, config.snr_gamma).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def run() -> dict:
    from sleeve.jobs import configure_cpu_threads
    from sleeve.settings import get_settings
    from sleeve.tinymodel import ensure_tiny_sdxl
    from training.trainer import TrainConfig, train_lora

    configure_cpu_threads()
    settings = get_settings()
    base = str(ensure_tiny_sdxl(settings.tiny_model_dir) if settings.base_model == str(settings.tiny_model_dir)
               else settings.base_model)
    with tempfile.TemporaryDirectory(prefix="sleeve-bench-") as tmp:
        tmp = Path(tmp)
        examples = _examples(tmp)
        config = dict(base_model=base, steps=STEPS, batch_size=BATCH, gradient_checkpointing=False)
        plain = plain_loop(base, examples)
        cold = train_lora(TrainConfig(**config), examples, tmp / "cold", cache_dir=tmp / "cache")
        warm = train_lora(TrainConfig(**config), examples, tmp / "warm", cache_dir=tmp / "cache")
    prep_cold, prep_warm = cold.seconds - cold.loop_seconds, warm.seconds - warm.loop_seconds
    return {
        "name": "training: LoRA trainer vs plain diffusers+peft loop (tiny SDXL, CPU)",
        "metrics": {
            "plain_step_s": round(plain / STEPS, 4),
            "sleeve_step_s": round(warm.loop_seconds / STEPS, 4),
            "sleeve_epoch1_total_s": cold.seconds, "sleeve_epoch2_total_s": warm.seconds,
            "sleeve_epoch1_prepare_s": round(prep_cold, 3), "sleeve_epoch2_prepare_s": round(prep_warm, 3),
            "epoch2_latent_cache_hits": warm.cache["latent_hits"],
        },
        "ratios": {
            "step_speedup_vs_plain": round(plain / max(warm.loop_seconds, 1e-9), 2),
            "epoch2_speedup_from_cache": round(cold.seconds / max(warm.seconds, 1e-9), 2),
            "epoch2_prepare_speedup": round(prep_cold / max(prep_warm, 1e-9), 2),
        },
        "notes": f"{IMAGES} images, batch {BATCH}, {STEPS} steps, 64px, fp32 CPU, 1 torch thread; totals include "
                 "model loading; the plain loop re-encodes images and captions every step.",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
