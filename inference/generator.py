"""Batch cover generation: one model load per shard, prompts in batches, reproducible seeds.

    gen = CoverGenerator(base_model, adapters=[Adapter(uri, 1.0)], model_version="v3")
    result = gen.generate(requests, store)          # -> ShardResult (images, failed, stats)

- The base model loads with ``from_pretrained(path_or_id)`` (tiny SDXL here, SDXL on a GPU box).
  One LoRA adapter is fused into the UNet (no LoRA overhead per step); several adapters
  (a user's DreamBooth LoRA + the production style LoRA) stay unfused and are mixed with
  ``set_adapters`` weights.
- bf16 (fp16 where bf16 is missing) on CUDA with SDPA attention and optional ``torch.compile``;
  fp32 on CPU. The VAE decodes image by image (slicing) and in tiles above 1024 px.
- Deterministic: every image has its own CPU ``torch.Generator`` seeded by
  :func:`image_seed` (request id, image index) and batches have a fixed shape, so an image does
  not depend on its batch mates or on the device's RNG: the same request on the same model
  version (and batch size, device and library versions) gives the same bytes.
- Stored content-addressed (``images/<sha[:2]>/<sha>.png``, create_only) with a thumbnail and a
  small record at ``images/by-id/<image_id>.json``, written last: a re-run of a killed shard finds
  the record and skips the image.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sleeve.ids import sha256_bytes, stable_id
from sleeve.keys import image_record_key
from sleeve.store import ObjectStore, open_store, open_uri, read_json, write_json

log = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 2048, 64
MAX_PROMPT_CHARS = 1000
MAX_STEPS = 150
MAX_IMAGES_PER_REQUEST = 16
TILE_ABOVE_PX = 1024  # VAE tiling only where a whole-image decode would not fit comfortably
FORMATS = {"png": "image/png", "webp": "image/webp"}
BASE_VERSION = "base"


def image_seed(request_id: str, image_index: int, base_seed: int | None = None) -> int:
    """The seed of one image: a stable 60-bit hash of (request id, image index, optional base
    seed). It fits INT64 and torch's manual_seed, and never depends on batch or shard layout."""
    digest = sha256_bytes(json.dumps([str(request_id), int(image_index), base_seed]).encode())
    return int(digest[:15], 16)


def image_id(request_id: str, image_index: int, model_version: str) -> str:
    return stable_id(request_id, image_index, model_version)


@dataclass(frozen=True)
class Adapter:
    """A LoRA adapter: a store URI or local path (a ``pytorch_lora_weights.safetensors`` file or
    a folder holding one) and its weight in the mix."""

    uri: str
    weight: float = 1.0


@dataclass(frozen=True)
class Request:
    """One row of a shard manifest: a prompt and how many images to make of it."""

    request_id: str
    prompt: str
    negative_prompt: str = ""
    num_images: int = 4
    seed: int | None = None  # optional base seed mixed into every image seed
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None

    @classmethod
    def from_dict(cls, row: dict) -> Request:
        known = {k: row.get(k) for k in cls.__dataclass_fields__ if row.get(k) is not None}
        return cls(**known)


@dataclass(frozen=True)
class Defaults:
    width: int = 64
    height: int = 64
    steps: int = 4
    guidance_scale: float = 5.0


@dataclass(frozen=True)
class ImageJob:
    """One image to render, with everything fixed that decides its pixels."""

    request_id: str
    image_index: int
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    guidance_scale: float

    @property
    def shape_key(self) -> tuple:
        return self.width, self.height, self.steps, self.guidance_scale


@dataclass
class ShardResult:
    model_version: str
    images: list[dict] = field(default_factory=list)  # one record per image (new or existing)
    failed: list[dict] = field(default_factory=list)  # {"request_id", "reason"}
    stats: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def validate_request(req: Request, defaults: Defaults, max_prompt_chars: int = MAX_PROMPT_CHARS) -> str | None:
    """Why this request cannot be generated, or None. Checked before the model runs, so a bad
    row fails alone with a reason and the rest of the shard continues."""
    if not isinstance(req.prompt, str) or not req.prompt.strip():
        return "empty prompt"
    if len(req.prompt) > max_prompt_chars:
        return f"prompt is {len(req.prompt)} characters; at most {max_prompt_chars} are allowed"
    if len(req.negative_prompt or "") > max_prompt_chars:
        return f"negative prompt is {len(req.negative_prompt)} characters; at most {max_prompt_chars} are allowed"
    width, height = req.width or defaults.width, req.height or defaults.height
    for name, side in (("width", width), ("height", height)):
        if not (MIN_SIDE <= side <= MAX_SIDE) or side % SIDE_MULTIPLE:
            return (f"unsupported size {width}x{height}: {name} must be a multiple of {SIDE_MULTIPLE} "
                    f"between {MIN_SIDE} and {MAX_SIDE}")
    steps = req.steps or defaults.steps
    if not 1 <= steps <= MAX_STEPS:
        return f"steps={steps} is out of range 1..{MAX_STEPS}"
    if not 1 <= req.num_images <= MAX_IMAGES_PER_REQUEST:
        return f"num_images={req.num_images} is out of range 1..{MAX_IMAGES_PER_REQUEST}"
    return None


def expand(req: Request, defaults: Defaults) -> list[ImageJob]:
    return [
        ImageJob(
            request_id=req.request_id, image_index=i, prompt=req.prompt.strip(),
            negative_prompt=(req.negative_prompt or "").strip(), seed=image_seed(req.request_id, i, req.seed),
            width=req.width or defaults.width, height=req.height or defaults.height,
            steps=req.steps or defaults.steps,
            guidance_scale=defaults.guidance_scale if req.guidance_scale is None else req.guidance_scale,
        )
        for i in range(req.num_images)
    ]


def batches(jobs: Sequence[ImageJob], batch_size: int) -> Iterable[list[ImageJob]]:
    """Jobs grouped by shape (size, steps, guidance), in batches of at most ``batch_size``."""
    groups: dict[tuple, list[ImageJob]] = {}
    for job in jobs:
        groups.setdefault(job.shape_key, []).append(job)
    for group in groups.values():
        for start in range(0, len(group), batch_size):
            yield group[start:start + batch_size]


def fetch_adapter(uri: str, cache_dir: Path, root_url: str | None = None) -> Path:
    """Local path of the adapter's ``.safetensors`` file, downloading it from the store once."""
    if not uri.startswith(("file://", "gs://")):
        path = Path(uri)
    else:
        store, key = open_uri(uri, open_store(root_url) if root_url else None)
        target = cache_dir / sha256_bytes(uri.encode())[:16]
        if key.endswith(".safetensors"):
            path = target / Path(key).name
            if not path.exists():
                store.download(key, path)
        else:
            path = target
            if not (target / "pytorch_lora_weights.safetensors").exists():
                store.download_dir(key, target)
    if path.is_dir():
        path = path / "pytorch_lora_weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"LoRA adapter {uri} has no pytorch_lora_weights.safetensors")
    return path


def encode_image(image, job: ImageJob, model_version: str, fmt: str) -> bytes:
    """PNG (text chunks) or lossless WebP (EXIF ImageDescription) with the generation metadata.
    No timestamp goes in, so the same pixels always give the same bytes (and the same address)."""
    meta = {"prompt": job.prompt, "negative_prompt": job.negative_prompt, "seed": job.seed,
            "model_version": model_version, "steps": job.steps, "guidance_scale": job.guidance_scale,
            "request_id": job.request_id, "image_index": job.image_index, "generator": "sleeve"}
    buf = io.BytesIO()
    if fmt == "png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("sleeve", json.dumps(meta, sort_keys=True))
        for key in ("prompt", "seed", "model_version"):
            info.add_text(key, str(meta[key]))
        image.save(buf, format="PNG", pnginfo=info)
    elif fmt == "webp":
        exif = image.getexif()
        exif[0x010E] = json.dumps(meta, sort_keys=True)  # ImageDescription
        image.save(buf, format="WEBP", lossless=True, exif=exif)
    else:
        raise ValueError(f"unsupported image format {fmt!r}; use one of {sorted(FORMATS)}")
    return buf.getvalue()


def read_metadata(data: bytes) -> dict:
    """The generation metadata written by :func:`encode_image` (PNG or WebP)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        text = img.info.get("sleeve") if img.format == "PNG" else img.getexif().get(0x010E)
    return json.loads(text) if text else {}


def thumbnail(data: bytes, size: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        thumb = img.convert("RGB")
        thumb.thumbnail((size, size))
        buf = io.BytesIO()
        thumb.save(buf, format="WEBP", quality=80)
    return buf.getvalue()


class CoverGenerator:
    """A loaded pipeline (base model + adapters) that turns requests into stored images."""

    def __init__(self, base_model: str, adapters: Sequence[Adapter] = (), *, model_version: str = BASE_VERSION,
                 device: str | None = None, dtype: str | None = None, compile: bool = False,
                 batch_size: int = 8, defaults: Defaults = Defaults(), cache_dir: str | Path | None = None,
                 store_url: str | None = None):
        import torch

        self.model_version = model_version
        self.batch_size = max(1, int(batch_size))
        self.defaults = defaults
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = _torch_dtype(dtype, self.device)
        started = time.perf_counter()
        self.pipe = self._load(base_model, adapters, Path(cache_dir or Path.home() / ".cache" / "sleeve"),
                               store_url, compile)
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s (+%d adapter(s)) as %s on %s/%s in %.1f s", base_model, len(adapters),
                 model_version, self.device, self.dtype, self.load_seconds)

    def _load(self, base_model, adapters, cache_dir, store_url, compile_unet):
        import torch
        from diffusers import DiffusionPipeline
        from diffusers.models.attention_processor import AttnProcessor2_0

        pipe = DiffusionPipeline.from_pretrained(base_model, dtype=self.dtype)
        names = []
        for i, adapter in enumerate(adapters):
            path = fetch_adapter(adapter.uri, cache_dir, store_url)
            name = f"adapter_{i}"
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
            names.append(name)
        if len(names) == 1:
            # One adapter: fold it into the weights, then drop the LoRA layers (plain UNet speed).
            pipe.fuse_lora(lora_scale=adapters[0].weight, adapter_names=names)
            pipe.unload_lora_weights()
        elif names:
            pipe.set_adapters(names, adapter_weights=[a.weight for a in adapters])
        pipe.unet.set_attn_processor(AttnProcessor2_0())  # SDPA (flash / mem-efficient kernels on GPU)
        pipe.vae.enable_slicing()  # decode image by image: bounded memory, batch-independent output
        pipe.to(self.device)
        if self.device.startswith("cuda"):
            pipe.unet.to(memory_format=torch.channels_last)
        if compile_unet:
            pipe.unet.compile(mode="max-autotune-no-cudagraphs", fullgraph=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def render(self, batch: Sequence[ImageJob]):
        """PIL images for one batch of same-shaped jobs. A short batch is padded to
        ``batch_size`` (padding discarded): kernels are chosen by tensor shape, and a fixed shape
        keeps every image bit-identical whatever its batch mates, so a resumed shard stores
        exactly the bytes an uninterrupted one would."""
        import torch

        first, n = batch[0], len(batch)
        batch = list(batch) + [batch[-1]] * (self.batch_size - n)
        vae = self.pipe.vae
        vae.enable_tiling() if max(first.width, first.height) > TILE_ABOVE_PX else vae.disable_tiling()
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in batch]
        with torch.inference_mode():
            out = self.pipe(
                prompt=[job.prompt for job in batch], negative_prompt=[job.negative_prompt for job in batch],
                width=first.width, height=first.height, num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale, generator=generators, output_type="pil",
            )
        return out.images[:n]

    def generate(self, requests: Iterable[Request | dict], store: ObjectStore, *, fmt: str = "png",
                 thumb_size: int = 256, max_prompt_chars: int = MAX_PROMPT_CHARS) -> ShardResult:
        """Generate and store every image of ``requests`` that is not stored yet."""
        if fmt not in FORMATS:
            raise ValueError(f"unsupported image format {fmt!r}; use one of {sorted(FORMATS)}")
        result = ShardResult(self.model_version)
        pending: list[ImageJob] = []
        n_requests = 0
        for raw in requests:
            n_requests += 1
            req = raw if isinstance(raw, Request) else Request.from_dict(raw)
            reason = validate_request(req, self.defaults, max_prompt_chars)
            if reason:
                result.failed.append({"request_id": req.request_id, "reason": reason})
                continue
            for job in expand(req, self.defaults):
                key = image_record_key(image_id(job.request_id, job.image_index, self.model_version))
                if store.exists(key):
                    result.images.append({**read_json(store, key), "status": "existing"})
                else:
                    pending.append(job)
        skipped = len(result.images)
        started = time.perf_counter()
        for batch in batches(pending, self.batch_size):
            for job, image in zip(batch, self.render(batch), strict=True):
                result.images.append({**self._store(job, image, store, fmt, thumb_size), "status": "generated"})
            log.info("generated %d/%d images", len(result.images) - skipped, len(pending))
        result.stats = {
            "requests": n_requests, "images": len(result.images), "generated": len(pending),
            "skipped_existing": skipped, "failed": len(result.failed),
            "render_seconds": round(time.perf_counter() - started, 3), "load_seconds": round(self.load_seconds, 3),
            "device": self.device, "dtype": str(self.dtype).removeprefix("torch."),
        }
        return result

    def _store(self, job: ImageJob, image, store: ObjectStore, fmt: str, thumb_size: int) -> dict:
        data = encode_image(image, job, self.model_version, fmt)
        sha = sha256_bytes(data)
        key = f"images/{sha[:2]}/{sha}.{fmt}"
        thumb_key = f"thumbs/{sha[:2]}/{sha}.webp"
        store.put_bytes(key, data, content_type=FORMATS[fmt], create_only=True)
        store.put_bytes(thumb_key, thumbnail(data, thumb_size), content_type="image/webp", create_only=True)
        iid = image_id(job.request_id, job.image_index, self.model_version)
        record = {
            "image_id": iid, "request_id": job.request_id, "image_index": job.image_index, "seed": job.seed,
            "model_version": self.model_version, "uri": store.uri(key), "thumb_uri": store.uri(thumb_key),
            "sha256": sha, "width": image.width, "height": image.height, "steps": job.steps,
        }
        write_json(store, image_record_key(iid), record)  # last: its presence means the image is stored
        return record


def _torch_dtype(name: str | None, device: str):
    import torch

    if name:
        return {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
                "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}[name]
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32
