"""`make bench`: every benchmark side by side in one run, written to $SLEEVE_HOME/bench.json.

Each part is a module of this package with ``run() -> dict`` returning
``{"name": str, "metrics": {...}, "ratios": {...}, "notes": str}``. Ratios are measured in the
same run as their baselines, since these machines are noisy.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import traceback

from benchmarks import crawl, dag_imports, demo, generate, product, train
from sleeve.settings import get_settings

PARTS = [dag_imports, crawl, generate, train, product, demo]


def main() -> int:
    settings = get_settings()
    settings.ensure_dirs()
    results, failed = [], []
    for module in PARTS:
        started = time.perf_counter()
        try:
            result = module.run()
        except Exception:
            traceback.print_exc()
            failed.append(module.__name__)
            continue
        result["wall_s"] = round(time.perf_counter() - started, 2)
        results.append(result)
        print(f"\n== {result['name']} ({result['wall_s']} s)")
        for key, value in {**result.get("metrics", {}), **result.get("ratios", {})}.items():
            print(f"  {key:<48} {value}")
    report = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor(), "cpus": os.cpu_count()},
        "results": results,
        "failed": failed,
    }
    out = settings.home / "bench.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
