"""GPU benchmark at real SDXL dimensions, random weights (no download; compute is identical).

    make bench-gpu                                   # = python -m benchmarks.gpu: 1024², 30 steps, batch 1 and 4
    python -m benchmarks.gpu --peak-tflops 312       # A100 bf16 dense peak
    python -m benchmarks.gpu --allow-cpu --scale small --size 64 --steps 2 --batches 1 2  # smoke test

Builds the full SDXL UNet / VAE / both CLIP text encoders from their configs with random init,
runs our generator's render path (bf16, SDPA, VAE slicing) and reports seconds per image and the
ratio to the FLOP floor: UNet FLOPs per step (counted with torch's FlopCounterMode on one real
forward of the CFG-doubled batch) x steps / peak bf16 FLOP/s. The VAE and text encoders are
left out of the floor, so the ratio is an upper bound on UNet inefficiency.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

H100_BF16_DENSE_TFLOPS = 989.0  # H100/H200 SXM, dense (no sparsity)


def sdxl_configs(scale: str) -> dict:
    """Component configs of stabilityai/stable-diffusion-xl-base-1.0; ``small`` shrinks widths and
    depths (same block structure) so the script can be smoke-tested on a CPU."""
    full = scale == "full"
    ch = (320, 640, 1280) if full else (32, 64, 64)
    text_l = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                  projection_dim=768) if full else dict(hidden_size=32, intermediate_size=64,
                                                        num_attention_heads=4, num_hidden_layers=2, projection_dim=32)
    text_g = dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32,
                  projection_dim=1280) if full else dict(hidden_size=32, intermediate_size=64,
                                                         num_attention_heads=4, num_hidden_layers=2, projection_dim=32)
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


def unet_flops_per_step(pipe, batch: int, size: int, device: str, dtype) -> int:
    """FLOPs of one UNet forward on the CFG-doubled batch (what every denoising step runs)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    unet, n = pipe.unet, 2 * batch
    latent = size // pipe.vae_scale_factor
    text_dim = unet.config.cross_attention_dim
    pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
    args = dict(
        sample=torch.randn(n, 4, latent, latent, device=device, dtype=dtype), timestep=torch.tensor(500, device=device),
        encoder_hidden_states=torch.randn(n, 77, text_dim, device=device, dtype=dtype),
        added_cond_kwargs={"text_embeds": torch.randn(n, pooled, device=device, dtype=dtype),
                           "time_ids": torch.randn(n, 6, device=device, dtype=dtype)},
    )
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        unet(**args)
    return counter.get_total_flops()


def run(scale: str = "full", size: int = 1024, steps: int = 30, batches=(1, 4), peak_tflops: float = 989.0,
        device: str = "cuda", dtype_name: str = "bf16", compile: bool = False) -> dict:
    import torch
    from diffusers.models.attention_processor import AttnProcessor2_0

    from inference.generator import CoverGenerator, Defaults, Request, _torch_dtype, expand

    dtype = _torch_dtype(dtype_name, device)
    pipe = build_pipeline(scale, device, dtype)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    if device.startswith("cuda"):
        pipe.unet.to(memory_format=torch.channels_last)
    if compile:
        pipe.unet.compile(mode="max-autotune-no-cudagraphs")
    defaults = Defaults(width=size, height=size, steps=steps)
    results = []
    for batch in batches:
        gen = CoverGenerator.__new__(CoverGenerator)  # the generator's render path on the prebuilt pipeline
        gen.pipe, gen.batch_size, gen.defaults, gen.device = pipe, batch, defaults, device
        jobs = expand(Request("gpu-bench", "album cover of a blue ocean at night", "text", batch), defaults)
        warm = [j.__class__(**{**j.__dict__, "steps": 2}) for j in jobs]
        gen.render(warm)  # warm-up: kernels, allocator, compile
        _sync(device)
        started = time.perf_counter()
        gen.render(jobs)
        _sync(device)
        elapsed = time.perf_counter() - started
        flops = unet_flops_per_step(pipe, batch, size, device, dtype)
        floor_s = flops * steps / (peak_tflops * 1e12)
        results.append({"batch": batch, "s_per_image": round(elapsed / batch, 4), "batch_s": round(elapsed, 3),
                        "unet_gflops_per_step": round(flops / 1e9, 3), "flop_floor_s_per_image": round(floor_s / batch, 4),
                        "ratio_to_flop_floor": round(elapsed / floor_s, 2)})
    return {"device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "scale": scale,
            "size": size, "steps": steps, "dtype": str(dtype).removeprefix("torch."), "peak_tflops": peak_tflops,
            "compile": compile, "results": results}


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
                        help="the GPU's peak dense bf16 TFLOP/s (H100/H200 SXM: 989; A100: 312; L40S: 362)")
    parser.add_argument("--scale", choices=["full", "small"], default="full", help="small: reduced widths/depths")
    parser.add_argument("--dtype", default=None, help="bf16 | fp16 | fp32 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    parser.add_argument("--allow-cpu", action="store_true", help="run on CPU (smoke test with --scale small)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("benchmarks.gpu needs a CUDA GPU and none is visible (torch.cuda.is_available() is False). "
              "Run `make bench-gpu` on a GPU machine, or smoke-test here with: "
              "python -m benchmarks.gpu --allow-cpu --scale small --size 64 --steps 2", file=sys.stderr)
        return 2
    device = "cuda" if torch.cuda.is_available() else "cpu"
    report = run(args.scale, args.size, args.steps, tuple(args.batches), args.peak_tflops, device,
                 args.dtype, args.compile)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
