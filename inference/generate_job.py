"""GPU job: generate one shard of covers (file in, file out; see :mod:`sleeve.jobs`).

    python -m inference.generate_job --manifest URI --config JSON --output URI

Manifest (written by :func:`inference.shards.plan_shards`)::

    {"model": {"version": "v12" | "base", "base_model": "<path or hub id>",
               "adapters": [{"uri": "gs://.../pytorch_lora_weights.safetensors", "weight": 1.0}]},
     "defaults": {"width": 1024, "height": 1024, "steps": 30, "guidance_scale": 5.0},
     "requests": [{"request_id", "prompt", "negative_prompt", "num_images", "seed",
                   "width", "height", "steps"}]}

Config: ``store_url`` (where images go; default: the configured store), ``format`` (png|webp),
``compile``, ``device``, ``dtype``, ``thumb_size``, ``max_prompt_chars``.
Images are stored content-addressed in the store; ``<output>/result.json`` lists every image
record (generated now or found already stored) and every failed request with its reason. A
shard that fails as a whole (say, a corrupt adapter) exits non-zero after writing
``<output>/error.json`` with the reason, which ``record`` puts on the shard's requests.
"""

from __future__ import annotations

from sleeve.jobs import output_location, run_job
from sleeve.settings import get_settings
from sleeve.store import open_store, write_json

ERROR_NAME = "error.json"


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    try:
        return render_shard(manifest, config, output_uri)
    except Exception as exc:
        store, prefix = output_location(output_uri)
        write_json(store, prefix + ERROR_NAME, {"error": f"{type(exc).__name__}: {exc}"[:1000]})
        raise


def render_shard(manifest: dict, config: dict, output_uri: str) -> dict:
    from inference.generator import MAX_PROMPT_CHARS, Adapter, CoverGenerator, Defaults

    model = manifest.get("model") or {}
    if not model.get("base_model"):
        raise ValueError("shard manifest has no model.base_model")
    settings = get_settings()
    defaults = Defaults(**(manifest.get("defaults") or {}))
    generator = CoverGenerator(
        model["base_model"],
        [Adapter(a["uri"], float(a.get("weight", 1.0))) for a in model.get("adapters") or []],
        model_version=model.get("version") or "base",
        device=config.get("device"), dtype=config.get("dtype"), compile=bool(config.get("compile", False)),
        defaults=defaults,
        cache_dir=config.get("cache_dir") or settings.home / "cache" / "adapters",
        store_url=config.get("store_url") or settings.store_url,
    )
    store = open_store(config.get("store_url") or settings.store_url)
    result = generator.generate(
        manifest.get("requests") or [], store, fmt=config.get("format", "png"),
        thumb_size=int(config.get("thumb_size", 256)),
        max_prompt_chars=int(config.get("max_prompt_chars", MAX_PROMPT_CHARS)),
    )
    print(f"shard done: {result.stats}", flush=True)
    return {**result.to_dict(), "model": model, "output_uri": output_uri}


if __name__ == "__main__":
    run_job(main)
