"""GPU job: product shots for one shard of products (file in, file out; see :mod:`sleeve.jobs`).

    python -m inference.product_job --manifest URI --config JSON --output URI

Manifest (written by :func:`inference.product_shots.plan_run`)::

    {"kind": "sleeve.product.shard/v1",
     "model": {"version": "base", "base_model": "<path or hub id>", "adapters": []},
     "matting": {"backend": "opencv" | "rembg", "model": null | "u2net" | "<.onnx path or URI>"},
     "defaults": {"size": 1024, "steps": 4, "guidance_scale": 0.0, "harmonise": 0.0, "shadow": 0.45},
     "products": [{"request_id", "product_id", "photo_uri", "positive", "negative", "seed",
                   "variants": 2, "placements": [{"name": "left", "x": null, "y": null, "scale": 0.6}]}]}

Per product: the photo is decoded within bounds and cut out (its own alpha, or the matting
backend); one background per variant is generated at the output size by the batch generator's
pipeline (:class:`inference.generator.CoverGenerator`: same model loading, same seeds per
(request, variant)); the product is composited at each placement; the fidelity gate checks,
after every step and again on the stored PNG, that the product's pixels are untouched (masked
PSNR >= 40 dB). A bad product or a shot that fails the gate is reported in ``failed`` with
its reason; the rest of the shard goes on. Shots already stored (their record under
``products/by-id/``) are not made again.

Config: ``store_url``, ``device``, ``dtype``, ``thumb_size``.
"""

from __future__ import annotations

import io
import logging
import math
import time

import numpy as np

from sleeve.ids import sha256_bytes, stable_id
from sleeve.jobs import run_job
from sleeve.settings import get_settings
from sleeve.store import ObjectStore, StoreError, open_store, open_uri, read_json, write_json

log = logging.getLogger(__name__)

PREFIX = "products/"


def shot_id(request_id: str, variant: int, placement_key: str) -> str:
    return stable_id("product-shot", request_id, variant, placement_key)


def shot_record_key(sid: str) -> str:
    return f"{PREFIX}by-id/{sid}.json"


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _put(store: ObjectStore, folder: str, data: bytes, ext: str = "png", content_type: str = "image/png") -> str:
    sha = sha256_bytes(data)
    key = f"{PREFIX}{folder}/{sha[:2]}/{sha}.{ext}"
    store.put_bytes(key, data, content_type=content_type, create_only=True)
    return store.uri(key)


class FidelityError(RuntimeError):
    """A step changed the product's pixels: the shot is not stored."""


class Harmoniser:
    """A light img2img pass over the whole composite (same pipeline, same weights); the caller
    pastes the product back over its output, so only the surroundings change."""

    def __init__(self, pipe, strength: float, steps: int, guidance_scale: float):
        from diffusers import StableDiffusionXLImg2ImgPipeline

        self.pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(pipe)
        self.pipe.set_progress_bar_config(disable=True)
        self.strength = strength
        self.steps = max(steps, math.ceil(1 / strength))  # at least one denoising step
        self.guidance_scale = guidance_scale

    def __call__(self, image: np.ndarray, prompt: str, negative: str, seed: int) -> np.ndarray:
        import torch
        from PIL import Image

        with torch.inference_mode():
            out = self.pipe(prompt=prompt, negative_prompt=negative, image=Image.fromarray(image),
                            strength=self.strength, num_inference_steps=self.steps,
                            guidance_scale=self.guidance_scale, generator=torch.Generator("cpu").manual_seed(seed))
        repainted = np.asarray(out.images[0].convert("RGB"))
        if repainted.shape != image.shape:
            repainted = np.asarray(out.images[0].convert("RGB").resize(image.shape[1::-1]))
        return repainted


class ProductShooter:
    """A loaded background generator plus a matting backend that turns manifest products into
    stored, fidelity-checked shots."""

    def __init__(self, manifest: dict, config: dict):
        from inference.generator import Adapter, CoverGenerator, Defaults
        from inference.product_matting import open_matter

        settings = get_settings()
        model, self.defaults = manifest["model"], manifest.get("defaults") or {}
        self.size = int(self.defaults.get("size") or settings.gen_size)
        self.steps = int(self.defaults.get("steps") or 4)
        self.guidance = float(self.defaults.get("guidance_scale") or 0.0)
        self.harmonise = float(self.defaults.get("harmonise") or 0.0)
        self.shadow = float(self.defaults.get("shadow", 0.45))
        self.model_version = model.get("version") or "base"
        self.base_model = model["base_model"]
        self.thumb_size = int(config.get("thumb_size", 256))
        matting = manifest.get("matting") or {}
        cache = settings.home / "cache"
        self.matter = open_matter(matting.get("backend") or "opencv", matting.get("model"), cache_dir=cache)
        self.generator = CoverGenerator(
            self.base_model, [Adapter(a["uri"], float(a.get("weight", 1.0))) for a in model.get("adapters") or []],
            model_version=self.model_version, device=config.get("device"), dtype=config.get("dtype"),
            cache_dir=cache / "adapters",
            defaults=Defaults(width=self.size, height=self.size, steps=self.steps, guidance_scale=self.guidance),
            store_url=config.get("store_url") or settings.store_url)
        self._harmoniser = None

    def harmoniser(self) -> Harmoniser | None:
        if self.harmonise > 0 and self._harmoniser is None:
            self._harmoniser = Harmoniser(self.generator.pipe, self.harmonise, self.steps, self.guidance)
        return self._harmoniser

    def run(self, products: list[dict], store: ObjectStore) -> dict:
        from inference.generator import ImageJob, chunks, image_seed
        from inference.product_composite import Placement
        from inference.product_matting import MattingError, cut_out, load_photo

        shots, failed, existing, cutouts, jobs = [], [], 0, {}, []
        started = time.perf_counter()
        for product in products:
            rid = product["request_id"]
            todo = []
            for v in range(int(product.get("variants") or 1)):
                for spec in product["placements"]:
                    placement = Placement(**spec)
                    key = shot_record_key(shot_id(rid, v, placement.key))
                    if store.exists(key):
                        shots.append({**read_json(store, key), "status": "existing"})
                        existing += 1
                    else:
                        todo.append((v, placement))
            if not todo:
                continue
            try:
                source, key = open_uri(product["photo_uri"], store)
                cutout = cut_out(load_photo(source.get_bytes(key)), self.matter)
            except (MattingError, StoreError, OSError, LookupError, ValueError) as exc:
                failed.append({"request_id": rid, "reason": str(exc) if isinstance(exc, MattingError)
                               else f"the photo cannot be read ({type(exc).__name__})"})
                continue
            cutouts[rid] = (cutout, product, todo, {
                "photo_uri": _put(store, "photos", _png(cutout.rgb)),
                "mask_uri": _put(store, "masks", _png(cutout.alpha)), "matting": cutout.source})
            # All the product's variants in their fixed passes (a pass's layout changes its bytes), and
            # only the passes holding a variant still to make.
            needed = {v for v, _ in todo}
            variants = [ImageJob(rid, v, product["positive"], product.get("negative") or "",
                                 image_seed(rid, v, product.get("seed")), self.size, self.size, self.steps,
                                 self.guidance) for v in range(int(product.get("variants") or 1))]
            jobs += [chunk for chunk in chunks(variants) if needed & {job.image_index for job in chunk}]
        backgrounds = {}
        for batch in jobs:
            for job, image in zip(batch, self.generator.render(batch), strict=True):
                backgrounds[(job.request_id, job.image_index)] = (job, np.asarray(image.convert("RGB")))
        for rid, (cutout, product, todo, lineage) in cutouts.items():
            for v, placement in todo:
                job, background = backgrounds[(rid, v)]
                try:
                    shots.append(self._shot(store, cutout, placement, job, background, lineage, product))
                except FidelityError as exc:
                    failed.append({"request_id": rid, "variant": v, "placement": placement.key, "reason": str(exc)})
        made = sum(s["status"] == "generated" for s in shots)
        return {"model_version": self.model_version, "shots": shots, "failed": failed,
                "stats": {"products": len(products), "shots": len(shots), "generated": made,
                          "skipped_existing": existing, "failed": len(failed), "backgrounds": sum(map(len, jobs)),
                          "render_seconds": round(time.perf_counter() - started, 3),
                          "load_seconds": round(self.generator.load_seconds, 3), "device": self.generator.device}}

    def _shot(self, store, cutout, placement, job, background, lineage, product) -> dict:
        from PIL import Image

        from inference.generator import encode_image, thumbnail
        from inference.product_composite import MIN_PSNR_DB, compose, fidelity, place, report_db

        layer = place(cutout.rgb, cutout.alpha, placement, (self.size, self.size))
        harmoniser = self.harmoniser()
        harmonise = None if harmoniser is None else (
            lambda image: harmoniser(image, job.prompt, job.negative_prompt, job.seed + 1))
        shot, steps = compose(layer, background, shadow_strength=self.shadow, harmonise=harmonise)
        data = encode_image(Image.fromarray(shot), job, self.model_version, "png")
        with Image.open(io.BytesIO(data)) as stored:
            steps["stored"] = fidelity(np.asarray(stored.convert("RGB")), layer)
        worst = min(steps.values())
        if worst < MIN_PSNR_DB:
            bad = ", ".join(f"{k} {v:.1f} dB" for k, v in steps.items() if v < MIN_PSNR_DB)
            raise FidelityError(f"the product's pixels changed ({bad}; at least {MIN_PSNR_DB:g} dB is required)")
        sid = shot_id(job.request_id, job.image_index, placement.key)
        record = {
            "shot_id": sid, "request_id": job.request_id, "product_id": product.get("product_id"),
            "variant": job.image_index, "placement": placement.to_dict(), "moved": layer.moved,
            "uri": _put(store, "shots", data), "thumb_uri": _put(store, "thumbs", thumbnail(data, self.thumb_size),
                                                                  "webp", "image/webp"),
            "sha256": sha256_bytes(data), "width": self.size, "height": self.size, "seed": job.seed,
            "background_uri": _put(store, "backgrounds", encode_image(Image.fromarray(background), job,
                                                                       self.model_version, "png")),
            "model_version": self.model_version, "base_model": self.base_model, "steps": self.steps,
            "guidance_scale": self.guidance, "harmonise": self.harmonise,
            "fidelity": {k: report_db(v) for k, v in steps.items()}, "fidelity_psnr_db": report_db(worst),
            "prompt": job.prompt, "negative": job.negative_prompt, **lineage,
        }
        write_json(store, shot_record_key(sid), record)  # last: its presence means the shot is stored
        return {**record, "status": "generated"}


def main(manifest: dict, config: dict, output_uri: str) -> dict:
    if not (manifest.get("model") or {}).get("base_model"):
        raise ValueError("product manifest has no model.base_model")
    store = open_store(config.get("store_url") or get_settings().store_url)
    result = ProductShooter(manifest, config).run(manifest.get("products") or [], store)
    print(f"product shard done: {result['stats']}", flush=True)
    return {**result, "output_uri": output_uri}


if __name__ == "__main__":
    run_job(main)
