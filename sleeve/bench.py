"""`make bench`: every benchmark side by side in one run, written to $SLEEVE_HOME/bench.json.

Each part lives beside the code it measures as a module with ``run() -> dict`` returning
``{"name": str, "metrics": {...}, "ratios": {...}, "notes": str}``. Ratios are measured in the
same run as their baselines, since these machines are noisy.
"""

from __future__ import annotations

import importlib
import json
import platform
import sys
import time
import traceback

from sleeve.settings import get_settings

PARTS = [
    "sleeve.bench_imports",
    "crawlers.bench",
    "inference.bench",
    "training.bench",
    "sleeve.bench_demo",
]


def main() -> int:
    settings = get_settings()
    settings.ensure_dirs()
    results, failed = [], []
    for name in PARTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        started = time.perf_counter()
        try:
            result = module.run()
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        result["wall_s"] = round(time.perf_counter() - started, 2)
        results.append(result)
        print(f"\n== {result['name']} ({result['wall_s']} s)")
        for key, value in {**result.get("metrics", {}), **result.get("ratios", {})}.items():
            print(f"  {key:<48} {value}")
    report = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor(), "cpus": __import__("os").cpu_count()},
        "results": results,
        "failed": failed,
    }
    out = settings.home / "bench.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
