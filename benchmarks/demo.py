"""Demo wall time: `make demo`'s weekly cycle in a fresh SLEEVE_HOME (first run, which builds
everything) and again on the same state (the idempotent re-run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


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
    metrics = {"setup (init: migrations, tiny model, Airflow DB) s": round(setup_s, 1),
               "demo first run s": round(first_s, 1), "demo re-run s": round(again_s, 1)}
    metrics.update({f"  step: {name} s": round(seconds, 1) for name, seconds in steps.items()})
    return {
        "name": "make demo (weekly cycle, embedded defaults)",
        "metrics": metrics,
        "ratios": {"demo first run / 180 s target": round(first_s / 180, 2)},
        "notes": "wall time of `python -m sleeve_airflow.demo` in a fresh temporary SLEEVE_HOME, process start included",
    }
