"""DAG file import times: what the dag-processor pays on every parse, each file in a fresh
interpreter (median of several runs), next to the cost of importing Airflow's SDK alone."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"
RUNS = 5

_TIMER = """
import sys, time, runpy
import airflow.sdk  # the floor every DAG file pays
t = time.perf_counter()
runpy.run_path(sys.argv[1])
print(time.perf_counter() - t)
"""


def _median_seconds(path: Path) -> float:
    times = []
    for _ in range(RUNS):
        out = subprocess.run([sys.executable, "-c", _TIMER, str(path)], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def run() -> dict:
    metrics = {}
    for path in sorted(DAGS.glob("*.py")):
        if not path.name.startswith("_"):
            metrics[f"{path.stem} import ms (after airflow.sdk)"] = round(_median_seconds(path) * 1000, 1)
    worst = max(metrics.values(), default=0.0)
    return {
        "name": "DAG file import times",
        "metrics": metrics,
        "ratios": {"slowest DAG file / 1 s budget": round(worst / 1000, 4)},
        "notes": f"median of {RUNS} fresh interpreters per file; time measured after importing airflow.sdk",
    }
