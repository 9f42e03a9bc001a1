"""A DreamBooth training (``python -m training.personalize_job``) killed with SIGKILL: nothing of
the user is left outside the two known roots (the store's ``users/<user_id>/`` and the scratch
root), a retry resumes from the checkpoints kept under the user's prefix, and forgetting the
user removes everything the killed job left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sleeve.keys import personalize_prefix
from tests.training.test_resume import wait_for
from training.dreambooth import get_request, submit_request, write_train_manifest
from training.photos import synthetic_photos

USER = "user-k"


def files(*roots: Path) -> set[Path]:
    return {p for root in roots for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def killed(sleeve_env, warehouse, store, tmp_path):
    row = submit_request(warehouse, store, USER, synthetic_photos(3, seed=41), "person")
    job = write_train_manifest(store, get_request(warehouse, row["request_id"]), base_model=sleeve_env.base_model,
                               class_images={"uris": [], "cache_hit": False})
    tmpdir = tmp_path / "tmp"  # the worker's temporary directory, watched too
    tmpdir.mkdir()
    config = {"steps": 30, "resolution": 64, "checkpoint_every": 2}
    cmd = [sys.executable, "-m", "training.personalize_job", "--manifest", job["manifest_uri"],
           "--config", json.dumps(config), "--output", job["output_uri"]]
    env = {**os.environ, "TMPDIR": str(tmpdir)}
    checkpoints = personalize_prefix(USER, row["request_id"]) + "checkpoints/"
    before = files(sleeve_env.home, tmpdir)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: any(k.endswith("/state.pt") for k in store.list(checkpoints)), proc,
                 what="a checkpoint under the user's prefix")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        stderr = proc.communicate()[1].decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, stderr[-2000:]
    left = files(sleeve_env.home, tmpdir) - before
    return SimpleNamespace(cmd=cmd, env=env, job=job, tmpdir=tmpdir, checkpoints=checkpoints, before=before,
                           left=left, home=sleeve_env.home, scratch=sleeve_env.scratch_dir,
                           user_root=sleeve_env.store_dir / "users" / USER)


def test_a_killed_personalize_job_leaves_the_user_only_under_known_roots_and_resumes(killed, store):
    from sleeve.jobs import read_result

    stray = sorted(str(p) for p in killed.left if not (p.is_relative_to(killed.user_root)
                                                       or p.is_relative_to(killed.scratch)))
    assert stray == []
    assert any(p.is_relative_to(killed.scratch) for p in killed.left)  # the killed job's latents, adapter, ...

    retry = subprocess.run(killed.cmd, env=killed.env, capture_output=True, text=True, timeout=600)
    assert retry.returncode == 0, retry.stderr[-2000:]
    result = read_result(killed.job["output_uri"])
    assert 0 < result["resumed_from"] < 30 and result["resume"].startswith("resumed from step-")
    assert store.list(killed.checkpoints) == []  # the adapter is complete: its checkpoints are gone
    assert files(killed.scratch, killed.tmpdir) == set()  # the retry swept the killed job's folder


def test_forget_user_removes_everything_a_killed_personalize_job_left(killed, warehouse, store):
    from training.privacy import forget_user

    summary = forget_user(warehouse, store, USER)
    assert summary["scratch_files_deleted"] > 0
    remaining = files(killed.home, killed.tmpdir) - killed.before
    assert sorted(str(p) for p in remaining if not p.name.startswith("warehouse.duckdb")) == []
    assert files(killed.user_root) == set() and store.list(f"users/{USER}/") == []
