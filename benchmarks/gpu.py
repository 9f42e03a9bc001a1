"""GPU benchmark at real SDXL size with random weights (no download; the compute is the same).

    make bench-gpu                                  # = python -m benchmarks.gpu, on a CUDA GPU
    python -m benchmarks.gpu --peak-tflops 312      # the GPU's dense bf16 peak, if not recognised
    python -m benchmarks.gpu --device cpu --tiny    # the same code paths on a tiny model (tests)

Builds the SDXL UNet, VAE and both CLIP text encoders from the project's own configs
(:func:`sdxl_configs`, stabilityai/stable-diffusion-xl-base-1.0's shapes) with random init,
then measures, in this order, each against a time budget (default 450 s, so the whole run
stays inside 8 minutes; what does not fit is listed as skipped, never guessed):

1. s/image at 1024², 30 steps, CFG, bf16, batch 1 and 4, through the generator's render path;
2. the same with a fused rank-16 LoRA (the production path for one adapter) vs none;
3. LoRA training s/step at 1024², batch 1, gradient checkpointing (the trainer's loss, AdamW);
4. s/image with ``torch.compile`` (batch 1 and 4; the first call's compile time apart).

Each figure comes with its ratio to the FLOP floor: 13.5 TFLOP per SDXL step with CFG
(2 UNet forwards at 128² latents; the tiny model uses its counted FLOPs) x steps / the GPU's
peak dense bf16 FLOP/s; training's floor is one forward and its activation gradients, 2 x 6.75
TFLOP per step. The anchors to beat are printed beside the best s/image: diffusers' own
optimised A100 figure (2.43 s/image, 30 steps) and TensorRT on an H100 (1.47 s). The report is
written after every section to ``$SLEEVE_HOME/bench-gpu.json`` (``--out`` to change).
Without CUDA it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

SDXL_TFLOP_PER_STEP_CFG = 13.5
ANCHORS_S_PER_IMAGE = {"diffusers_optimised_a100": 2.43, "tensorrt_h100": 1.47}
# Dense bf16 peaks (no sparsity) by device-name fragment, TFLOP/s.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L40": 181.0, "L4": 121.0,
               "A10": 125.0, "4090": 165.0}
BUDGET_S = 450.0
# Seconds a section needs at full size; a section is skipped when less than this is left.
NEEDS_S = {"generate": 25.0, "lora": 45.0, "train": 45.0, "compile": 150.0}
PROMPT = "album cover of a blue ocean at night, film grain"
LORA_RANK = 16
NO_CUDA = ("benchmarks.gpu needs a CUDA GPU and none is visible (torch.cuda.is_available() is False). "
           "Run `make bench-gpu` on a GPU machine; to exercise the code paths here: "
           "python -m benchmarks.gpu --device cpu --tiny")


def sdxl_configs(scale: str) -> dict:
    """Component configs of stabilityai/stable-diffusion-xl-base-1.0 (``full``); ``tiny`` shrinks
    widths and depths (same block structure) so the code paths run on a CPU in seconds."""
    full = scale == "full"
    ch = (320, 640, 1280) if full else (32, 64, 64)
    small_text = dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                      projection_dim=32)
    text_l = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  projection_dim=768) if full else small_text
    text_g = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                  projection_dim=1280) if full else small_text
    time_dim = 256 if full else 8
    unet = dict(
        sample_size=128, in_channels=4, out_channels=4, block_out_channels=ch, layers_per_block=2 if full else 1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10) if full else (1, 1, 1),
        attention_head_dim=(5, 10, 20) if full else (2, 4, 4), use_linear_projection=True,
        cross_attention_dim=text_l["hidden_size"] + text_g["hidden_size"], addition_embed_type="text_time",
        addition_time_embed_dim=time_dim, projection_class_embeddings_input_dim=6 * time_dim + text_g["projection_dim"],
        norm_num_groups=32 if full else 8,
    )
    vae = dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=1024 if full else 64,
        block_out_channels=(128, 256, 512, 512) if full else (16, 32, 32, 32), layers_per_block=2 if full else 1,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32 if full else 8, scaling_factor=0.13025,
    )
    return {"unet": unet, "vae": vae, "text_l": text_l, "text_g": text_g}


def build_pipeline(scale: str, device: str, dtype):
    """A random-init SDXL pipeline built directly on ``device`` (no weights read or downloaded)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from sleeve.tinymodel import write_tokenizer_files

    cfg = sdxl_configs(scale)
    with tempfile.TemporaryDirectory() as tmp:
        vocab = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(vocab=f"{tmp}/vocab.json", merges=f"{tmp}/merges.txt", model_max_length=77)
    common = dict(vocab_size=vocab, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id, hidden_act="gelu")
    with torch.device(device):
        unet = UNet2DConditionModel(**cfg["unet"])
        vae = AutoencoderKL(**cfg["vae"])
        text_l = CLIPTextModel(CLIPTextConfig(**common, **cfg["text_l"]))
        text_g = CLIPTextModelWithProjection(CLIPTextConfig(**common, **cfg["text_g"]))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=text_l, text_encoder_2=text_g, tokenizer=tokenizer,
                                     tokenizer_2=tokenizer, unet=unet, scheduler=scheduler)
    return pipe.to(device=device, dtype=dtype)


def _unet_inputs(unet, n: int, latent: int, device: str, dtype) -> dict:
    import torch

    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    return dict(sample=torch.randn(n, 4, latent, latent, device=device, dtype=dtype),
                encoder_hidden_states=torch.randn(n, 77, unet.config.cross_attention_dim, device=device, dtype=dtype),
                added_cond_kwargs={"text_embeds": torch.randn(n, pooled, device=device, dtype=dtype),
                                   "time_ids": torch.randn(n, 6, device=device, dtype=dtype)})


def unet_forward_flops(unet, n: int, latent: int, device: str, dtype) -> int:
    """FLOPs of one UNet forward on ``n`` samples, counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    args = _unet_inputs(unet, n, latent, device, dtype)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(timestep=torch.tensor(500, device=device), **args)
    return counter.get_total_flops()


def measured_matmul_tflops(device: str, dtype, size: int) -> float:
    """What a large GEMM reaches here: the ceiling a real kernel mix can approach."""
    import torch

    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    _sync(device)
    started, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * size**3 * reps / (time.perf_counter() - started) / 1e12


def render_seconds(gen, images: int, steps: int, defaults) -> tuple[float, float]:
    """(first call incl. warm-up/compile, timed call) seconds for one request of ``images``."""
    from inference.generator import ImageJob, Request, expand

    jobs = expand(Request("gpu-bench", PROMPT, "text", images), defaults)
    started = time.perf_counter()
    gen.render([ImageJob(**{**j.__dict__, "steps": 2}) for j in jobs])  # kernels, allocator, compile
    _sync(gen.device)
    warm = time.perf_counter() - started
    started = time.perf_counter()
    gen.render(jobs)
    _sync(gen.device)
    return warm, time.perf_counter() - started


def add_random_lora(pipe, directory: Path, rank: int) -> Path:
    """A random rank-``rank`` LoRA on the UNet's attention projections, saved in diffusers format."""
    import torch
    from diffusers import StableDiffusionXLPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = pipe.unet
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                target_modules=["to_k", "to_q", "to_v", "to_out.0"]), adapter_name="bench")
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name="bench"))
    StableDiffusionXLPipeline.save_lora_weights(directory, unet_lora_layers=state)
    unet.delete_adapters("bench")
    return directory / "pytorch_lora_weights.safetensors"


def training_step_seconds(pipe, size: int, device: str, dtype, steps: int) -> dict:
    """LoRA training steps on a copy of the UNet: the trainer's loss, AdamW, gradient
    checkpointing, bf16 weights with fp32 LoRA under autocast (what ``train_lora`` runs once the
    latents and text embeddings are cached)."""
    import copy

    import torch
    from diffusers import DDPMScheduler
    from diffusers.models.attention_processor import AttnProcessor2_0

    from training.trainer import Components, TrainConfig, add_lora, per_sample_loss

    unet = copy.deepcopy(pipe.unet)
    unet.unfuse_qkv_projections()  # the trainer's LoRA targets the separate q, k, v projections
    unet.set_attn_processor(AttnProcessor2_0())
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    parts = Components("random", unet, pipe.vae, scheduler, [], [], True, torch.device(device), dtype)
    groups = add_lora(parts, TrainConfig(base_model="random", resolution=size, rank=LORA_RANK))
    unet.enable_gradient_checkpointing()
    unet.train()
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-2)
    inputs = _unet_inputs(unet, 1, size // pipe.vae_scale_factor, device, torch.float32)
    cond = {"prompt_embeds": inputs["encoder_hidden_states"], "pooled": inputs["added_cond_kwargs"]["text_embeds"]}
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32)
    autocast = torch.autocast(device.split(":")[0], dtype=dtype, enabled=dtype != torch.float32)
    times = []
    for step in range(steps + 2):  # two warm-up steps
        started = time.perf_counter()
        with autocast:
            loss = per_sample_loss(parts, inputs["sample"], cond, time_ids, torch.tensor([500], device=device),
                                   torch.randn_like(inputs["sample"]), 5.0).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= 2:
            times.append(time.perf_counter() - started)
    del unet, parts, optimizer
    return {"s_per_step": _sig(sorted(times)[len(times) // 2]), "steps_timed": len(times),
            "gradient_checkpointing": True, "batch": 1, "lora_rank": LORA_RANK}


def run(*, tiny: bool, device: str, size: int, steps: int, batches=(1, 4), peak_tflops: float | None = None,
        budget_s: float = BUDGET_S, compile_backend: str = "inductor", train_steps: int = 5,
        out: Path | None = None) -> dict:
    import torch

    from inference.generator import (
        COMPILE_OPTIONS,
        CoverGenerator,
        Defaults,
        apply_adapters,
        prepare_pipeline,
    )

    started = time.perf_counter()
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    matmul = measured_matmul_tflops(device, dtype, 8192 if device.startswith("cuda") else 512)
    known = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    peak, peak_source = ((peak_tflops, "--peak-tflops") if peak_tflops else (known, f"table ({name})") if known
                         else (matmul, "measured GEMM (device not in the table)"))
    pipe = prepare_pipeline(build_pipeline("tiny" if tiny else "full", device, dtype), device)
    latent = size // pipe.vae_scale_factor
    counted = unet_forward_flops(pipe.unet, 2, latent, device, dtype) / 1e12  # one CFG step, one image
    floor_tflop = counted if tiny or size != 1024 else SDXL_TFLOP_PER_STEP_CFG
    gen_floor_s = floor_tflop * steps / peak  # per image
    defaults = Defaults(width=size, height=size, steps=steps)
    report = {
        "device": name, "model": "tiny" if tiny else "SDXL-size, random weights", "size": size, "steps": steps,
        "dtype": str(dtype).removeprefix("torch."), "peak_tflops": _sig(peak), "peak_source": peak_source,
        "matmul_tflops_measured": _sig(matmul), "unet_tflop_per_step_cfg_counted": _sig(counted),
        "floor_tflop_per_step_cfg": _sig(floor_tflop), "floor_s_per_image": _sig(gen_floor_s),
        "budget_s": budget_s, "generation": [], "training": None, "skipped": [], "errors": [],
        "anchors_s_per_image": ANCHORS_S_PER_IMAGE,
    }

    def fits(section: str) -> bool:
        left = budget_s - (time.perf_counter() - started)
        if not tiny and left < NEEDS_S[section]:
            report["skipped"].append(f"{section}: {left:.0f} s of the {budget_s:.0f} s budget left")
            return False
        return True

    def generation(label: str, gen, batch: int, **extra) -> None:
        try:
            warm, seconds = render_seconds(gen, batch, steps, defaults)
        except Exception as exc:  # one section failing (say, out of memory) must not lose the rest
            report["errors"].append(f"{label} batch {batch}: {type(exc).__name__}: {exc}"[:300])
            return
        per_image = seconds / batch
        report["generation"].append({"case": label, "batch": batch, **extra, "s_per_image": _sig(per_image),
                                     "first_call_s": _sig(warm), "ratio_to_flop_floor": _sig(per_image / gen_floor_s)})
        _write(report, out)

    gen = CoverGenerator.from_pipeline(pipe, defaults=defaults)
    lora = "none"
    for batch in batches:
        if fits("generate"):
            generation("eager", gen, batch, compile=False, lora="none")
    if fits("lora"):
        pipe.unfuse_qkv_projections()  # LoRA layers sit on the separate projections: fold them in first
        with tempfile.TemporaryDirectory() as tmp:
            path = add_random_lora(pipe, Path(tmp), LORA_RANK)
            apply_adapters(pipe, [("random rank-16 LoRA", path, 1.0)])
        pipe.fuse_qkv_projections()
        lora = f"fused rank {LORA_RANK}"
        generation("eager, fused LoRA", gen, max(batches), compile=False, lora=lora)
    if fits("train"):
        try:
            train = training_step_seconds(pipe, size, device, dtype, train_steps)
            floor = floor_tflop / peak  # one sample's forward + its activation gradients = 2 forwards, as CFG
            report["training"] = {**train, "floor_s_per_step": _sig(floor),
                                  "ratio_to_flop_floor": _sig(train["s_per_step"] / floor)}
        except Exception as exc:
            report["errors"].append(f"training: {type(exc).__name__}: {exc}"[:300])
        _write(report, out)
    if fits("compile"):
        pipe.unet.compile(**{**COMPILE_OPTIONS, "backend": compile_backend})
        for batch in batches:
            if fits("compile"):
                generation("torch.compile", gen, batch, compile=compile_backend, lora=lora)
    timed = [g["s_per_image"] for g in report["generation"]]
    if timed:
        best = min(timed)
        report["best_s_per_image"] = best
        report["speedup_vs_anchors"] = {k: _sig(v / best) for k, v in ANCHORS_S_PER_IMAGE.items()}
    report["wall_s"] = round(time.perf_counter() - started, 1)
    _write(report, out)
    return report


def _sig(x: float) -> float:
    """Four significant figures (a tiny model's TFLOP counts are far below 0.001)."""
    return float(f"{x:.4g}")


def _write(report: dict, out: Path | None) -> None:
    if out is not None:
        out.write_text(json.dumps(report, indent=2))


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny only)")
    parser.add_argument("--tiny", action="store_true", help="a tiny model instead of SDXL size (code-path check)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 1024; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default 30; --tiny: 2)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4], help="images per request (max 4)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak; default from the device name, else a measured GEMM")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="stop starting sections after this")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (tests: eager)")
    parser.add_argument("--out", type=Path, default=None, help="report path (default $SLEEVE_HOME/bench-gpu.json)")
    args = parser.parse_args(argv)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.tiny:
        parser.error("an SDXL-size model on a CPU would run for hours; add --tiny to check the code paths")
    if max(args.batches) > 4:
        parser.error("a request renders at most 4 images per forward pass (inference.generator.IMAGES_PER_PASS)")
    if args.out is None:
        from sleeve.settings import get_settings

        settings = get_settings()
        settings.home.mkdir(parents=True, exist_ok=True)
        args.out = settings.home / "bench-gpu.json"
    report = run(tiny=args.tiny, device=args.device, size=args.size or (64 if args.tiny else 1024),
                 steps=args.steps or (2 if args.tiny else 30), batches=tuple(args.batches),
                 peak_tflops=args.peak_tflops, budget_s=args.budget_s, compile_backend=args.compile_backend,
                 out=args.out)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}", file=sys.stderr)
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
