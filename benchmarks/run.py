"""`make bench`: every benchmark part side by side in one run, aggregated into $SLEEVE_HOME/bench.json.

    python -m benchmarks                    # every part
    python -m benchmarks --only generate    # some parts (comma-separated names)

``--only`` re-runs those parts and keeps the other parts' entries of an existing bench.json, so
one part can be measured again (on a quieter machine, after a change) and the table still holds
every key; each part records when it was measured.

The contract a part follows (plug one in by adding its module to PARTS):

- ``run() -> dict`` returns ``{key: [one value per round]}`` for measurements and
  ``{key: value}`` for facts of the set-up (image count, hosts) or counts that cannot vary;
  a sub-dict groups keys (the group's name is dropped). Values are numbers, bools or strings.
- A measured ratio is computed per round from a baseline and Sleeve run side by side in that
  round (alternating, so a busy machine slows both alike); a part runs at least 3 rounds.
- ``DESCRIPTIONS = {key: "one line"}`` says, for each headline key, what it measures and what
  its baseline is, in words a sceptical reader would accept; only described keys go into the
  README table (``python -m benchmarks.table``), the rest stay in bench.json.

bench.json holds, per key, ``{"median", "min", "max", "rounds": [...], "part"}`` for lists and
``{"value", "part"}`` for scalars, the descriptions, each part's wall time, the parts that
failed, and which of the keys the benchmarks must report (:data:`REQUIRED`) are missing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time
import traceback

from sleeve.settings import get_settings

PARTS = ["dag_imports", "crawl", "generate", "jobs", "train", "snapshot", "product", "demo", "service"]  # modules of this package
# The keys a complete run must report, whoever's part produces them.
REQUIRED = ("generation_speedup_vs_stock_batched", "generation_padding_waste", "train_speedup_vs_reference",
            "epoch2_speedup_from_cache", "crawl_ceiling_fraction", "snapshot_seconds_100k")
MIN_ROUNDS = 3


def aggregate(values: dict, part: str) -> dict:
    """A part's ``run()`` output as bench.json entries (see the module docstring)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(aggregate(value, part))
        elif isinstance(value, list | tuple):
            if not value or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
                raise ValueError(f"{part}: {key} must be a non-empty list of numbers, got {value!r}")
            if len(value) < MIN_ROUNDS:
                raise ValueError(f"{part}: {key} has {len(value)} round(s); at least {MIN_ROUNDS} are needed")
            out[key] = {"median": round(statistics.median(value), 4), "min": round(min(value), 4),
                        "max": round(max(value), 4), "rounds": [round(v, 4) for v in value], "part": part}
        elif isinstance(value, int | float | str | bool) or value is None:
            out[key] = {"value": value, "part": part}
        else:
            raise ValueError(f"{part}: {key} has a value of type {type(value).__name__}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Run Sleeve's CPU benchmarks and write bench.json")
    parser.add_argument("--only", default="", help=f"comma-separated parts (default all: {','.join(PARTS)})")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or PARTS
    unknown = sorted(set(names) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; the parts are {PARTS}")
    settings = get_settings()
    settings.ensure_dirs()
    started = time.perf_counter()
    keys, descriptions, parts, failed = {}, {}, {}, []
    for name in names:
        part_started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            entries = aggregate(module.run(), name)
        except Exception:
            traceback.print_exc()
            failed.append(name)
            continue
        clash = sorted(set(entries) & set(keys))
        if clash:
            print(f"{name}: key(s) {clash} already reported by another part; kept the first", file=sys.stderr)
        keys.update({k: v for k, v in entries.items() if k not in keys})
        descriptions.update(getattr(module, "DESCRIPTIONS", {}))
        parts[name] = {"wall_s": round(time.perf_counter() - part_started, 1), "keys": sorted(entries),
                       "measured_at": _now()}
        print(f"\n== {name} ({parts[name]['wall_s']} s)")
        for key, entry in entries.items():
            print(f"  {key:<52} {_show(entry)}")
    report = {
        "measured_at": _now(),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "processor": platform.processor(), "cpus": os.cpu_count()},
        "keys": keys, "descriptions": descriptions, "parts": parts, "failed": failed,
    }
    out = settings.home / "bench.json"
    if args.only and out.exists():
        report = merge(json.loads(out.read_text()), report)
    report["missing"] = [k for k in REQUIRED if k not in report["keys"]]
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"\nwrote {out} in {report['wall_s']} s" + (f"; missing keys: {report['missing']}" if report["missing"] else ""))
    return 1 if failed else 0


def merge(earlier: dict, now: dict) -> dict:
    """``now`` (some parts re-run) over ``earlier``: the re-run parts' keys and records replace
    theirs, every other part's stay as measured (with their own ``measured_at``)."""
    rerun = set(now["parts"]) | set(now["failed"])
    keys = {k: v for k, v in earlier.get("keys", {}).items() if v.get("part") not in rerun}
    parts = {name: {"measured_at": earlier.get("measured_at"), **record}
             for name, record in earlier.get("parts", {}).items() if name not in rerun}
    failed = [name for name in earlier.get("failed", []) if name not in rerun] + now["failed"]
    return {**now, "measured_at": earlier.get("measured_at", now["measured_at"]),
            "wall_s": earlier.get("wall_s", now["wall_s"]), "keys": {**keys, **now["keys"]},
            "descriptions": {**earlier.get("descriptions", {}), **now["descriptions"]},
            "parts": {**parts, **now["parts"]}, "failed": failed}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _show(entry: dict) -> str:
    if "median" in entry:
        return f"{entry['median']:g} (min {entry['min']:g}, max {entry['max']:g}, {len(entry['rounds'])} rounds)"
    return str(entry["value"])


if __name__ == "__main__":
    sys.exit(main())
