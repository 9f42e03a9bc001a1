"""Training resumes exactly, and only what it should: checkpoints carry the fingerprint of their
inputs, are written on a step and a time cadence, survive a SIGKILL of the real job, and hold
the fp16 GradScaler state."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.training.conftest import png


def _cfg(tiny_model, **kw):
    from training.trainer import TrainConfig

    return TrainConfig(base_model=str(tiny_model), **{"steps": 5, "batch_size": 2, "checkpoint_every": 1, **kw})


def _same_tensors(a_path, b_path) -> None:
    import torch
    from safetensors.torch import load_file

    a, b = load_file(str(a_path)), load_file(str(b_path))
    assert a.keys() == b.keys() and a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:2]}"


@pytest.mark.parametrize("change", ["learning_rate", "seed", "images"])
def test_a_checkpoint_made_for_other_inputs_is_not_resumed(tiny_model, sample_examples, tmp_path, change):
    """Other images, learning rate or seed: start fresh and say so (the old checkpoint's
    learning rate and weights must not win)."""
    from training.checkpoints import list_checkpoints
    from training.trainer import train_lora

    old_kw, new_kw = {}, {"learning_rate": 1e-3} if change == "learning_rate" else {"seed": 7} \
        if change == "seed" else {}
    new_examples = sample_examples[1:] if change == "images" else sample_examples
    train_lora(_cfg(tiny_model, **old_kw), sample_examples, tmp_path / "out", work_dir=tmp_path / "work", stop_after=3)
    assert len(list_checkpoints(tmp_path / "work")) == 2

    changed = train_lora(_cfg(tiny_model, **new_kw), new_examples, tmp_path / "out", work_dir=tmp_path / "work")
    assert changed.resumed_from == 0
    part = "data" if change == "images" else "config"
    assert changed.resume_note.startswith("fresh start") and part in changed.resume_note, changed.resume_note
    fresh = train_lora(_cfg(tiny_model, **new_kw), new_examples, tmp_path / "ref", work_dir=tmp_path / "ref-work")
    assert changed.losses == fresh.losses
    _same_tensors(changed.weights_path, fresh.weights_path)


def test_matching_inputs_resume_whatever_the_checkpoint_cadence(tiny_model, sample_examples, tmp_path):
    from training.trainer import train_lora

    train_lora(_cfg(tiny_model), sample_examples, tmp_path / "out", work_dir=tmp_path / "work", stop_after=3)
    resumed = train_lora(_cfg(tiny_model, checkpoint_every=2, checkpoints_keep=3, checkpoint_seconds=10),
                         sample_examples, tmp_path / "out", work_dir=tmp_path / "work")
    assert resumed.resumed_from == 3 and resumed.resume_note == "resumed from step-0000003"


def test_the_fingerprint_covers_base_model_code_and_world_size(tiny_model, sample_examples, tmp_path):
    from training.checkpoints import fingerprint

    config = _cfg(tiny_model)
    base = fingerprint(config, sample_examples, [], code="abc123", world=1, precision="no")
    assert base == fingerprint(_cfg(tiny_model, checkpoint_every=9, checkpoint_seconds=1), sample_examples, [],
                               code="abc123", world=1, precision="no")  # the cadence changes no result
    assert fingerprint(config, sample_examples, [], code="def456", world=1, precision="no")["parts"]["code"] \
        != base["parts"]["code"]
    assert fingerprint(config, sample_examples, [], code="abc123", world=2, precision="no")["hash"] != base["hash"]

    copy = tmp_path / "retrained-base"
    shutil.copytree(tiny_model, copy)
    weights = copy / "unet" / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one weight of the base model changed, same size and same name
    weights.write_bytes(bytes(data))
    moved = fingerprint(_cfg(copy), sample_examples, [], code="abc123", world=1, precision="no")
    assert moved["parts"]["base_model"] != base["parts"]["base_model"]


def test_the_weekly_default_checkpoints_a_slow_run_within_a_minute(tiny_model, sample_examples, tmp_path,
                                                                    monkeypatch):
    """The DAG's defaults (12 steps) on a machine where a step takes 20 s: a checkpoint is written
    within the first minute, so a retried train task resumes."""
    from training import trainer, weekly
    from training.checkpoints import list_checkpoints
    from training.trainer import TrainConfig, train_lora

    plan = {"base_model": str(tiny_model), "version": "style-x", "manifest_uri": "file:///m.json", "run_id": "r1"}
    params = {"steps": 12, "rank": 4, "batch_size": 2, "learning_rate": 1e-4, "resolution": 64, "rating_weighted": False}
    config = TrainConfig.from_dict(weekly.train_config(plan, params, home=tmp_path, warm_start=None)["train"])
    assert 0 < config.checkpoint_seconds <= 60
    now = iter(range(0, 10**6, 20))  # every reading of the clock: 20 s later
    monkeypatch.setattr(trainer, "_clock", lambda: float(next(now)), raising=False)
    train_lora(config, sample_examples, tmp_path / "out", work_dir=tmp_path / "work", stop_after=4)
    steps = [int(p.name.rsplit("-", 1)[1]) for p in list_checkpoints(tmp_path / "work")]
    assert steps and steps[0] <= 3, steps  # 3 steps = 60 s


def test_fp16_grad_scaler_state_survives_a_checkpoint(tmp_path):
    """torch.amp.GradScaler on CPU: its scale and growth tracker after real scaled steps (one of
    them overflowing) come back exactly from a checkpoint, and scale the next step alike."""
    import torch

    from training.checkpoints import Checkpoints

    def scaled_steps(model, optimizer, scaler, losses):
        for factor in losses:
            loss = model(torch.ones(1, 2)).sum() * factor
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    scaled_steps(model, optimizer, scaler, [1.0, 1.0, float("inf"), 1.0])  # an overflow halves the scale
    saved = scaler.state_dict()
    assert saved["scale"] != 2.0**10 and saved["_growth_tracker"] == 1

    checkpoints = Checkpoints(tmp_path / "work", keep=2, fingerprint={"hash": "f", "parts": {}})
    checkpoints.save(4, lora_state={"w": model.weight.detach().clone()}, optimizer=optimizer, lr_scheduler=scheduler,
                     scaler=scaler, generator=torch.Generator().manual_seed(1), losses=[0.1] * 4)
    state = Checkpoints(tmp_path / "work", keep=2, fingerprint={"hash": "f", "parts": {}}).restore()
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    fresh.load_state_dict(state["scaler"])
    assert fresh.state_dict() == saved and state["step"] == 4
    assert fresh.scale(torch.tensor(1.0)) == scaler.scale(torch.tensor(1.0))


# ---------------------------------------------------------------- a real job, killed with SIGKILL

def snapshot_manifest(store, n: int = 6) -> str:
    """A snapshot manifest (train split only) over ``n`` distinct images in the store."""
    from sleeve.ids import sha256_bytes
    from sleeve.store import write_json

    items = []
    for i in range(n):
        data = png(700 + i)
        store.put_bytes(f"snap/{i}.png", data)
        items.append({"uri": store.uri(f"snap/{i}.png"), "caption": f"album cover {i} night city",
                      "sha256": sha256_bytes(data), "split": "train"})
    write_json(store, "snap/manifest.json", {"items": items, "counts": {"train": n}})
    return store.uri("snap/manifest.json")


def wait_for(condition, proc, timeout: float = 180.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            output = proc.stderr.read().decode(errors="replace")[-3000:] if proc.stderr else ""
            raise AssertionError(f"the job ended (code {proc.returncode}) before {what}\n{output}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout:.0f} s")
        time.sleep(0.01)


def test_a_sigkilled_train_job_resumes_to_the_same_weights(sleeve_env, store, tiny_model, tmp_path):
    """``python -m training.train_job`` killed with SIGKILL once its first (time-cadence)
    checkpoint exists; the retry resumes from it and ends with exactly the tensors of an
    uninterrupted run."""
    from sleeve.jobs import read_result, run_job
    from training import train_job
    from training.checkpoints import list_checkpoints
    from training.trainer import WEIGHTS_NAME

    manifest_uri = snapshot_manifest(store)
    train = {"base_model": str(tiny_model), "steps": 30, "batch_size": 2, "caption_dropout": 0.2,
             "noise_offset": 0.05, "checkpoint_every": 0, "checkpoint_seconds": 0.25}

    def argv(name: str) -> list[str]:
        config = {"train": train, "work_dir": str(tmp_path / name / "work"), "cache_dir": str(tmp_path / "cache")}
        return ["--manifest", manifest_uri, "--config", json.dumps(config), "--output", store.uri(f"models/{name}")]

    proc = subprocess.Popen([sys.executable, "-m", "training.train_job", *argv("killed")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: list_checkpoints(tmp_path / "killed" / "work"), proc, what="checkpoint")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        stderr = proc.communicate()[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    assert not store.exists("models/killed/result.json")

    retry = subprocess.run([sys.executable, "-m", "training.train_job", *argv("killed")], capture_output=True,
                           text=True, timeout=600)
    assert retry.returncode == 0, retry.stderr[-2000:]
    resumed = read_result(store.uri("models/killed"))
    assert 0 < resumed["resumed_from"] < 30 and resumed["resume"].startswith("resumed from step-")
    assert list_checkpoints(tmp_path / "killed" / "work") == []  # a finished job leaves no checkpoints

    assert run_job(train_job.main, argv("straight")) == 0  # the same job, uninterrupted (in this process)
    straight = read_result(store.uri("models/straight"))
    assert straight["resumed_from"] == 0 and straight["losses"] == resumed["losses"]
    _same_tensors(sleeve_env.store_dir / "models" / "killed" / WEIGHTS_NAME,
                  sleeve_env.store_dir / "models" / "straight" / WEIGHTS_NAME)


def _dpo_setup(tiny_model, sample_examples, tmp_path):
    """Preference pairs and a 'production' adapter to be DPO's reference and warm start."""
    from tests.training.test_dpo import _pairs
    from training.trainer import train_lora

    train_lora(_cfg(tiny_model, steps=2, learning_rate=1e-2, checkpoint_every=0), sample_examples, tmp_path / "prod")
    return _pairs(tmp_path), str(tmp_path / "prod")


@pytest.mark.parametrize("objective", ["dpo", "sft+dpo"])
def test_dpo_resumes_exactly_against_its_reference(tiny_model, sample_examples, tmp_path, objective):
    """The same loop, the same checkpoints: a DPO run stopped after 3 steps and resumed ends with
    the bytes of an uninterrupted one (reference = production adapter, warm-started from it)."""
    from training.trainer import train_lora

    pairs, prod = _dpo_setup(tiny_model, sample_examples, tmp_path)
    examples = sample_examples if objective == "sft+dpo" else []
    kw = {"objective": objective, "reference": prod, "warm_start": prod, "learning_rate": 1e-2, "beta": 5000.0}
    straight = train_lora(_cfg(tiny_model, **kw), examples, tmp_path / "a", pairs=pairs, work_dir=tmp_path / "wa")
    train_lora(_cfg(tiny_model, **kw), examples, tmp_path / "b", pairs=pairs, work_dir=tmp_path / "wb", stop_after=3)
    resumed = train_lora(_cfg(tiny_model, **kw), examples, tmp_path / "b", pairs=pairs, work_dir=tmp_path / "wb")
    assert resumed.resumed_from == 3 and resumed.resume_note == "resumed from step-0000003"
    assert resumed.losses == straight.losses and resumed.cache["pairs"] == len(pairs)
    _same_tensors(resumed.weights_path, straight.weights_path)


@pytest.mark.parametrize("change", ["pairs", "reference"])
def test_a_dpo_checkpoint_made_for_other_pairs_or_reference_is_not_resumed(tiny_model, sample_examples, tmp_path,
                                                                           change):
    """The preference pairs and the reference's weights are part of the fingerprint: reversed
    preferences, or a reference with the same path but other weights, start fresh."""
    from training.dpo import PreferencePair
    from training.trainer import WEIGHTS_NAME, train_lora

    pairs, prod = _dpo_setup(tiny_model, sample_examples, tmp_path)
    kw = {"objective": "dpo", "reference": prod, "learning_rate": 1e-2}
    train_lora(_cfg(tiny_model, **kw), [], tmp_path / "out", pairs=pairs, work_dir=tmp_path / "work", stop_after=3)
    if change == "pairs":
        pairs = [PreferencePair(p.dispreferred, p.preferred, p.caption) for p in pairs]
        part = "pairs"
    else:  # production moved on: another adapter at the same location
        train_lora(_cfg(tiny_model, steps=2, learning_rate=1e-2, checkpoint_every=0, seed=5), sample_examples,
                   tmp_path / "prod2")
        shutil.copy(tmp_path / "prod2" / WEIGHTS_NAME, tmp_path / "prod" / WEIGHTS_NAME)
        part = "config"
    changed = train_lora(_cfg(tiny_model, **kw), [], tmp_path / "out", pairs=pairs, work_dir=tmp_path / "work")
    assert changed.resumed_from == 0
    assert changed.resume_note.startswith("fresh start") and part in changed.resume_note, changed.resume_note
    fresh = train_lora(_cfg(tiny_model, **kw), [], tmp_path / "ref", pairs=pairs, work_dir=tmp_path / "ref-work")
    assert changed.losses == fresh.losses
    _same_tensors(changed.weights_path, fresh.weights_path)
