"""`make bench` part: images/s of the batch generator vs a naive per-prompt diffusers loop.

Same tiny model, size, steps, guidance and prompts on CPU. The naive loop is what a first
version does: load the pipeline, then one ``pipe(prompt)`` call per image with the global RNG.
Ours: one load, batched prompts, per-image seeded generators, SDPA. Both include the model load
(a shard pays it once) and neither includes storing the PNGs.
"""

from __future__ import annotations

import time

PROMPTS = [f"album cover of a {c} {t} at night, film grain" for c in ("blue", "red", "gold")
           for t in ("ocean", "city", "road", "heart")]


def run(images_per_prompt: int = 4, size: int = 64, steps: int = 4, batch_size: int = 16) -> dict:
    import torch
    from diffusers import DiffusionPipeline

    from inference.generator import CoverGenerator, Defaults, Request, expand
    from sleeve.settings import get_settings
    from sleeve.tinymodel import ensure_tiny_sdxl

    model = str(ensure_tiny_sdxl(get_settings().tiny_model_dir))
    n = len(PROMPTS) * images_per_prompt

    started = time.perf_counter()
    pipe = DiffusionPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    for prompt in PROMPTS:
        for _ in range(images_per_prompt):
            pipe(prompt=prompt, negative_prompt="text", width=size, height=size, num_inference_steps=steps,
                 guidance_scale=5.0)
    naive_s = time.perf_counter() - started
    del pipe

    defaults = Defaults(width=size, height=size, steps=steps)
    jobs = [job for i, p in enumerate(PROMPTS)
            for job in expand(Request(f"bench-{i}", p, "text", images_per_prompt), defaults)]
    started = time.perf_counter()
    gen = CoverGenerator(model, batch_size=batch_size, defaults=defaults)
    for start in range(0, len(jobs), batch_size):
        gen.render(jobs[start:start + batch_size])
    ours_s = time.perf_counter() - started

    return {
        "name": "generation (tiny SDXL, CPU)",
        "metrics": {
            "images": n, "size_px": size, "steps": steps, "torch_threads": torch.get_num_threads(),
            "naive_images_per_s": round(n / naive_s, 2), "ours_images_per_s": round(n / ours_s, 2),
            "naive_s": round(naive_s, 2), "ours_s": round(ours_s, 2),
        },
        "ratios": {"generation_speedup_vs_naive": round(naive_s / ours_s, 2)},
        "notes": f"{len(PROMPTS)} prompts x {images_per_prompt} images, batch {batch_size}, model load included",
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
