"""Scratch space of GPU jobs: one known root, a folder per job that lives while the job does; a
killed job's folder is swept by the next job, and forgetting a user removes theirs."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

# A job that dies by SIGKILL inside its scratch folder, after writing personal data there.
_KILLED = """
import os, signal, sys
from sleeve.scratch import job_scratch
with job_scratch(sys.argv[1], user_id=sys.argv[2] or None) as folder:
    (folder / "face.safetensors").write_bytes(b"the user's face")
    print(folder, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""
# A job that is alive until its stdin closes.
_LIVE = """
import sys
from sleeve.scratch import job_scratch
with job_scratch(sys.argv[1], user_id=sys.argv[2] or None) as folder:
    (folder / "face.safetensors").write_bytes(b"the user's face")
    print(folder, flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def root(tmp_path, monkeypatch):
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_SCRATCH_DIR", str(tmp_path / "scratch"))
    get_settings.cache_clear()
    return tmp_path / "scratch"


def killed_job(name: str, user_id: str = ""):
    from pathlib import Path

    proc = subprocess.run([sys.executable, "-c", _KILLED, name, user_id], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    folder = Path(proc.stdout.strip())
    assert (folder / "face.safetensors").exists()
    return folder


def test_the_next_job_sweeps_a_killed_jobs_folder_and_keeps_live_ones(root):
    from pathlib import Path

    from sleeve.scratch import job_scratch, sweep

    dead = killed_job("personalize-r1", "user-s")
    assert dead.parent == root
    live = subprocess.Popen([sys.executable, "-c", _LIVE, "train-x", ""], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        other = Path(live.stdout.readline().strip())
        with job_scratch("personalize-r2") as mine:
            assert sweep() == 1  # the dead one; the other process's and this one are in use
            assert not dead.exists() and other.exists() and mine.exists()
        assert not mine.exists()  # removed when the job ends
    finally:
        live.communicate("")
    assert not other.exists() and [p.name for p in root.iterdir()] == []


def test_a_job_sweeps_at_start(root, sleeve_env):
    """Every GPU job goes through sleeve.jobs.run_job, which sweeps before the job runs."""
    from sleeve.jobs import run_job
    from sleeve.store import open_store, write_json

    dead = killed_job("personalize-r1", "user-s")
    store = open_store(sleeve_env.store_url)
    write_json(store, "jobs/m.json", {})
    seen = []
    run_job(lambda manifest, config, output: seen.append(dead.exists()) or {},
            ["--manifest", store.uri("jobs/m.json"), "--output", store.uri("jobs/out")])
    assert seen == [False]


def test_forget_removes_the_users_folders_dead_or_alive(root):
    from sleeve.scratch import forget

    dead = killed_job("personalize-r1", "user-s")
    others = killed_job("personalize-r2", "user-t")
    live = subprocess.Popen([sys.executable, "-c", _LIVE, "personalize-r3", "user-s"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        from pathlib import Path

        running = Path(live.stdout.readline().strip())
        assert forget("user-s") == 2  # files removed: one per folder
        assert not dead.exists() and not running.exists() and others.exists()
    finally:
        live.communicate("")
    assert live.returncode == 0  # the job whose folder went away ends cleanly
