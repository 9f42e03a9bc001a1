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
