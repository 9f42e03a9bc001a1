"""The `make bench` runner and the package boundary."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_runner_parts_are_benchmark_modules():
    from benchmarks import run

    names = [m.__name__ for m in run.PARTS]
    assert all(n.startswith("benchmarks.") for n in names) and len(set(names)) == len(names)
    assert all(callable(m.run) for m in run.PARTS)


def test_product_packages_hold_no_benchmarks():
    stray = [p.relative_to(REPO).as_posix() for pkg in ("sleeve", "crawlers", "training", "inference", "plugins")
             for p in (REPO / pkg).rglob("*bench*.py")]
    assert stray == []


def test_snapshot_bench_baseline_does_the_same_work(tmp_path):
    """The snapshot benchmark's quadratic baseline and the snapshot keep the same images (a
    small catalogue; the timings belong to `make bench`)."""
    from benchmarks import snapshot as bench
    from training.snapshot import build_snapshot

    warehouse, store, new, keep = bench.build_catalogue(tmp_path, 300, all_files=True, generated=12)
    snap = build_snapshot(warehouse, store, bench.WEEK_START, bench.WEEK_END)
    assert snap["counts"]["duplicates"] == 6 and snap["hashed_now"] == len(new) + 12  # planted; new this week
    assert snap["counts"]["reference"] > 0 and snap["counts"]["reference_weeks"] == 4
    bench._reset(warehouse, store, new, keep)
    assert bench.quadratic_snapshot(warehouse, store)["examples"] == snap["counts"]["examples"]
    # the index-only baseline answers as the index does, on the catalogue's stored hashes
    from sleeve.phash import near_duplicates

    hashes = bench._stored_hashes(warehouse)
    assert len(hashes) >= 300 - len(new) and bench.numpy_full_scan(hashes, 4) == near_duplicates(hashes, 4)
    # planted at 51, 151 and 251 (those at 1, 101 and 201 copy a cover whose hash is new this week)
    assert sum(t is not None for t in near_duplicates(hashes, 4)) == 3
