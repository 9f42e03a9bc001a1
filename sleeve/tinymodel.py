"""A randomly initialised SDXL-architecture pipeline, small enough for CPU tests and the demo.

It has every part a real SDXL has (UNet with text-time conditioning, VAE, two CLIP text
encoders, two tokenizers, scheduler) and is saved with ``save_pretrained``, so all downstream
code loads it through the same ``from_pretrained(path_or_id)`` call that loads
stabilityai/stable-diffusion-xl-base-1.0 on a GPU box. The tokenizer files are written here
from a byte-level alphabet plus merges for the project's own vocabulary, not downloaded.

    python -m sleeve.tinymodel [OUTPUT_DIR]
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

# Words worth a single token (prompt vocabulary); everything else falls back to characters.
_WORDS = (
    "album cover art of a the and with in on at by photo portrait painting illustration "
    "night city rain sea ocean sky sun moon star stars road car heart flower flowers love "
    "blue red green yellow purple pink black white gold silver neon pastel warm cool dark "
    "bright soft dreamy calm sad happy lonely nostalgic energetic romantic melancholic "
    "pop rock ballad hip hop jazz indie dance electronic folk r&b minimal retro vintage "
    "film grain style scene single centered composition no text lettering woman man person dog"
).split()


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_tokenizer_files(directory: Path) -> int:
    """Write CLIP-style vocab.json + merges.txt; returns the vocabulary size."""
    chars = list(bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    seen = set(vocab_list)
    for word in _WORDS:
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        while len(symbols) > 1:
            merged = symbols[0] + symbols[1]
            merge = f"{symbols[0]} {symbols[1]}"
            if merge not in merges:
                merges.append(merge)
            if merged not in seen:
                seen.add(merged)
                vocab_list.append(merged)
            symbols = [merged] + symbols[2:]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab_list)}, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab_list)


def build_tiny_sdxl(output_dir: str | Path, seed: int = 0) -> Path:
    """Build and ``save_pretrained`` a tiny random SDXL pipeline at ``output_dir``."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    output_dir = Path(output_dir)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as tmp:
        vocab_size = write_tokenizer_files(Path(tmp))
        tokenizer = CLIPTokenizer(vocab=f"{tmp}/vocab.json", merges=f"{tmp}/merges.txt", model_max_length=77)
    text_config = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id,
        hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=vocab_size, max_position_embeddings=77, hidden_act="gelu", projection_dim=32,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**text_config))
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 1),
        use_linear_projection=True,
        cross_attention_dim=64,  # hidden sizes of both text encoders, concatenated
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled text (32)
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
        timestep_spacing="leading", steps_offset=1,
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2,
        tokenizer=tokenizer, tokenizer_2=tokenizer, unet=unet, scheduler=scheduler,
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(output_dir)
    return output_dir


def ensure_tiny_sdxl(output_dir: str | Path) -> Path:
    """Build the tiny model unless a complete one is already there. It is built in a temporary
    sibling directory and renamed into place, so a crash never leaves a half-written model."""
    output_dir = Path(output_dir)
    marker = output_dir / ".complete"
    if marker.exists():
        return output_dir
    # The temporary directory is a sibling so the rename never crosses file systems.
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output_dir.parent) as tmp:
        build_tiny_sdxl(tmp)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        Path(tmp).rename(output_dir)
        Path(tmp).mkdir()  # TemporaryDirectory cleans up the (now empty) name it created
    marker.write_text("ok\n")
    return output_dir


if __name__ == "__main__":
    from sleeve.settings import get_settings

    target = Path(sys.argv[1]) if len(sys.argv) > 1 else get_settings().tiny_model_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    print(ensure_tiny_sdxl(target))
