"""`make bench` part: `make demo`'s weekly cycle in a fresh SLEEVE_HOME (first run, which builds
everything) and again on the same state (the idempotent re-run). One round: a cycle is about a
minute, and this is a wall-time budget check, not a comparison."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 180.0

DESCRIPTIONS = {
    "demo_first_run_s": "`python -m sleeve_airflow.demo` in a fresh SLEEVE_HOME (one run, process start included); "
                        "target 180 s",
}


def _timed(cmd: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def run() -> dict:
    with tempfile.TemporaryDirectory(prefix="sleeve-bench-demo-") as tmp:
        env = {**os.environ, "SLEEVE_HOME": tmp, "AIRFLOW_HOME": f"{tmp}/airflow"}
        env.pop("SLEEVE_BASE_MODEL", None)
        setup_s = _timed([sys.executable, "-m", "sleeve.cli", "init"], env)
        first_s = _timed([sys.executable, "-m", "sleeve_airflow.demo"], env)
        steps = json.loads((Path(tmp) / "demo_timing.json").read_text())["steps"]
        again_s = _timed([sys.executable, "-m", "sleeve_airflow.demo"], env)
    return {"demo_setup_s": setup_s, "demo_first_run_s": first_s, "demo_rerun_s": again_s,
            "demo_target_s": TARGET_S, "demo_steps_s": {f"demo_step_{k}_s": v for k, v in steps.items()}}
