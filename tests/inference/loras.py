"""LoRA adapters for the tiny SDXL, saved in the stock diffusers format (generation tests)."""

from __future__ import annotations

from pathlib import Path


def make_lora(tiny_model: Path, out_dir: Path, seed: int, rank: int = 4) -> Path:
    """A random (non-zero) LoRA on the tiny UNet's attention projections, written with
    ``save_lora_weights`` exactly as a trained adapter would be."""
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"],
                                init_lora_weights=False))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    out_dir.mkdir(parents=True, exist_ok=True)
    StableDiffusionXLPipeline.save_lora_weights(out_dir, unet_lora_layers=get_peft_model_state_dict(unet))
    return out_dir
