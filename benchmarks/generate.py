"""`make bench` part: the batch generator vs stock batched diffusers, doing the same work.

Same tiny SDXL, size, steps, guidance, negative prompt, prompts and per-image seeds, on CPU,
both loaded once before the clock starts, both ending with PIL images. Stock is what a
competent diffusers user writes: one ``pipe(prompt=[4 prompts], num_images_per_prompt=4,
generator=[16 generators])`` call per 16 images. Sleeve is its generator's render path: each
request in its own forward pass (so its bytes cannot depend on other requests), one generator
per image. Storing (PNG with metadata, thumbnail, record) is Sleeve's own extra and is left
out of both. Each round alternates stock and Sleeve every 16 images; the ratio is taken per round from process CPU
time (both sides run single-threaded in this process, and the machine is shared: wall time
counts other tenants' load too); the wall-time ratio is reported beside it.

Padding waste is counted, not timed: the images the generator computed minus the images it
stored, over a shard of mixed request sizes (4 images, which the old fixed-shape batches padded
to 8, then 1, 3 and 6), divided by the images stored.
"""

from __future__ import annotations

import tempfile
import time

ROUNDS = 3
PROMPTS = [f"album cover of a {c} {t} at night, film grain" for c in ("blue", "red", "gold")
           for t in ("ocean", "city", "road", "heart")]
NEGATIVE = "text, lettering"
IMAGES_PER_PROMPT, SIZE, STEPS, GUIDANCE = 4, 64, 4, 5.0
STOCK_PROMPTS_PER_CALL = 4  # 16 images per call
WASTE_SHARD = (4, 1, 3, 6)  # images per request

DESCRIPTIONS = {
    "generation_speedup_vs_stock_batched": (
        "48 covers (12 prompts x 4) to PIL images, tiny SDXL 64 px, 4 steps, CPU, 1 thread: stock diffusers "
        "batching 16 images per pipe() call (num_images_per_prompt, per-image generators) vs Sleeve's "
        "generator (one pass per request); stock CPU time / Sleeve CPU time"),
    "generation_padding_waste": (
        "images computed and thrown away / images stored, Sleeve's generator on a shard of 4-, 1-, 3- and "
        "6-image requests (the old fixed batch of 8 padded the 4-image request to 8)"),
}


def _requests(prefix: str) -> list[dict]:
    return [{"request_id": f"{prefix}-{i}", "prompt": p, "negative_prompt": NEGATIVE, "num_images": IMAGES_PER_PROMPT}
            for i, p in enumerate(PROMPTS)]


def _timed(fn, *args) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def stock_call(pipe, group: int, seeds: list[int]) -> list:
    """Stock's call for prompts group*4 .. group*4+3: 16 images in one batched pipe() call."""
    import torch

    start = group * STOCK_PROMPTS_PER_CALL
    prompts = PROMPTS[start:start + STOCK_PROMPTS_PER_CALL]
    first = start * IMAGES_PER_PROMPT
    generators = [torch.Generator().manual_seed(s) for s in seeds[first:first + len(prompts) * IMAGES_PER_PROMPT]]
    return pipe(prompt=prompts, negative_prompt=[NEGATIVE] * len(prompts), num_images_per_prompt=IMAGES_PER_PROMPT,
                width=SIZE, height=SIZE, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                generator=generators).images


def sleeve_call(gen, group: int) -> list:
    """What :meth:`CoverGenerator.generate` renders for the same 4 requests, without storing."""
    from inference.generator import Request, chunks, expand

    start = group * STOCK_PROMPTS_PER_CALL
    images = []
    for row in _requests("bench")[start:start + STOCK_PROMPTS_PER_CALL]:
        for chunk in chunks(expand(Request.from_dict(row), gen.defaults)):
            images += gen.render(chunk)
    return images


def run() -> dict:
    import torch
    from diffusers import DiffusionPipeline

    from inference.generator import CoverGenerator, Defaults, image_seed
    from sleeve.jobs import configure_cpu_threads
    from sleeve.settings import get_settings
    from sleeve.store import open_store
    from sleeve.tinymodel import ensure_tiny_sdxl

    configure_cpu_threads()  # the threads a CPU generate job gets (SLEEVE_TORCH_THREADS), on both sides
    model = str(ensure_tiny_sdxl(get_settings().tiny_model_dir))
    defaults = Defaults(width=SIZE, height=SIZE, steps=STEPS, guidance_scale=GUIDANCE)
    stock_pipe = DiffusionPipeline.from_pretrained(model)
    stock_pipe.set_progress_bar_config(disable=True)
    gen = CoverGenerator(model, defaults=defaults)
    # The same seeds on both sides: Sleeve's per-image seeds, handed to stock's generators.
    seeds = [image_seed(r["request_id"], i) for r in _requests("bench") for i in range(IMAGES_PER_PROMPT)]
    wall = {"stock": [0.0] * ROUNDS, "sleeve": [0.0] * ROUNDS}
    cpu = {"stock": [0.0] * ROUNDS, "sleeve": [0.0] * ROUNDS}
    with torch.inference_mode():
        stock_call(stock_pipe, 0, seeds), sleeve_call(gen, 0)  # warm-up: allocator, first-call costs
        for n in range(ROUNDS):
            # Alternate every 16 images, so both sides see the same load on a shared machine.
            for group in range(len(PROMPTS) // STOCK_PROMPTS_PER_CALL):
                for side, fn, args in (("stock", stock_call, (stock_pipe, group, seeds)),
                                       ("sleeve", sleeve_call, (gen, group))):
                    w, c = _timed(fn, *args)
                    wall[side][n] += w
                    cpu[side][n] += c
    with tempfile.TemporaryDirectory(prefix="sleeve-bench-gen-") as tmp:
        waste = gen.generate([{"request_id": f"waste-{i}", "prompt": PROMPTS[i], "num_images": n}
                              for i, n in enumerate(WASTE_SHARD)], open_store(f"file://{tmp}/waste")).stats
    n_images = len(seeds)
    return {
        "generation_images": n_images, "generation_size_px": SIZE, "generation_steps": STEPS,
        "generation_torch_threads": torch.get_num_threads(),
        "generation_stock_images_per_s": [n_images / s for s in wall["stock"]],
        "generation_sleeve_images_per_s": [n_images / s for s in wall["sleeve"]],
        "generation_speedup_vs_stock_batched": [a / b for a, b in zip(cpu["stock"], cpu["sleeve"], strict=True)],
        "generation_speedup_vs_stock_batched_wall": [a / b for a, b in zip(wall["stock"], wall["sleeve"], strict=True)],
        "generation_padding_waste": (waste["rendered"] - waste["generated"]) / waste["generated"],
        "generation_padding_waste_images": waste["rendered"] - waste["generated"],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
