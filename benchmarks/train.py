"""`make bench` part: Sleeve's LoRA trainer vs a reference loop written the way diffusers'
``examples/text_to_image/train_text_to_image_lora_sdxl.py`` does it, end to end, and what the
content-keyed caches save on a second run over the same images.

Both sides, same tiny SDXL, images, captions, steps, batch size, resolution, LoRA (rank 4 on
the attention projections), AdamW, min-SNR gamma 5, fp32 on CPU, no gradient checkpointing,
clock from model loading to the saved ``pytorch_lora_weights.safetensors``:

- reference (this file, after the diffusers script): ``from_pretrained`` of each part, a
  peft ``LoraConfig`` adapter, an on-the-fly dataset (decode, resize, centre-crop, normalise,
  tokenize per access) in a shuffling ``DataLoader``, and every step ``vae.encode(...)
  .latent_dist.sample()`` and both text encoders, ``accelerator.gather(loss).mean().item()``,
  clipped AdamW step; ``save_lora_weights`` at the end.
- Sleeve: :func:`training.trainer.train_lora` with an empty cache directory (first run): every
  image is decoded and encoded once, every caption once, then the loop reads them.

``epoch2_speedup_from_cache``: Sleeve's first run (empty cache) vs a second run over the same
images with the cache it left, at 128 px from 600 px covers, one epoch, where decoding and
encoding are a real share of the work. Rounds alternate the two sides, after one untimed
1-step run of each (imports, first-call costs). Ratios are taken from process CPU time: both
sides run single-threaded in this process, and on a shared machine wall time mostly measures
the other tenants (wall times are reported too).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

ROUNDS = 3
RANK, LEARNING_RATE, SNR_GAMMA = 4, 1e-4, 5.0
COMPARE = {"images": 8, "batch": 2, "steps": 12, "resolution": 64, "source_px": 96}
CACHE = {"images": 8, "batch": 2, "steps": 4, "resolution": 128, "source_px": 600}
TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]

DESCRIPTIONS = {
    "train_speedup_vs_reference": (
        "LoRA training end to end (load, data, 12 steps of batch 2 at 64 px, save), tiny SDXL, CPU: a loop "
        "written like diffusers' train_text_to_image_lora_sdxl.py (encodes images and captions every step) "
        "vs Sleeve's trainer on a first run (encodes each image and caption once); reference CPU time / Sleeve CPU "
        "time"),
    "epoch2_speedup_from_cache": (
        "Sleeve's trainer at 128 px on 600 px covers, one epoch, load to save: first run (empty latent/text "
        "cache) CPU time / second run over the same images (warm cache) CPU time"),
}


def make_examples(directory: Path, images: int, source_px: int):
    """Procedural covers (blocky colour fields, so PNG decoding costs what a real cover's does)."""
    import numpy as np
    from PIL import Image

    from training.dataset import Example

    out = []
    for i in range(images):
        rng = np.random.default_rng(i)
        tiles = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
        image = Image.fromarray(tiles).resize((source_px, source_px), Image.Resampling.BICUBIC)
        path = directory / f"cover-{i}.png"
        image.save(path)
        out.append(Example(uri=str(path), caption=f"album cover art {i}, blue sea at night, oil painting",
                           sha256=f"bench-{source_px}-{i}"))
    return out


def reference_run(base_model: str, examples, *, batch: int, steps: int, resolution: int, output_dir: Path
                  ) -> tuple[float, float]:
    """(wall, CPU) seconds for the diffusers-script loop, load to saved weights."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import compute_snr
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from PIL import Image
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    started, cpu = time.perf_counter(), time.process_time()
    accelerator = Accelerator(mixed_precision="no", cpu=True)
    tokenizers = [AutoTokenizer.from_pretrained(base_model, subfolder=s, use_fast=False)
                  for s in ("tokenizer", "tokenizer_2")]
    noise_scheduler = DDPMScheduler.from_pretrained(base_model, subfolder="scheduler")
    text_encoders = [CLIPTextModel.from_pretrained(base_model, subfolder="text_encoder"),
                     CLIPTextModelWithProjection.from_pretrained(base_model, subfolder="text_encoder_2")]
    vae = AutoencoderKL.from_pretrained(base_model, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base_model, subfolder="unet")
    for model in (vae, unet, *text_encoders):
        model.requires_grad_(False)
        model.to(accelerator.device)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, init_lora_weights="gaussian", target_modules=TARGETS))
    lora_params = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(lora_params, lr=LEARNING_RATE, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)

    def tokenize(tokenizer, captions):
        return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                         return_tensors="pt").input_ids

    class Covers(torch.utils.data.Dataset):  # the script's `with_transform(preprocess_train)`
        def __len__(self):
            return len(examples)

        def __getitem__(self, i):
            image = Image.open(examples[i].uri).convert("RGB")
            original = (image.height, image.width)
            scale = resolution / min(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BILINEAR)
            top, left = (image.height - resolution) // 2, (image.width - resolution) // 2
            image = image.crop((left, top, left + resolution, top + resolution))
            pixels = torch.from_numpy(np.asarray(image, dtype=np.float32) / 127.5 - 1.0).permute(2, 0, 1)
            return {"pixel_values": pixels, "original_size": original, "crop_top_left": (top, left),
                    "ids": [tokenize(t, [examples[i].caption])[0] for t in tokenizers]}

    def collate(items):
        return {"pixel_values": torch.stack([x["pixel_values"] for x in items]).float(),
                "original_sizes": [x["original_size"] for x in items],
                "crop_top_lefts": [x["crop_top_left"] for x in items],
                "ids": [torch.stack([x["ids"][k] for x in items]) for k in range(2)]}

    loader = torch.utils.data.DataLoader(Covers(), shuffle=True, batch_size=batch, collate_fn=collate,
                                         generator=torch.Generator().manual_seed(0))
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=steps)
    unet, optimizer, loader, lr_scheduler = accelerator.prepare(unet, optimizer, loader, lr_scheduler)
    step = 0
    while step < steps:
        unet.train()
        for data in loader:
            with accelerator.accumulate(unet):
                latents = vae.encode(data["pixel_values"]).latent_dist.sample() * vae.config.scaling_factor
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                time_ids = torch.tensor([list(o + c + (resolution, resolution))
                                         for o, c in zip(data["original_sizes"], data["crop_top_lefts"], strict=True)],
                                        dtype=torch.float32)
                embeds = []
                for encoder, ids in zip(text_encoders, data["ids"], strict=True):
                    out = encoder(ids, output_hidden_states=True)
                    pooled = out[0]
                    embeds.append(out.hidden_states[-2])
                pred = unet(noisy, timesteps, torch.cat(embeds, dim=-1),
                            added_cond_kwargs={"time_ids": time_ids, "text_embeds": pooled}).sample
                snr = compute_snr(noise_scheduler, timesteps)
                weights = torch.stack([snr, SNR_GAMMA * torch.ones_like(timesteps)], dim=1).min(dim=1)[0] / snr
                loss = F.mse_loss(pred.float(), noise.float(), reduction="none").mean(dim=(1, 2, 3))
                loss = (loss * weights).mean()
                accelerator.gather(loss.repeat(batch)).mean().item()  # the script's train_loss logging
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(lora_params, 1.0)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
            step += 1
            if step >= steps:
                break
    unet = accelerator.unwrap_model(unet)
    StableDiffusionXLPipeline.save_lora_weights(
        output_dir, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)))
    return time.perf_counter() - started, time.process_time() - cpu


def sleeve_run(base_model: str, examples, *, batch: int, steps: int, resolution: int, output_dir: Path,
               cache_dir: Path):
    from training.trainer import TrainConfig, train_lora

    config = TrainConfig(base_model=base_model, resolution=resolution, rank=RANK, learning_rate=LEARNING_RATE,
                         steps=steps, batch_size=batch, gradient_checkpointing=False, snr_gamma=SNR_GAMMA)
    started, cpu = time.perf_counter(), time.process_time()
    result = train_lora(config, examples, output_dir, cache_dir=cache_dir)
    return time.perf_counter() - started, time.process_time() - cpu, result


def run() -> dict:
    from sleeve.jobs import configure_cpu_threads
    from sleeve.settings import get_settings
    from sleeve.tinymodel import ensure_tiny_sdxl

    configure_cpu_threads()
    base = str(ensure_tiny_sdxl(get_settings().tiny_model_dir))
    shape = {k: v for k, v in COMPARE.items() if k in ("batch", "steps", "resolution")}
    cache_shape = {k: v for k, v in CACHE.items() if k in ("batch", "steps", "resolution")}
    sides = ("reference", "sleeve", "cold", "warm")
    wall, cpu = {k: [] for k in sides}, {k: [] for k in sides}
    prepare_cold, prepare_warm, hits = [], [], []

    def record(name, seconds):
        wall[name].append(seconds[0])
        cpu[name].append(seconds[1])

    with tempfile.TemporaryDirectory(prefix="sleeve-bench-train-") as tmp:
        tmp = Path(tmp)
        (tmp / "compare").mkdir()
        (tmp / "cache-data").mkdir()
        examples = make_examples(tmp / "compare", COMPARE["images"], COMPARE["source_px"])
        cache_examples = make_examples(tmp / "cache-data", CACHE["images"], CACHE["source_px"])
        warm_up = {**shape, "steps": 1}
        reference_run(base, examples[:2], output_dir=tmp / "warm-up-ref", **warm_up)
        sleeve_run(base, examples[:2], output_dir=tmp / "warm-up", cache_dir=tmp / "warm-up-cache", **warm_up)
        for n in range(ROUNDS):
            record("reference", reference_run(base, examples, output_dir=tmp / f"ref-{n}", **shape))
            *seconds, _ = sleeve_run(base, examples, output_dir=tmp / f"sleeve-{n}", cache_dir=tmp / f"c-{n}", **shape)
            record("sleeve", seconds)
            *seconds, first = sleeve_run(base, cache_examples, output_dir=tmp / f"cold-{n}", cache_dir=tmp / f"w-{n}",
                                         **cache_shape)
            record("cold", seconds)
            *seconds, second = sleeve_run(base, cache_examples, output_dir=tmp / f"warm-{n}",
                                          cache_dir=tmp / f"w-{n}", **cache_shape)
            record("warm", seconds)
            prepare_cold.append(first.seconds - first.loop_seconds)
            prepare_warm.append(second.seconds - second.loop_seconds)
            hits.append(second.cache["latent_hits"])

    def ratio(a, b, times=cpu):
        return [x / y for x, y in zip(times[a], times[b], strict=True)]

    return {
        "train_compare_config": "{images} images from {source_px} px, batch {batch}, {steps} steps, "
                                "{resolution} px".format(**COMPARE),
        "train_cache_config": "{images} images from {source_px} px, batch {batch}, {steps} steps, "
                              "{resolution} px".format(**CACHE),
        "train_reference_cpu_s": cpu["reference"], "train_sleeve_cpu_s": cpu["sleeve"],
        "train_reference_wall_s": wall["reference"], "train_sleeve_wall_s": wall["sleeve"],
        "train_speedup_vs_reference": ratio("reference", "sleeve"),
        "train_speedup_vs_reference_wall": ratio("reference", "sleeve", wall),
        "train_epoch1_cpu_s": cpu["cold"], "train_epoch2_cpu_s": cpu["warm"],
        "epoch2_speedup_from_cache": ratio("cold", "warm"),
        "epoch2_speedup_from_cache_wall": ratio("cold", "warm", wall),
        "train_epoch2_prepare_speedup_wall": [c / max(w, 1e-9) for c, w in zip(prepare_cold, prepare_warm, strict=True)],
        "train_epoch2_latent_cache_hits": min(hits),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
