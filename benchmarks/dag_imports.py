"""`make bench` part: DAG file import times, what the dag-processor pays on every parse. Each
file is imported in a fresh interpreter after Airflow's SDK (the floor every DAG file pays),
once per round."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DAGS = Path(__file__).resolve().parents[1] / "dags"
ROUNDS = 3
BUDGET_MS = 1000.0

_TIMER = """
import sys, time, runpy
import airflow.sdk  # the floor every DAG file pays
t = time.perf_counter()
runpy.run_path(sys.argv[1])
print(time.perf_counter() - t)
"""

DESCRIPTIONS = {
    "dag_import_slowest_ms": "slowest DAG file's import in a fresh interpreter, after airflow.sdk; budget 1000 ms",
}


def _import_ms(path: Path) -> float:
    out = subprocess.run([sys.executable, "-c", _TIMER, str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]) * 1000


def run() -> dict:
    files = sorted(p for p in DAGS.glob("*.py") if not p.name.startswith("_"))
    times: dict[str, list[float]] = {p.stem: [] for p in files}
    for _ in range(ROUNDS):
        for path in files:
            times[path.stem].append(_import_ms(path))
    slowest = [max(t[i] for t in times.values()) for i in range(ROUNDS)]
    return {**{f"dag_import_ms_{stem}": t for stem, t in times.items()},
            "dag_import_slowest_ms": slowest, "dag_import_budget_ms": BUDGET_MS}
