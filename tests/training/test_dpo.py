"""Diffusion-DPO: the loss's sign on a tiny case, and real DPO training on the tiny SDXL (its exact
resume is in test_resume.py)."""

import math

import pytest

LOG2 = math.log(2)


def test_dpo_loss_sign_and_gradient():
    import torch

    from training.dpo import dpo_loss

    ref_w, ref_l = torch.tensor([0.5]), torch.tensor([0.5])
    better_on_preferred, acc = dpo_loss(torch.tensor([0.4]), torch.tensor([0.5]), ref_w, ref_l, beta=10)
    worse_on_preferred, bad_acc = dpo_loss(torch.tensor([0.6]), torch.tensor([0.5]), ref_w, ref_l, beta=10)
    same, _ = dpo_loss(ref_w, ref_l, ref_w, ref_l, beta=10)
    assert float(better_on_preferred) < LOG2 < float(worse_on_preferred)
    assert float(same) == pytest.approx(LOG2) and (float(acc), float(bad_acc)) == (1.0, 0.0)
    # improving equally on both images changes nothing: only the preference margin counts
    shifted, _ = dpo_loss(torch.tensor([0.3]), torch.tensor([0.3]), ref_w, ref_l, beta=10)
    assert float(shifted) == pytest.approx(LOG2)
    # the gradient lowers the preferred image's error and raises the dispreferred one's
    model_w, model_l = torch.tensor([0.5], requires_grad=True), torch.tensor([0.5], requires_grad=True)
    dpo_loss(model_w, model_l, ref_w, ref_l, beta=10)[0].backward()
    assert float(model_w.grad) > 0 > float(model_l.grad)


def _pairs(tmp_path, n=4):
    from tests.training.conftest import png
    from training.dataset import Example
    from training.dpo import PreferencePair

    out = []
    for i in range(n):
        paths = []
        for tag, seed in (("w", i), ("l", 100 + i)):
            path = tmp_path / f"{tag}{i}.png"
            path.write_bytes(png(seed))
            paths.append(Example(uri=str(path), caption=f"album cover {i}", sha256=f"{tag}{i}"))
        out.append(PreferencePair(paths[0], paths[1], f"album cover {i}"))
    return out


def _cfg(tiny_model, **kw):
    from training.trainer import TrainConfig

    return TrainConfig(base_model=str(tiny_model), **{"steps": 6, "batch_size": 2, "objective": "dpo",
                                                      "learning_rate": 1e-2, "beta": 5000.0, "snr_gamma": None, **kw})


def _margin(tiny_model, pairs, adapter):
    """Mean of (reference error gap) - (model error gap) over the pairs at fixed noise: > 0 when
    the adapter moved towards the preferred images relative to the base."""
    import torch

    from training.dpo import load_reference
    from training.trainer import PreparedData, load_components, per_sample_loss

    parts = load_components(str(tiny_model))
    base, tuned = load_reference(parts, None), load_reference(parts, str(adapter))
    margins = []
    for pair in pairs:
        data = PreparedData(parts, [pair.preferred, pair.dispreferred], 64, None, True)
        latents = torch.stack([i["latent"] for i in data.items])
        time_ids = torch.stack([i["time_ids"] for i in data.items])
        text = data.text(pair.caption)
        cond = {k: torch.stack([v, v]) for k, v in text.items()}
        for t in (200, 500, 800):
            noise = torch.randn(latents[:1].shape, generator=torch.Generator().manual_seed(t)).repeat(2, 1, 1, 1)
            ts = torch.tensor([t, t])
            with torch.no_grad():
                r = per_sample_loss(parts, latents, cond, time_ids, ts, noise, None, unet=base)
                m = per_sample_loss(parts, latents, cond, time_ids, ts, noise, None, unet=tuned)
            margins.append(float((r[0] - r[1]) - (m[0] - m[1])))
    return sum(margins) / len(margins)


def test_dpo_trains_towards_the_preferred_images(tiny_model, tmp_path):
    from training.trainer import KOHYA_NAME, WEIGHTS_NAME, train_lora

    pairs = _pairs(tmp_path)
    result = train_lora(_cfg(tiny_model, steps=20), [], tmp_path / "out", pairs=pairs, cache_dir=tmp_path / "cache")
    assert result.losses[0] == pytest.approx(LOG2, abs=1e-4)  # LoRA starts at zero: model == reference
    assert (tmp_path / "out" / WEIGHTS_NAME).exists() and (tmp_path / "out" / KOHYA_NAME).exists()
    assert result.cache["pairs"] == 4
    # The same run with every preference reversed (same seed, so the same noise, timesteps and
    # data order): whatever drift training adds to both cancels, and the preference's direction
    # is what separates them. (On the random tiny UNet the effect is small, ~1e-4 of an error
    # of ~1, so the test compares the two runs rather than one run with zero.)
    from training.dpo import PreferencePair

    swapped = [PreferencePair(p.dispreferred, p.preferred, p.caption) for p in pairs]
    train_lora(_cfg(tiny_model, steps=20), [], tmp_path / "swapped", pairs=swapped, cache_dir=tmp_path / "cache")
    towards, away = _margin(tiny_model, pairs, tmp_path / "out"), _margin(tiny_model, pairs, tmp_path / "swapped")
    print(f"margin trained on the preferences {towards:.3g}, on the reversed ones {away:.3g}")
    assert towards > away


def test_the_reference_is_the_production_adapter_fused(tiny_model, sample_examples, tmp_path):
    """Warm-started from production with production as reference, DPO starts at log 2 (the
    model is the reference); with the bare base as reference it does not."""
    from training.trainer import train_lora

    train_lora(_cfg(tiny_model, objective="sft", steps=4, learning_rate=1e-2), sample_examples, tmp_path / "prod")
    pairs = _pairs(tmp_path)
    prod = str(tmp_path / "prod")
    moved = train_lora(_cfg(tiny_model, steps=1, warm_start=prod, reference=prod), [], tmp_path / "a", pairs=pairs)
    base_ref = train_lora(_cfg(tiny_model, steps=1, warm_start=prod), [], tmp_path / "b", pairs=pairs)
    assert moved.losses[0] == pytest.approx(LOG2, abs=1e-4)
    assert abs(base_ref.losses[0] - LOG2) > 1e-3


def test_dpo_without_pairs_or_with_bad_settings_fails_clearly(tiny_model, sample_examples, tmp_path):
    from training.trainer import TrainConfig, train_lora

    with pytest.raises(ValueError, match="needs preference pairs"):
        train_lora(_cfg(tiny_model), sample_examples, tmp_path / "x", pairs=[])
    with pytest.raises(ValueError, match="objective"):
        TrainConfig.from_dict({"base_model": str(tiny_model), "objective": "ppo"})
    with pytest.raises(ValueError, match="beta"):
        TrainConfig.from_dict({"base_model": str(tiny_model), "beta": 0})
