"""The LoRA trainer on the tiny SDXL: outputs, reproducibility, kill-and-resume, warm start."""

import json

import pytest


def _cfg(tiny_model, **kw):
    from training.trainer import TrainConfig

    return TrainConfig(base_model=str(tiny_model), **{"steps": 6, "batch_size": 2, **kw})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_output_loads_with_stock_diffusers_and_has_metadata(tiny_model, sample_examples, tmp_path):
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    from training.trainer import KOHYA_NAME, WEIGHTS_NAME, train_lora

    result = train_lora(_cfg(tiny_model, rank=4, alpha=8), sample_examples, tmp_path / "out",
                        cache_dir=tmp_path / "cache")
    assert result.steps == 6 and len(result.losses) == 6
    with safe_open(result.weights_path, framework="pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])
    assert meta["unet.r"] == 4 and meta["unet.lora_alpha"] == 8
    kohya = _weights(tmp_path / "out" / KOHYA_NAME)
    assert any(k.startswith("lora_unet_") for k in kohya)
    assert all(float(v) == 8.0 for k, v in kohya.items() if k.endswith(".alpha"))

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_model))
    pipe.set_progress_bar_config(disable=True)
    pipe.load_lora_weights(str(tmp_path / "out"), weight_name=WEIGHTS_NAME)
    assert pipe.get_list_adapters()["unet"]
    image = pipe("album cover", num_inference_steps=2, height=64, width=64).images[0]
    assert image.size == (64, 64)


def test_killed_run_resumes_to_the_same_weights(tiny_model, sample_examples, tmp_path):
    import torch

    from training.checkpoints import list_checkpoints
    from training.trainer import train_lora

    config = dict(checkpoint_every=2, checkpoints_keep=2, caption_dropout=0.3, noise_offset=0.05)
    straight = train_lora(_cfg(tiny_model, **config), sample_examples, tmp_path / "a", work_dir=tmp_path / "wa")

    partial = train_lora(_cfg(tiny_model, **config), sample_examples, tmp_path / "b", work_dir=tmp_path / "wb",
                         stop_after=5)  # "killed" after step 5: the last complete checkpoint is step 4
    assert partial.weights_path == "" and [p.name for p in list_checkpoints(tmp_path / "wb")] == \
        ["step-0000002", "step-0000004"]
    (tmp_path / "wb" / "checkpoints" / ".tmp-step-0000006").mkdir()  # a half-written checkpoint is ignored
    resumed = train_lora(_cfg(tiny_model, **config), sample_examples, tmp_path / "b", work_dir=tmp_path / "wb")
    assert resumed.resumed_from == 4 and resumed.losses == straight.losses
    a, b = _weights(straight.weights_path), _weights(resumed.weights_path)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # exactly


def test_latent_cache_is_reused_across_runs(tiny_model, sample_examples, tmp_path):
    from training.trainer import train_lora

    train_lora(_cfg(tiny_model, steps=1), sample_examples, tmp_path / "w1", cache_dir=tmp_path / "cache")
    second = train_lora(_cfg(tiny_model, steps=1), sample_examples, tmp_path / "w2", cache_dir=tmp_path / "cache")
    assert second.cache["latent_hits"] == len(sample_examples) and second.cache["latent_misses"] == 0


def test_dreambooth_prior_and_text_encoder_lora_and_warm_start(tiny_model, sample_examples, tmp_path):
    from dataclasses import replace

    from diffusers import StableDiffusionXLPipeline

    from training.trainer import WEIGHTS_NAME, lora_rank_alpha, train_lora

    instance = sample_examples[:3]
    prior = [replace(e, caption="a photo of person", is_prior=True) for e in sample_examples[3:]]
    result = train_lora(_cfg(tiny_model, steps=3, train_text_encoder=True, prior_loss_weight=0.5,
                             rank=2), instance, tmp_path / "db", class_examples=prior)
    keys = _weights(result.weights_path).keys()
    assert any(k.startswith("text_encoder.") for k in keys) and any(k.startswith("unet.") for k in keys)
    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_model))
    pipe.load_lora_weights(str(tmp_path / "db"), weight_name=WEIGHTS_NAME)
    assert "text_encoder" in pipe.get_list_adapters()

    # warm start takes the adapter's own rank and starts from its weights
    warm = train_lora(_cfg(tiny_model, steps=1, rank=8, warm_start=str(tmp_path / "db")), sample_examples,
                      tmp_path / "warm")
    assert (warm.rank, lora_rank_alpha(str(tmp_path / "warm"))[0]) == (2, 2)


def test_bad_config_is_named():
    from training.trainer import TrainConfig

    with pytest.raises(ValueError, match="unknown training setting"):
        TrainConfig.from_dict({"base_model": "x", "lr": 1})
    with pytest.raises(ValueError, match="resolution"):
        TrainConfig.from_dict({"base_model": "x", "resolution": 63})


def test_gradient_accumulation_defers_the_optimizer_step(tiny_model, sample_examples, tmp_path):
    """With 2 micro-batches per step, the checkpoint after step 1 holds exactly one AdamW update."""
    import torch

    from training.checkpoints import list_checkpoints
    from training.trainer import train_lora

    train_lora(_cfg(tiny_model, steps=2, batch_size=1, gradient_accumulation_steps=2, checkpoint_every=1),
               sample_examples, tmp_path / "out", work_dir=tmp_path / "work")
    first = list_checkpoints(tmp_path / "work")[0]
    state = torch.load(first / "state.pt", weights_only=False)
    steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert first.name == "step-0000001" and steps == {1}


def test_validation_losses_batched_pair_by_image_whatever_else_is_evaluated(tiny_model, sample_examples):
    """One batch of noise levels per image gives the per-level losses; an image's loss does not
    depend on the other images or their order, and the memo returns the same value."""
    import pytest

    from training.trainer import PreparedData, load_components, validation_losses

    parts = load_components(str(tiny_model))
    data = PreparedData(parts, sample_examples, 64, None, cache_text=True)
    batched = validation_losses(parts, data)
    one_by_one = validation_losses(parts, data, batch_size=1)
    assert batched == pytest.approx(one_by_one, rel=1e-5) and len(set(batched)) == len(batched)
    tail = PreparedData(parts, sample_examples[:1:-1], 64, None, cache_text=True)  # fewer, reversed
    assert validation_losses(parts, tail, batch_size=7) == pytest.approx(batched[:1:-1], rel=1e-5)
    memo: dict = {}
    assert validation_losses(parts, data, memo=memo) == batched and len(memo) == len(batched)
    memo[(sample_examples[0].sha256, sample_examples[0].caption)] = -1.0
    assert validation_losses(parts, data, memo=memo)[0] == -1.0  # taken from the memo, not recomputed


def test_loss_memo_on_disk_is_per_model_and_reused(tiny_model, sample_examples, tmp_path, monkeypatch):
    """A model's losses come back from the cache next time (not recomputed); another adapter, a
    bare base or another resolution never gets them; a torn file is recomputed."""
    from training import trainer
    from training.trainer import LossMemo, PreparedData, load_components, validation_losses

    parts = load_components(str(tiny_model))
    data = PreparedData(parts, sample_examples, 64, None, cache_text=True)
    adapter, other = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    adapter.write_bytes(b"adapter one")
    other.write_bytes(b"adapter two")
    memo = LossMemo.open(tmp_path / "cache", parts, 64, adapter)
    losses = validation_losses(parts, data, memo=memo)
    memo.save()
    again = LossMemo.open(tmp_path / "cache", parts, 64, adapter)
    assert again == memo and len(again) == len(sample_examples)

    def no_unet(*args, **kwargs):
        raise AssertionError("recomputed a loss the cache holds")

    monkeypatch.setattr(trainer, "per_sample_loss", no_unet)
    assert validation_losses(parts, data, memo=again) == losses  # read from disk, not recomputed
    monkeypatch.undo()
    for model, resolution in ((other, 64), (None, 64), (adapter, 32)):
        assert LossMemo.open(tmp_path / "cache", parts, resolution, model) == {}
    again.path.write_text("[[\"torn")
    assert LossMemo.open(tmp_path / "cache", parts, 64, adapter) == {}
    assert LossMemo.open(None, parts, 64, adapter).path is None  # no cache dir: memory only
