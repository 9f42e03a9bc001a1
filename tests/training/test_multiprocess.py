"""The multi-GPU path (``accelerate launch``, data-parallel) run on CPU with two processes over
gloo, on the tiny model: they train on different micro-batches, checkpoint together, are killed
with SIGKILL, resume, and end with identical weights on both ranks and exactly the weights of
an uninterrupted two-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.conftest import free_port
from tests.training.test_resume import _same_tensors, snapshot_manifest, wait_for

STEPS = 30


def launch(store, manifest_uri: str, name: str, work_dir) -> subprocess.Popen:
    """``accelerate launch`` as sleeve_airflow.gpu.job_command builds it, forced onto CPU processes
    (``--multi_gpu`` starts one process per rank through torchrun; the trainer picks gloo on CPU)."""
    config = {"train": {"base_model": os.environ["SLEEVE_BASE_MODEL"], "steps": STEPS, "batch_size": 1,
                        "caption_dropout": 0.2, "checkpoint_every": 2, "checkpoint_seconds": 0},
              "work_dir": str(work_dir)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "training.train_job",
           "--manifest", manifest_uri, "--config", json.dumps(config), "--output", store.uri(f"models/{name}")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLEEVE_TORCH_THREADS": "1"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every rank at once, as when the machine is lost (torchrun starts
    each rank in a session of its own, so killing the launcher's group would not reach them)."""
    import psutil

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in tree:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass


def finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        kill_all(proc)
        out = proc.communicate()[0]
        raise AssertionError(f"two-process training did not finish in {timeout} s (a rank hangs):\n{out[-3000:]}") \
            from None
    assert proc.returncode == 0, out[-3000:]
    return out


def test_two_processes_checkpoint_die_resume_and_agree(sleeve_env, store, tmp_path):
    from sleeve.jobs import read_result
    from training.checkpoints import list_checkpoints
    from training.trainer import WEIGHTS_NAME, Sampler

    manifest_uri = snapshot_manifest(store)
    # The ranks draw different images every step (so identical weights mean synced gradients).
    ranks = [Sampler(6, 1, seed=0, rank=r, world=2) for r in (0, 1)]
    assert all(ranks[0].batch(s) != ranks[1].batch(s) for s in range(STEPS))

    work = tmp_path / "killed-work"
    proc = launch(store, manifest_uri, "killed", work)
    try:
        wait_for(lambda: list_checkpoints(work), proc, what="checkpoint")
    finally:
        kill_all(proc)
        out = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    assert not store.exists("models/killed/result.json")
    checkpoint = list_checkpoints(work)[-1]
    assert {"rng-0.pt", "rng-1.pt", "lora.safetensors", "state.pt"} <= {p.name for p in checkpoint.iterdir()}

    finish(launch(store, manifest_uri, "killed", work))
    resumed = read_result(store.uri("models/killed"))
    assert 2 <= resumed["resumed_from"] < STEPS and resumed["world_size"] == 2
    assert len(resumed["rank_digests"]) == 2 and len(set(resumed["rank_digests"])) == 1

    finish(launch(store, manifest_uri, "straight", tmp_path / "straight-work"))
    straight = read_result(store.uri("models/straight"))
    assert straight["resumed_from"] == 0 and straight["rank_digests"] == resumed["rank_digests"]
    assert straight["losses"] == resumed["losses"]
    _same_tensors(sleeve_env.store_dir / "models" / "killed" / WEIGHTS_NAME,
                  sleeve_env.store_dir / "models" / "straight" / WEIGHTS_NAME)
