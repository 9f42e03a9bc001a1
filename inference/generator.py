"""Batch cover generation: one model load per shard, each request in its own forward passes, reproducible seeds.

    gen = CoverGenerator(base_model, adapters=[Adapter(uri, 1.0)], model_version="v3")
    result = gen.generate(requests, store)          # -> ShardResult (images, failed, stats)

- The base model loads with ``from_pretrained(path_or_id)`` (tiny SDXL here, SDXL on a GPU box).
  One LoRA adapter is fused into the UNet (no LoRA overhead per step); several adapters
  (a user's DreamBooth LoRA + the production style LoRA) stay unfused and are mixed with
  ``set_adapters`` weights.
- bf16 (fp16 where bf16 is missing) on CUDA with SDPA attention and optional ``torch.compile``;
  fused QKV projections; fp32 on CPU. The VAE decodes a pass in one batch up to 512 px, image
  by image (slicing) above, and in tiles above 1024 px.
- Deterministic: every image has its own CPU ``torch.Generator`` seeded by
  :func:`image_seed` (request id, image index), and a forward pass holds the images of one
  request only (:func:`chunks`): never padded, never shared with other requests. Kernels are
  picked by tensor shape, and on GPUs a matmul's result can change with the batch it is in, so
  the shape is made the request's own: the same request on the same model version (and
  device and library versions) gives the same bytes alone or in any shard. No image is
  computed to be thrown away (the old fixed-shape batches padded a 4-image request at batch
  8 to 8 images); only a re-run after a kill mid-pass renders that pass whole again.
- Stored content-addressed (``images/<sha[:2]>/<sha>.png``, create_only) with a thumbnail and a
  small record at ``images/by-id/<image_id>.json``, written last: a re-run of a killed shard finds
  the record and skips the image.
"""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sleeve.ids import sha256_bytes, stable_id
from sleeve.keys import image_record_key, owner_of
from sleeve.scratch import job_scratch
from sleeve.store import ObjectStore, open_store, open_uri, read_json, write_json

log = logging.getLogger(__name__)

MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 64, 2048, 64
MAX_PROMPT_CHARS = 1000
MAX_STEPS = 150
MAX_IMAGES_PER_REQUEST = 16
IMAGES_PER_PASS = 4  # a request's images per forward pass (the default request is one pass)
# torch.compile of the UNet: inductor's default mode (max-autotune spends many minutes per shape
# on SDXL, which a shard on a fresh worker would pay before its first image).
COMPILE_OPTIONS = {"fullgraph": False}
DEFAULT_IMAGES = 4  # images of a request that does not say how many
MAX_GUIDANCE = 30.0
TILE_ABOVE_PX = 1024  # VAE tiling only where a whole-image decode would not fit comfortably
SLICE_ABOVE_PX = 512  # above this the VAE decodes a pass image by image (memory); below, in one batch
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
    """One row of a shard manifest: a prompt and how many images to make of it. ``None`` means
    "not given" (the shard's default); a given value is used as it is, zero included (and then
    rejected by :func:`validate_request`)."""

    request_id: str
    prompt: str
    negative_prompt: str = ""
    num_images: int = DEFAULT_IMAGES
    seed: int | None = None  # optional base seed mixed into every image seed
    width: int | None = None
    height: int | None = None
    steps: int | None = None
    guidance_scale: float | None = None

    @classmethod
    def from_dict(cls, row: object) -> Request:
        """A request from a manifest row, every field type-checked: BadRequest names the field."""
        if not isinstance(row, dict):
            raise BadRequest(f"a request must be a JSON object, got {type(row).__name__}")
        unknown = sorted(set(row) - set(cls.__dataclass_fields__))
        if unknown:
            raise BadRequest(f"unknown request field(s) {unknown}")
        rid = row.get("request_id")
        if not isinstance(rid, str) or not rid.strip():
            raise BadRequest(f"request_id must be a non-empty string, got {rid!r}")
        values = {"request_id": rid}
        for name, kinds in _FIELD_TYPES.items():
            value = row.get(name)
            if value is None:
                continue  # missing: the default
            if isinstance(value, bool) or not isinstance(value, kinds):
                wanted = " or ".join(k.__name__ for k in kinds)
                raise BadRequest(f"{name} must be {wanted}, got {type(value).__name__} {value!r}")
            values[name] = value
        if "prompt" not in values:
            raise BadRequest("empty prompt")
        return cls(**values)


class BadRequest(ValueError):
    """A manifest row that is not a request; the message names the field."""


_FIELD_TYPES = {"prompt": (str,), "negative_prompt": (str,), "num_images": (int,), "seed": (int,),
                "width": (int,), "height": (int,), "steps": (int,), "guidance_scale": (int, float)}


def request_failure(row: object, reason: str) -> dict:
    """The failure record of a row that cannot be generated (its id, if it has a usable one)."""
    rid = row.get("request_id") if isinstance(row, dict) else None
    return {"request_id": rid if isinstance(rid, str) else repr(rid), "reason": reason}


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
    job = _settings(req, defaults)
    for name in ("width", "height"):
        side = job[name]
        if not (MIN_SIDE <= side <= MAX_SIDE) or side % SIDE_MULTIPLE:
            return (f"unsupported size {job['width']}x{job['height']}: {name} must be a multiple of "
                    f"{SIDE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}")
    if not 1 <= job["steps"] <= MAX_STEPS:
        return f"steps={job['steps']} is out of range 1..{MAX_STEPS}"
    if not 0.0 <= job["guidance_scale"] <= MAX_GUIDANCE:  # also false for NaN
        return f"guidance_scale={job['guidance_scale']} is out of range 0..{MAX_GUIDANCE:g}"
    if not 1 <= req.num_images <= MAX_IMAGES_PER_REQUEST:
        return f"num_images={req.num_images} is out of range 1..{MAX_IMAGES_PER_REQUEST}"
    return None


def _settings(req: Request, defaults: Defaults) -> dict:
    """Size, steps and guidance of a request: its own where given (zero counts as given)."""
    return {name: getattr(defaults, name) if getattr(req, name) is None else getattr(req, name)
            for name in ("width", "height", "steps", "guidance_scale")}


def expand(req: Request, defaults: Defaults) -> list[ImageJob]:
    settings = _settings(req, defaults)
    return [
        ImageJob(request_id=req.request_id, image_index=i, prompt=req.prompt.strip(),
                 negative_prompt=(req.negative_prompt or "").strip(), seed=image_seed(req.request_id, i, req.seed),
                 **settings)
        for i in range(req.num_images)
    ]


def chunks(jobs: Sequence[ImageJob]) -> list[list[ImageJob]]:
    """One request's images (from :func:`expand`) in forward passes of :data:`IMAGES_PER_PASS`.
    The layout depends on the request alone: never on other requests, on the shard or on what
    is already stored. (Measured on this CPU: the same 4-image request split 2 + 2 gives other
    bytes than in one pass of 4, so the split is a constant, not a setting.)"""
    return [list(jobs[i:i + IMAGES_PER_PASS]) for i in range(0, len(jobs), IMAGES_PER_PASS)]


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


def load_pipeline(base_model: str, adapters: Sequence[Adapter] = (), *, dtype=None, cache_dir: Path | None = None,
                  store_url: str | None = None):
    """``from_pretrained`` with the adapters applied (see :func:`apply_adapters`)."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(base_model, dtype=dtype)
    cache_dir = Path(cache_dir or Path.home() / ".cache" / "sleeve")
    with ExitStack() as personal:  # a user's adapter never outlives the load on a worker's disk
        local = []
        for a in adapters:
            folder = cache_dir
            if owner := _adapter_owner(a.uri, store_url):
                folder = personal.enter_context(
                    job_scratch(f"adapter-{sha256_bytes(a.uri.encode())[:16]}-{uuid.uuid4().hex[:8]}", user_id=owner))
            local.append((a.uri, fetch_adapter(a.uri, folder, store_url), a.weight))
        apply_adapters(pipe, local)  # the weights are in memory from here on
    return pipe


def _adapter_owner(uri: str, store_url: str | None) -> str | None:
    """The user a stored adapter belongs to (a DreamBooth adapter under ``users/<id>/``)."""
    if not uri.startswith(("file://", "gs://")):
        return owner_of(uri)
    _, key = open_uri(uri, open_store(store_url) if store_url else None)
    return owner_of(key)


def apply_adapters(pipe, adapters: Sequence[tuple[str, Path, float]]) -> None:
    """Load LoRA files ``(uri, local path, weight)`` into ``pipe``. One adapter is folded into
    the weights and its LoRA layers dropped (plain UNet speed); several stay unfused, mixed with
    ``set_adapters`` weights. An unreadable file is a ValueError naming its URI."""
    names = []
    for i, (uri, path, _) in enumerate(adapters):
        name = f"adapter_{i}"
        try:
            pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        except Exception as exc:  # safetensors, peft and diffusers each raise their own kinds
            raise ValueError(f"LoRA adapter {uri} cannot be loaded: {type(exc).__name__}: {exc}"[:500]) from exc
        names.append(name)
    if len(names) == 1:
        pipe.fuse_lora(lora_scale=adapters[0][2], adapter_names=names)
        pipe.unload_lora_weights()
    elif names:
        pipe.set_adapters(names, adapter_weights=[weight for *_, weight in adapters])


def prepare_pipeline(pipe, device: str, *, compile_unet: bool = False, fuse_projections: bool = True):
    """SDPA attention, fused QKV projections, the device, channels-last UNet on CUDA, optional
    compile. Fusing the projections must come after the LoRA adapters are folded in, and is
    skipped while adapters stay unfused (their layers sit on the separate projections)."""
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    pipe.unet.set_attn_processor(AttnProcessor2_0())  # SDPA (flash / mem-efficient kernels on GPU)
    if fuse_projections:
        pipe.fuse_qkv_projections()  # one matmul for q, k, v (self-attention) or k, v (cross-attention)
    pipe.to(device)
    if device.startswith("cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
    if compile_unet:
        pipe.unet.compile(**COMPILE_OPTIONS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class CoverGenerator:
    """A loaded pipeline (base model + adapters) that turns requests into stored images."""

    def __init__(self, base_model: str, adapters: Sequence[Adapter] = (), *, model_version: str = BASE_VERSION,
                 device: str | None = None, dtype: str | None = None, compile: bool = False,
                 defaults: Defaults = Defaults(), cache_dir: str | Path | None = None, store_url: str | None = None):
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        started = time.perf_counter()
        pipe = load_pipeline(base_model, adapters, dtype=_torch_dtype(dtype, device),
                             cache_dir=Path(cache_dir) if cache_dir else None, store_url=store_url)
        prepare_pipeline(pipe, device, compile_unet=compile, fuse_projections=len(adapters) <= 1)
        self._init(pipe, model_version, defaults, device)
        self.load_seconds = time.perf_counter() - started
        log.info("loaded %s (+%d adapter(s)) as %s on %s/%s in %.1f s", base_model, len(adapters),
                 model_version, self.device, self.dtype, self.load_seconds)

    @classmethod
    def from_pipeline(cls, pipe, *, model_version: str = BASE_VERSION, defaults: Defaults = Defaults()
                      ) -> CoverGenerator:
        """The generator around a pipeline already built and prepared (the GPU benchmark's
        random-weight SDXL)."""
        gen = cls.__new__(cls)
        gen._init(pipe, model_version, defaults, str(pipe.device))
        gen.load_seconds = 0.0
        return gen

    def _init(self, pipe, model_version, defaults, device):
        self.pipe, self.model_version, self.defaults, self.device = pipe, model_version, defaults, device
        self.dtype = pipe.unet.dtype

    def render(self, batch: Sequence[ImageJob]):
        """PIL images for one chunk of one request (see :func:`chunks`): one prompt, its images
        each from its own CPU generator. Nothing is padded and no other request shares the
        forward pass, so the batch shape, and with it every kernel choice, is the request's own."""
        import torch

        first = batch[0]
        if any(job.request_id != first.request_id for job in batch):
            raise ValueError("a render batch holds the images of one request")
        vae, side = self.pipe.vae, max(first.width, first.height)
        vae.enable_tiling() if side > TILE_ABOVE_PX else vae.disable_tiling()
        vae.enable_slicing() if side > SLICE_ABOVE_PX else vae.disable_slicing()
        generators = [torch.Generator("cpu").manual_seed(job.seed) for job in batch]
        with torch.inference_mode():
            out = self.pipe(
                prompt=first.prompt, negative_prompt=first.negative_prompt, num_images_per_prompt=len(batch),
                width=first.width, height=first.height, num_inference_steps=first.steps,
                guidance_scale=first.guidance_scale, generator=generators, output_type="pil",
            )
        return out.images

    def generate(self, requests: Iterable[Request | dict], store: ObjectStore, *, fmt: str = "png",
                 thumb_size: int = 256, max_prompt_chars: int = MAX_PROMPT_CHARS) -> ShardResult:
        """Generate and store every image of ``requests`` that is not stored yet."""
        if fmt not in FORMATS:
            raise ValueError(f"unsupported image format {fmt!r}; use one of {sorted(FORMATS)}")
        result = ShardResult(self.model_version)
        todo: list[tuple[list[ImageJob], set[int]]] = []  # (chunk, indices of its images to store)
        n_requests = 0
        for raw in requests:
            n_requests += 1
            try:
                req = raw if isinstance(raw, Request) else Request.from_dict(raw)
            except BadRequest as exc:
                result.failed.append(request_failure(raw, str(exc)))
                continue
            reason = validate_request(req, self.defaults, max_prompt_chars)
            if reason:
                result.failed.append({"request_id": req.request_id, "reason": reason})
                continue
            for chunk in chunks(expand(req, self.defaults)):
                missing = set()
                for job in chunk:
                    key = image_record_key(image_id(job.request_id, job.image_index, self.model_version))
                    if store.exists(key):
                        result.images.append({**read_json(store, key), "status": "existing"})
                    else:
                        missing.add(job.image_index)
                if missing:
                    todo.append((chunk, missing))
        skipped, rendered = len(result.images), 0
        to_store = sum(len(missing) for _, missing in todo)
        started = time.perf_counter()
        for chunk, missing in todo:
            images = self.render(chunk)
            rendered += len(images)
            for job, image in zip(chunk, images, strict=True):
                if job.image_index in missing:
                    result.images.append({**self._store(job, image, store, fmt, thumb_size), "status": "generated"})
            log.info("generated %d/%d images", len(result.images) - skipped, to_store)
        result.stats = {
            "requests": n_requests, "images": len(result.images), "generated": to_store,
            "skipped_existing": skipped, "failed": len(result.failed),
            # Images computed and thrown away: only after a kill mid-chunk (its stored half is redone).
            "rendered": rendered, "discarded": rendered - to_store,
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
