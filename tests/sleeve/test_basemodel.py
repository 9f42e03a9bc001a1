"""The committed base model: verified against its checksums, installed whole, and it draws what
the prompt says (the property the demo and the simulation rely on)."""

from __future__ import annotations

import shutil

import pytest

from sleeve.basemodel import ASSET_DIR, BaseModelError, ensure_base_model, verify, write_checksums


def _copy(tmp_path):
    target = tmp_path / "model"
    shutil.copytree(ASSET_DIR, target)
    return target


def test_the_committed_model_matches_its_checksums_and_is_small():
    sums = verify()
    assert {"model_index.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
            "tokenizer/tokenizer.json"} <= set(sums)
    assert sum(p.stat().st_size for p in ASSET_DIR.rglob("*") if p.is_file()) <= 10 * 2**20


def test_a_changed_missing_or_unlisted_file_fails_naming_it(tmp_path):
    model = _copy(tmp_path)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    (model / "vae" / "config.json").unlink()
    (model / "extra.bin").write_bytes(b"x")
    with pytest.raises(BaseModelError) as failure:
        verify(model)
    message = str(failure.value)
    assert "unet/diffusion_pytorch_model.safetensors: checksum differs" in message
    assert "vae/config.json: missing" in message and "extra.bin: not in SHA256SUMS" in message
    write_checksums(model)  # after retraining, the sums are rewritten and the model verifies again
    assert "extra.bin" in verify(model)


def test_install_copies_once_and_replaces_a_damaged_copy(tmp_path):
    target = ensure_base_model(tmp_path / "home" / "models" / "sleeve-base")
    assert set(verify(ASSET_DIR)) == {str(p.relative_to(target)) for p in target.rglob("*")
                                      if p.is_file() and p.name not in ("SHA256SUMS", ".complete")}
    stamp = (target / ".complete").stat().st_mtime_ns
    assert ensure_base_model(target) == target and (target / ".complete").stat().st_mtime_ns == stamp
    (target / ".complete").write_text("other version\n")
    ensure_base_model(target)
    verify(target)


def _mean_rgb(pipe, prompt: str, seeds=range(2)):
    import numpy as np
    import torch

    images = [pipe(prompt=prompt, negative_prompt="", num_inference_steps=4, height=64, width=64,
                   generator=torch.Generator().manual_seed(s)).images[0] for s in seeds]
    return np.mean([np.asarray(im, dtype=np.float32) / 255 for im in images], axis=(0, 1, 2))


def test_colour_and_mood_words_barely_steer_the_committed_model(tmp_path):
    """What the README says of the base model, pinned: a single colour word does not move its
    covers' hue (measured 2026-12-01, 16 colour words x 3 subjects x 2 seeds: mean hues 21-26 deg,
    all warm brown, whatever the word), and a dark mood darkens a cover by only ~0.03. A retrained
    base model that follows its prompts fails this test: then say so in the README and assert it."""
    import colorsys

    import torch
    from diffusers import DiffusionPipeline

    from inference.prompts import build_prompt

    pipe = DiffusionPipeline.from_pretrained(str(ensure_base_model(tmp_path / "m")), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def prompt(palette, moods):
        return build_prompt({"objects": ["moon"], "moods": moods, "palette": palette, "style": "minimalist digital "
                             "painting", "genre": "pop"}).positive

    hues = {word: colorsys.rgb_to_hls(*_mean_rgb(pipe, prompt([word], ["calm"])))[0] * 360
            for word in ("red", "green", "blue", "purple")}
    assert max(hues.values()) - min(hues.values()) < 15, hues  # red, green, blue, purple: one hue
    dark = _mean_rgb(pipe, prompt(["muted teal", "warm beige"], ["dark", "lonely"]))
    bright = _mean_rgb(pipe, prompt(["muted teal", "warm beige"], ["joyful", "radiant"]))
    assert abs(bright.mean() - dark.mean()) < 0.1, (bright, dark)
