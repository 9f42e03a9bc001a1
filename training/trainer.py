"""The one LoRA training loop (style LoRA every week, DreamBooth per user), as functions.

API (DreamBooth is built on it too; there is no second loop)::

    from training.dataset import Example
    from training.trainer import TrainConfig, train_lora

    config = TrainConfig(base_model=path_or_hub_id, steps=400, rank=16,
                         train_text_encoder=True,          # optional text-encoder LoRA
                         prior_loss_weight=1.0)            # DreamBooth prior preservation
    result = train_lora(config, instance_examples, output_dir,
                        class_examples=class_examples,     # Example(..., is_prior=True)
                        work_dir=checkpoint_dir, cache_dir=latent_cache_dir)
    result.weights_path  # output_dir/pytorch_lora_weights.safetensors (diffusers format)

``train_lora`` trains a LoRA on the UNet of an SDXL (or SD 1.5) checkpoint loaded with
``from_pretrained`` and writes to ``output_dir``: ``pytorch_lora_weights.safetensors`` (with
rank/alpha adapter metadata, loads with stock ``pipe.load_lora_weights``), a kohya-format copy
``lora_kohya.safetensors`` and ``training_config.json``; :func:`write_model_card` adds the
``README.md`` model card (base model, data manifest, hyper-parameters, code version).

With ``class_examples`` every step draws ``batch_size`` instance and ``batch_size`` class
examples into the same batch; the loss is ``instance_loss + prior_loss_weight * prior_loss``.

Reproducibility: every random draw (LoRA init, data order, noise, timesteps, caption dropout)
comes from ``seed``. Checkpoints (:mod:`training.checkpoints`) in ``work_dir/checkpoints/step-N``
hold the LoRA weights, optimizer, LR scheduler, fp16 GradScaler and every process's RNG states;
they are written every ``checkpoint_every`` steps or ``checkpoint_seconds`` seconds, whichever
comes first, atomically, the newest ``checkpoints_keep`` kept. A new call with the same
``work_dir`` resumes from the newest one made for the same inputs (data, settings, base model,
code version, processes) and reaches exactly the weights of an uninterrupted run; a checkpoint
made for other inputs is discarded and the run starts fresh (``TrainResult.resume_note`` says
which). Under ``accelerate launch`` every process trains on its own micro-batches, gradients are
averaged, and each checkpoint checks that the processes' weights agree.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sleeve.ids import content_hash, sha256_bytes
from training.checkpoints import Checkpoints, fingerprint
from training.dataset import Example, TensorCache, decode_image, preprocess, read_image_bytes

log = logging.getLogger(__name__)

UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
KOHYA_NAME = "lora_kohya.safetensors"
OBJECTIVES = ("sft", "dpo", "sft+dpo")


@dataclass
class TrainConfig:
    base_model: str
    resolution: int = 64
    rank: int = 4
    alpha: float | None = None  # None: alpha = rank (scale 1)
    target_modules: list[str] = field(default_factory=lambda: list(UNET_TARGETS))
    train_text_encoder: bool = False
    text_encoder_target_modules: list[str] = field(default_factory=lambda: list(TEXT_TARGETS))
    learning_rate: float = 1e-4
    text_encoder_learning_rate: float = 5e-5
    steps: int = 20
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 0
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto | no | fp16 | bf16
    gradient_checkpointing: bool = True
    snr_gamma: float | None = 5.0  # min-SNR weighting; None disables
    noise_offset: float = 0.0
    caption_dropout: float = 0.0
    prior_loss_weight: float = 1.0
    seed: int = 0
    checkpoint_every: int = 0  # steps between checkpoints; 0: by time only
    checkpoint_seconds: float = 30.0  # seconds between checkpoints, whichever comes first; 0: by steps only
    checkpoints_keep: int = 2
    warm_start: str | None = None  # a directory or URI holding pytorch_lora_weights.safetensors
    objective: str = "sft"  # sft | dpo | sft+dpo (Diffusion-DPO on preference pairs; sft+dpo sums both)
    beta: float = 5000.0  # DPO: strength of the pull away from the reference (Wallace et al. use 2000-5000)
    reference: str | None = None  # DPO's frozen reference: this adapter fused into the base (None: the base)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; known: {sorted(known)}")
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        checks = [
            (self.rank >= 1, "rank must be >= 1"),
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.resolution >= 8 and self.resolution % 8 == 0, "resolution must be a multiple of 8"),
            (0.0 <= self.caption_dropout < 1.0, "caption_dropout must be in [0, 1)"),
            (self.mixed_precision in ("auto", "no", "fp16", "bf16"), "mixed_precision must be auto|no|fp16|bf16"),
            (self.checkpoints_keep >= 1, "checkpoints_keep must be >= 1"),
            (self.checkpoint_every >= 0 and self.checkpoint_seconds >= 0,
             "checkpoint_every and checkpoint_seconds must be >= 0"),
            (self.objective in OBJECTIVES, f"objective must be one of {'|'.join(OBJECTIVES)}"),
            (self.beta > 0, "beta must be > 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"invalid training config: {message}")

    @property
    def lora_alpha(self) -> float:
        return float(self.alpha if self.alpha is not None else self.rank)


@dataclass
class TrainResult:
    output_dir: str
    weights_path: str
    steps: int
    resumed_from: int
    final_loss: float
    losses: list[float]
    seconds: float
    cache: dict
    rank: int
    alpha: float
    mixed_precision: str
    loop_seconds: float = 0.0  # the optimisation loop alone (no model loading or data preparation)
    resume_note: str = ""  # "resumed from step-N", or why the run started fresh
    world_size: int = 1
    rank_digests: list[str] = field(default_factory=list)  # each process's final LoRA weights (sha256)


# ---------------------------------------------------------------- model parts

@dataclass
class Components:
    """Everything the loop needs from the base model; ``sdxl`` picks the conditioning."""

    base_model: str
    unet: object
    vae: object
    scheduler: object
    tokenizers: list
    text_encoders: list
    sdxl: bool
    device: object
    weight_dtype: object


def resolve_precision(requested: str) -> str:
    import torch

    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def load_components(base_model: str, device=None, weight_dtype=None) -> Components:
    """Load UNet, VAE, noise scheduler, tokenizer(s) and text encoder(s) via from_pretrained."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import AutoTokenizer, CLIPTextModel, CLIPTextModelWithProjection

    device = device or torch.device("cpu")
    weight_dtype = weight_dtype or torch.float32
    unet = UNet2DConditionModel.from_pretrained(base_model, subfolder="unet")
    sdxl = unet.config.addition_embed_type == "text_time"
    tokenizers = [AutoTokenizer.from_pretrained(base_model, subfolder="tokenizer")]
    text_encoders = [CLIPTextModel.from_pretrained(base_model, subfolder="text_encoder")]
    if sdxl:
        tokenizers.append(AutoTokenizer.from_pretrained(base_model, subfolder="tokenizer_2"))
        text_encoders.append(CLIPTextModelWithProjection.from_pretrained(base_model, subfolder="text_encoder_2"))
    vae = AutoencoderKL.from_pretrained(base_model, subfolder="vae")
    scheduler = DDPMScheduler.from_pretrained(base_model, subfolder="scheduler")
    for model in [unet, vae, *text_encoders]:
        model.requires_grad_(False)
        model.to(device, dtype=weight_dtype)
    vae.to(dtype=torch.float32)  # the SDXL VAE overflows in fp16; latents are cached anyway
    return Components(base_model, unet, vae, scheduler, tokenizers, text_encoders, sdxl, device, weight_dtype)


def encode_prompts(parts: Components, captions: list[str]) -> dict:
    """Text conditioning for a list of captions: ``prompt_embeds`` (+ ``pooled`` for SDXL)."""
    import torch

    embeds, pooled = [], None
    for tokenizer, encoder in zip(parts.tokenizers, parts.text_encoders, strict=True):
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(parts.device)
        out = encoder(ids, output_hidden_states=True)
        if parts.sdxl:
            embeds.append(out.hidden_states[-2])
            pooled = out[0]  # the projection encoder comes last: its text_embeds
        else:
            embeds.append(out.last_hidden_state)
    result = {"prompt_embeds": torch.cat(embeds, dim=-1)}
    if parts.sdxl:
        result["pooled"] = pooled
    return result


def encode_image(parts: Components, tensor) -> object:
    """Scaled latent of one preprocessed image (distribution mean: deterministic and cacheable)."""
    import torch

    with torch.no_grad():
        dist = parts.vae.encode(tensor.unsqueeze(0).to(parts.device, dtype=parts.vae.dtype)).latent_dist
    return (dist.mean * parts.vae.config.scaling_factor)[0]


# ---------------------------------------------------------------- data

class PreparedData:
    """Latents, time ids and (when the text encoders are frozen) text embeddings per example,
    through the content-keyed caches. Unreadable images are dropped with the reason."""

    def __init__(self, parts: Components, examples: list[Example], resolution: int, cache_dir,
                 cache_text: bool):
        self.examples, self.items, self.dropped = [], [], []
        self.latents = TensorCache(Path(cache_dir) / "latents" if cache_dir else None)
        self.texts = TensorCache(Path(cache_dir) / "text" if cache_dir else None)
        self.parts, self.cache_text = parts, cache_text
        for example in examples:
            try:
                self.items.append(self._latent(example, resolution))
                self.examples.append(example)
            except (ValueError, OSError) as exc:
                self.dropped.append({"uri": example.uri, "reason": str(exc)})
                log.warning("dropping %s: %s", example.uri, exc)
        self.empty = self._text("") if cache_text else None

    def _latent(self, example: Example, resolution: int) -> dict:
        key = TensorCache.key("latent", self.parts.base_model, resolution, example.sha256) if example.sha256 else None
        if key and (hit := self.latents.get(key)) is not None:
            return hit
        tensor, time_ids = preprocess(decode_image(read_image_bytes(example.uri)), resolution)
        import torch

        value = {"latent": encode_image(self.parts, tensor), "time_ids": torch.tensor(time_ids, dtype=torch.float32)}
        if key:
            self.latents.put(key, value)
        return value

    def _text(self, caption: str) -> dict:
        key = TensorCache.key("text", self.parts.base_model, caption)
        if (hit := self.texts.get(key)) is not None:
            return hit
        import torch

        with torch.no_grad():
            value = {k: v[0] for k, v in encode_prompts(self.parts, [caption]).items()}
        self.texts.put(key, value)
        return value

    def text(self, caption: str) -> dict:
        return self._text(caption)

    def stats(self) -> dict:
        return {"latent_hits": self.latents.hits, "latent_misses": self.latents.misses,
                "text_hits": self.texts.hits, "text_misses": self.texts.misses, "dropped": len(self.dropped)}


class Sampler:
    """Seeded epoch permutations; position is a pure function of the step, so resume is exact."""

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.size, self.batch_size, self.seed, self.rank, self.world = size, batch_size, seed, rank, world

    def batch(self, step: int) -> list[int]:
        import torch

        out = []
        start = (step * self.world + self.rank) * self.batch_size
        for flat in range(start, start + self.batch_size):
            epoch, pos = divmod(flat, self.size)
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 7919 + epoch))
            out.append(int(order[pos]))
        return out


# ---------------------------------------------------------------- loss

def add_lora(parts: Components, config: TrainConfig) -> list:
    """Attach LoRA adapters (seeded init); returns the trainable parameters per group."""
    import torch
    from peft import LoraConfig

    torch.manual_seed(config.seed)
    parts.unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                                      target_modules=list(config.target_modules)))
    groups = [{"params": [p for p in parts.unet.parameters() if p.requires_grad], "lr": config.learning_rate}]
    if config.train_text_encoder:
        te_config = LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                               target_modules=list(config.text_encoder_target_modules))
        for encoder in parts.text_encoders:
            encoder.add_adapter(te_config)
        params = [p for e in parts.text_encoders for p in e.parameters() if p.requires_grad]
        groups.append({"params": params, "lr": config.text_encoder_learning_rate})
    for group in groups:  # LoRA weights train in fp32 even when the frozen model is fp16/bf16
        for p in group["params"]:
            p.data = p.data.float()
    return groups


def per_sample_loss(parts: Components, latents, cond: dict, time_ids, timesteps, noise, snr_gamma, unet=None):
    """Per-example diffusion loss (MSE over C,H,W), min-SNR weighted when ``snr_gamma`` is set;
    ``unet`` defaults to the one being trained (DPO passes its frozen reference)."""
    import torch
    import torch.nn.functional as F
    from diffusers.training_utils import compute_snr

    scheduler = parts.scheduler
    noisy = scheduler.add_noise(latents, noise, timesteps)
    kwargs = {}
    if parts.sdxl:
        kwargs["added_cond_kwargs"] = {"text_embeds": cond["pooled"].to(parts.weight_dtype),
                                       "time_ids": time_ids.to(parts.device, dtype=parts.weight_dtype)}
    pred = (parts.unet if unet is None else unet)(noisy.to(parts.weight_dtype), timesteps, cond["prompt_embeds"].to(parts.weight_dtype),
                      **kwargs, return_dict=False)[0].float()
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    loss = F.mse_loss(pred, target.float(), reduction="none").mean(dim=(1, 2, 3))
    if snr_gamma:
        snr = compute_snr(scheduler, timesteps)
        clipped = torch.minimum(snr, torch.full_like(snr, snr_gamma))
        weight = clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr
        loss = loss * weight
    return loss


VALIDATION_TIMESTEPS = tuple(range(25, 1000, 50))  # 20 levels: a gate week has only tens of images
VALIDATION_SEED = 1234


def validation_losses(parts: Components, data: PreparedData, timesteps=VALIDATION_TIMESTEPS,
                      seed: int = VALIDATION_SEED, batch_size: int = 20, memo: dict | None = None) -> list[float]:
    """Per-image loss (mean over fixed noise levels) with noise drawn from (``seed``, the image's
    content hash, the noise level): an image gets the same noise whatever else is evaluated
    and in whatever order, so two adapters' losses pair image by image. Twenty levels, not
    five: on 15 held-out images the paired interval of a real 5 % gain went from
    [-8.6 %, +0.8 %] (not resolved) to [-7.6 %, -0.4 %]. An image's noise levels go through
    the UNet ``batch_size`` at a time (one batch of 20 on the demo model: 3.4x faster on a
    CPU than one call per level; the losses agree to 1e-6). ``memo`` ((content hash, caption) ->
    loss) lets one model's evaluation compute an image once across the sets it is in."""
    import torch

    out = []
    with torch.no_grad():
        for item, example in zip(data.items, data.examples, strict=True):
            key = (example.sha256 or example.uri, example.caption)
            if memo is not None and key in memo:
                out.append(memo[key])
                continue
            latents = item["latent"].unsqueeze(0).to(parts.device, dtype=torch.float32)
            cond = {k: v.unsqueeze(0).to(parts.device) for k, v in data.text(example.caption).items()}
            time_ids = item["time_ids"].unsqueeze(0)
            image_seed = int(content_hash([seed, example.sha256 or example.uri])[:15], 16)
            total = 0.0
            for start in range(0, len(timesteps), batch_size):
                chunk = timesteps[start:start + batch_size]
                noise = torch.cat([torch.randn(latents.shape, generator=torch.Generator().manual_seed(image_seed + t))
                                   for t in chunk]).to(parts.device)
                n = len(chunk)
                losses = per_sample_loss(parts, latents.expand(n, -1, -1, -1),
                                         {k: v.expand(n, *v.shape[1:]) for k, v in cond.items()},
                                         time_ids.expand(n, -1), torch.tensor(chunk, device=parts.device), noise, None)
                total += float(losses.sum())
            out.append(total / len(timesteps))
            if memo is not None:
                memo[key] = out[-1]
    return out


class LossMemo(dict):
    """:func:`validation_losses`' memo for one model, kept on disk so that a model is never
    evaluated twice on the same image: every week's evaluation sends the champion through the
    reference (earlier weeks' held-out images and pairs) again, and a kept champion saw all of
    it last week, as did a promoted challenger. The file is named by everything a loss depends
    on: the base model, the adapter's weights (their content hash; None: the bare base), the
    resolution, dtype and device type, and validation_losses' default noise levels and seed.
    Entries: ((content hash, caption), loss)."""

    def __init__(self, path: Path | None = None, entries: dict | None = None):
        super().__init__(entries or {})
        self.path, self.loaded = path, len(self)

    @classmethod
    def open(cls, cache_dir: str | Path | None, parts: Components, resolution: int,
             adapter: str | Path | None) -> LossMemo:
        if not cache_dir:
            return cls()
        weights = sha256_bytes(Path(adapter).read_bytes()) if adapter else None
        key = content_hash(["validation-loss-v1", parts.base_model, weights, resolution, str(parts.weight_dtype),
                            parts.device.type, list(VALIDATION_TIMESTEPS), VALIDATION_SEED])
        path = Path(cache_dir) / "losses" / key[:2] / f"{key}.json"
        entries = {}
        if path.exists():
            try:
                entries = {(sha, caption): float(loss) for sha, caption, loss in json.loads(path.read_text())}
            except (ValueError, TypeError) as exc:  # a torn or foreign file: recompute, and overwrite it
                log.warning("ignoring unreadable loss cache %s: %s", path, exc)
        return cls(path, entries)

    def save(self) -> None:
        """Write it (atomically) when this evaluation added losses."""
        if self.path is None or len(self) == self.loaded:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.part")
        # Only content-hashed images: a URI (an image without a hash) may later hold other bytes.
        tmp.write_text(json.dumps(sorted([sha, caption, loss] for (sha, caption), loss in self.items()
                                         if "/" not in sha)))
        os.replace(tmp, self.path)
        self.loaded = len(self)


# ---------------------------------------------------------------- checkpoints

def _lora_state(parts: Components, config: TrainConfig) -> dict:
    from peft.utils import get_peft_model_state_dict

    state = {f"unet.{k}": v for k, v in get_peft_model_state_dict(parts.unet).items()}
    if config.train_text_encoder:
        for i, encoder in enumerate(parts.text_encoders):
            state.update({f"te{i}.{k}": v for k, v in get_peft_model_state_dict(encoder).items()})
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def _load_lora_state(parts: Components, state: dict) -> None:
    from peft.utils import set_peft_model_state_dict

    set_peft_model_state_dict(parts.unet, {k[5:]: v for k, v in state.items() if k.startswith("unet.")})
    for i, encoder in enumerate(parts.text_encoders):
        sub = {k[len(f"te{i}."):]: v for k, v in state.items() if k.startswith(f"te{i}.")}
        if sub:
            set_peft_model_state_dict(encoder, sub)


# ---------------------------------------------------------------- the loop

def train_lora(config: TrainConfig, examples: list[Example], output_dir, *, class_examples: list[Example] | None = None,
               pairs: list | None = None, work_dir=None, cache_dir=None, stop_after: int | None = None,
               code_version: str = "", checkpoint_mirror: str | None = None) -> TrainResult:
    """Train (or resume) a LoRA; see the module docstring. ``pairs`` (:class:`training.dpo.PreferencePair`)
    feed the ``dpo`` / ``sft+dpo`` objectives. ``stop_after`` ends the loop after that many
    steps without writing the output (used to test kill-and-resume).
    ``checkpoint_mirror``: a store URI prefix that holds a copy of every checkpoint."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from diffusers.optimization import get_scheduler

    config.validate()
    started = time.perf_counter()
    output_dir = Path(output_dir)
    work_dir = Path(work_dir) if work_dir else output_dir / "_work"
    precision = resolve_precision(config.mixed_precision)
    if precision == "fp16" and not torch.cuda.is_available():
        raise ValueError("mixed_precision=fp16 needs a CUDA GPU (for its gradient scaler); use bf16 or no on CPU")
    # accumulate() only defers the optimizer step when Accelerator knows the accumulation count.
    # A text encoder's last layer feeds nothing SDXL uses: DDP must expect LoRA weights without grads.
    accelerator = Accelerator(mixed_precision=precision, cpu=not torch.cuda.is_available(),
                              gradient_accumulation_steps=config.gradient_accumulation_steps,
                              kwargs_handlers=[DistributedDataParallelKwargs(
                                  find_unused_parameters=config.train_text_encoder)])
    rank, world = accelerator.process_index, accelerator.num_processes
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)
    parts = load_components(config.base_model, accelerator.device, dtype)
    warm_file = _weights_file(config.warm_start, work_dir / "warm-start" / f"rank-{rank}") \
        if config.warm_start else None
    # DPO's reference, fetched once per job (and hashed into the fingerprint like the warm start)
    reference_file = _weights_file(config.reference, work_dir / "reference" / f"rank-{rank}") \
        if config.reference and config.objective != "sft" else None
    if warm_file:
        warm_rank, warm_alpha = lora_rank_alpha(str(warm_file))
        if (warm_rank, warm_alpha) != (config.rank, config.lora_alpha):
            log.info("warm start adapter has rank %s alpha %s: using those", warm_rank, warm_alpha)
            config.rank, config.alpha = warm_rank, warm_alpha
    groups = add_lora(parts, config)
    if warm_file:
        load_adapter_into_unet(parts.unet, str(warm_file))
    if config.gradient_checkpointing:
        parts.unet.enable_gradient_checkpointing()
        parts.unet.train()

    cache_text = not config.train_text_encoder
    sft, dpo = config.objective != "dpo", config.objective != "sft"
    data = PreparedData(parts, examples if sft else [], config.resolution, cache_dir, cache_text)
    prior = PreparedData(parts, class_examples, config.resolution, cache_dir, cache_text) if class_examples else None
    if sft and not data.items:
        raise ValueError("no readable training images: " + "; ".join(d["reason"] for d in data.dropped[:3]))
    pair_data = reference = None
    if dpo:
        from training.dpo import PairData, dpo_batch_loss, load_reference

        pair_data = PairData(PreparedData, parts, list(pairs or []), config.resolution, cache_dir, cache_text)
        if not pair_data.pairs:
            raise ValueError(f"objective {config.objective} needs preference pairs with readable images "
                             f"({len(pairs or [])} given, {pair_data.dropped} dropped)")
        reference = load_reference(parts, str(reference_file) if reference_file else None)

    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    # A prepared scheduler steps once per process per optimizer step.
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=config.lr_warmup_steps * world,
                                 num_training_steps=config.steps * world)
    trained_encoders = parts.text_encoders if config.train_text_encoder else []
    prepared = accelerator.prepare(parts.unet, *trained_encoders, optimizer, lr_scheduler)
    parts.unet, optimizer, lr_scheduler = prepared[0], prepared[-2], prepared[-1]
    if trained_encoders:  # wrapped too, so their gradients are averaged across processes
        parts.text_encoders = list(prepared[1:-2])
    plain = unwrapped(parts, accelerator)  # the same modules without wrappers: for their state dicts
    generator = torch.Generator().manual_seed(config.seed + 10_000 * rank)
    sampler = Sampler(len(data.items), config.batch_size, config.seed, rank, world) if sft else None
    pair_sampler = Sampler(len(pair_data.pairs), config.batch_size, config.seed + 2, rank, world) if dpo else None
    prior_sampler = Sampler(len(prior.items), config.batch_size, config.seed + 1, rank, world) if prior else None

    code = code_version or current_code_version()
    checkpoints = Checkpoints(work_dir, keep=config.checkpoints_keep, accelerator=accelerator, mirror=checkpoint_mirror,
                              fingerprint=fingerprint(config, examples, class_examples, pairs=pairs, code=code,
                                                      world=world, precision=precision,
                                                      warm_start_sha256=_file_sha256(warm_file),
                                                      reference_sha256=_file_sha256(reference_file)))
    step, losses = 0, []
    if state := checkpoints.restore():
        _load_lora_state(plain, state["lora"])
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if accelerator.scaler is not None and state.get("scaler"):
            accelerator.scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        random.setstate(state["python_rng"])
        step, losses = state["step"], list(state["losses"])
    (log.warning if "discarded" in checkpoints.note else log.info)("%s (%s)", checkpoints.note, work_dir)
    print(checkpoints.note, flush=True)
    resumed_from = step
    loop_started = last_checkpoint = _clock()

    while step < config.steps:
        if stop_after is not None and step - resumed_from >= stop_after:
            return TrainResult(str(output_dir), "", step, resumed_from, losses[-1] if losses else math.nan, losses,
                               time.perf_counter() - started, data.stats(), config.rank, config.lora_alpha, precision,
                               resume_note=checkpoints.note, world_size=world)
        total = None
        for micro in range(config.gradient_accumulation_steps):
            draw = step * config.gradient_accumulation_steps + micro  # each micro-batch its own images
            batches = ([(data, sampler.batch(draw), False)] if sft else []) + \
                ([(prior, prior_sampler.batch(draw), True)] if prior else [])
            with accelerator.accumulate(parts.unet, *trained_encoders):
                loss = _batch_loss(parts, config, batches, generator, cache_text) if batches else 0.0
                if dpo:
                    loss = loss + dpo_batch_loss(parts, reference, config, pair_data, pair_sampler.batch(draw),
                                                 generator, cache_text)
                accelerator.backward(loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_([p for g in groups for p in g["params"]], config.max_grad_norm)
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                total = float(loss.detach()) if total is None else total + float(loss.detach())
        step += 1
        losses.append(round(total / config.gradient_accumulation_steps, 6))
        if step % 5 == 0 or step == config.steps:
            print(f"step {step}/{config.steps} loss {losses[-1]:.4f}", flush=True)
        now = _clock()
        if step < config.steps and _checkpoint_due(config, step, now - last_checkpoint, world):
            checkpoints.save(step, lora_state=_lora_state(plain, config), optimizer=optimizer,
                             lr_scheduler=lr_scheduler, scaler=accelerator.scaler, generator=generator, losses=losses)
            last_checkpoint = now

    digests = checkpoints.digests(_lora_state(plain, config))
    accelerator.wait_for_everyone()
    weights = ""
    if accelerator.is_main_process:
        weights = str(save_lora(plain, config, output_dir))
        (output_dir / "training_config.json").write_text(
            json.dumps({**asdict(config), "mixed_precision_used": precision, "code_version": code,
                        "world_size": world}, indent=2, sort_keys=True))
    stats = data.stats()
    if pair_data:
        stats["pairs"], stats["pairs_dropped"] = len(pair_data.pairs), pair_data.dropped
        stats.update({f"pair_{k}": v for k, v in pair_data.images.stats().items()})
    if prior:
        stats["prior_dropped"] = len(prior.dropped)
    stats["dropped_images"] = data.dropped
    return TrainResult(str(output_dir), weights, step, resumed_from, losses[-1], losses,
                       round(time.perf_counter() - started, 3), stats, config.rank, config.lora_alpha, precision,
                       round(_clock() - loop_started, 3), resume_note=checkpoints.note, world_size=world,
                       rank_digests=digests)


_clock = time.monotonic  # one reading per step decides the time cadence


def _checkpoint_due(config: TrainConfig, step: int, since_last: float, world: int) -> bool:
    """Every ``checkpoint_every`` steps or ``checkpoint_seconds`` seconds, whichever comes
    first. The main process's clock decides for all (they must save together)."""
    if config.checkpoint_every and step % config.checkpoint_every == 0:
        return True
    if not config.checkpoint_seconds:
        return False
    due = since_last >= config.checkpoint_seconds
    if world > 1:
        from accelerate.utils import broadcast_object_list

        due = broadcast_object_list([due], from_process=0)[0]
    return due


def unwrapped(parts: Components, accelerator) -> Components:
    """A view of ``parts`` with the trained modules out of their DDP wrappers, for reading and
    writing their weights. ``parts`` itself keeps the wrappers: training goes through them (the
    wrapper is what averages gradients across processes)."""
    return replace(parts, unet=accelerator.unwrap_model(parts.unet),
                   text_encoders=[accelerator.unwrap_model(e) for e in parts.text_encoders])


def _file_sha256(path: Path | None) -> str:
    if not path:
        return ""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _batch_loss(parts: Components, config: TrainConfig, batches, generator, cache_text: bool):
    """Loss of one (instance [+ class]) batch. All randomness comes from ``generator``."""
    import torch

    results = []
    for data, indices, is_prior in batches:
        latents = torch.stack([data.items[i]["latent"] for i in indices]).float()
        time_ids = torch.stack([data.items[i]["time_ids"] for i in indices])
        captions = [data.examples[i].caption for i in indices]
        drop = torch.rand(len(indices), generator=generator) < config.caption_dropout
        captions = ["" if d else c for c, d in zip(captions, drop.tolist(), strict=True)]
        if cache_text:
            texts = [data.text(c) for c in captions]
            cond = {k: torch.stack([t[k] for t in texts]).to(parts.device) for k in texts[0]}
        else:
            cond = encode_prompts(parts, captions)
        noise = torch.randn(latents.shape, generator=generator)
        if config.noise_offset:
            noise = noise + config.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1),
                                                              generator=generator)
        timesteps = torch.randint(0, parts.scheduler.config.num_train_timesteps, (len(indices),), generator=generator)
        latents, noise, timesteps = latents.to(parts.device), noise.to(parts.device), timesteps.to(parts.device)
        loss = per_sample_loss(parts, latents, cond, time_ids, timesteps, noise, config.snr_gamma)
        weights = torch.tensor([data.examples[i].weight for i in indices], device=loss.device)
        loss = (loss * weights).mean()
        results.append(loss * (config.prior_loss_weight if is_prior else 1.0))
    return sum(results)


# ---------------------------------------------------------------- output

def save_lora(parts: Components, config: TrainConfig, output_dir: Path) -> Path:
    """Diffusers-format weights with adapter metadata, plus a kohya-format copy with alpha."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    output_dir.mkdir(parents=True, exist_ok=True)
    pipeline_cls = StableDiffusionXLPipeline if parts.sdxl else StableDiffusionPipeline
    kwargs = {"unet_lora_layers": convert_state_dict_to_diffusers(get_peft_model_state_dict(parts.unet)),
              "unet_lora_adapter_metadata": parts.unet.peft_config["default"].to_dict()}
    if config.train_text_encoder:
        names = ["text_encoder", "text_encoder_2"]
        for name, encoder in zip(names, parts.text_encoders, strict=False):
            kwargs[f"{name}_lora_layers"] = convert_state_dict_to_diffusers(get_peft_model_state_dict(encoder))
            kwargs[f"{name}_lora_adapter_metadata"] = encoder.peft_config["default"].to_dict()
    pipeline_cls.save_lora_weights(str(output_dir), weight_name=WEIGHTS_NAME, **kwargs)
    write_kohya_copy(output_dir, config.lora_alpha, pipeline_cls)
    return output_dir / WEIGHTS_NAME


def write_kohya_copy(output_dir: Path, alpha: float, pipeline_cls) -> Path:
    import torch
    from diffusers.utils import convert_all_state_dict_to_peft, convert_state_dict_to_kohya
    from safetensors.torch import save_file

    state, _ = pipeline_cls.lora_state_dict(str(output_dir), weight_name=WEIGHTS_NAME)
    kohya = convert_state_dict_to_kohya(convert_all_state_dict_to_peft(state))
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(alpha))  # the converter assumes alpha = rank
    path = output_dir / KOHYA_NAME
    save_file({k: v.contiguous() for k, v in kohya.items()}, str(path), metadata={"ss_network_alpha": str(alpha)})
    return path


def _weights_file(location: str, directory: Path | None = None) -> Path:
    """A local path to the adapter weights in a directory, a file, or a store URI prefix
    (downloaded into ``directory``, by default a new temporary one)."""
    if "://" in location:
        import tempfile

        from sleeve.jobs import output_location

        store, prefix = output_location(location)
        local = Path(directory or tempfile.mkdtemp(prefix="sleeve-lora-")) / WEIGHTS_NAME
        return store.download(prefix + WEIGHTS_NAME, local)
    path = Path(location)
    return path / WEIGHTS_NAME if path.is_dir() else path


def adapter_config(location: str) -> tuple[int, float, list[str]]:
    """Rank, alpha and target modules of a saved adapter, from its safetensors metadata."""
    from safetensors import safe_open

    with safe_open(str(_weights_file(location)), framework="pt") as f:
        meta = json.loads((f.metadata() or {}).get("lora_adapter_metadata", "{}"))
    if "unet.r" not in meta:  # diffusers stores the UNet's LoraConfig flat as "unet.<field>"
        raise ValueError(f"adapter at {location} has no rank metadata; retrain or start from base")
    targets = meta.get("unet.target_modules") or UNET_TARGETS
    return int(meta["unet.r"]), float(meta.get("unet.lora_alpha", meta["unet.r"])), sorted(targets)


def lora_rank_alpha(location: str) -> tuple[int, float]:
    """Rank and alpha of a saved adapter, from its safetensors metadata."""
    rank, alpha, _ = adapter_config(location)
    return rank, alpha


def load_adapter_into_unet(unet, location: str) -> None:
    """Copy a saved diffusers-format LoRA into the UNet's 'default' adapter: the warm start,
    and DPO's reference."""
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(_weights_file(location)))
    unet_state = {k[len("unet."):]: v for k, v in state.items() if k.startswith("unet.")}
    result = set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(unet_state), adapter_name="default")
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise ValueError(f"adapter does not match the target modules: {unexpected[:3]}")


def current_code_version() -> str:
    """The code that trained a model: $SLEEVE_CODE_VERSION (set by the image build) or git."""
    import subprocess

    if os.environ.get("SLEEVE_CODE_VERSION"):
        return os.environ["SLEEVE_CODE_VERSION"]
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_model_card(output_dir, config: TrainConfig, *, manifest_uri: str, counts: dict, result: TrainResult,
                     version: str, kind: str = "style") -> Path:
    """README.md beside the weights: enough to reproduce or audit the adapter."""
    hyper = json.dumps(asdict(config), indent=2, sort_keys=True)
    card = f"""---
base_model: {config.base_model}
library_name: diffusers
tags: [lora, text-to-image, sleeve, {kind}]
---
# Sleeve {kind} LoRA `{version}`

- Base model: `{config.base_model}`
- Data manifest: `{manifest_uri}` ({json.dumps(counts, sort_keys=True)})
- Code version: `{current_code_version()}`
- Steps: {result.steps}, final loss {result.final_loss:.5f}, precision {result.mixed_precision}
- LoRA rank {result.rank}, alpha {result.alpha}

Load with diffusers: `pipe.load_lora_weights(path, weight_name="{WEIGHTS_NAME}")`.
`{KOHYA_NAME}` is the same adapter in kohya format (A1111, ComfyUI).

## Hyper-parameters
```json
{hyper}
```
"""
    path = Path(output_dir) / "README.md"
    path.write_text(card)
    return path
