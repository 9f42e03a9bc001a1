"""The `make bench` runner's contract, the README table, and the package boundary."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from benchmarks import run, table

REPO = Path(__file__).resolve().parents[2]


def test_runner_parts_are_benchmark_modules():
    modules = [importlib.import_module(f"benchmarks.{name}") for name in run.PARTS]
    assert all(callable(m.run) for m in modules) and len(set(run.PARTS)) == len(run.PARTS)
    described = {k for m in modules for k in getattr(m, "DESCRIPTIONS", {})}
    # The keys this branch's parts own are described for the README table.
    assert {"generation_speedup_vs_stock_batched", "generation_padding_waste", "train_speedup_vs_reference",
            "epoch2_speedup_from_cache"} <= described


def test_rounds_become_median_min_max_and_scalars_stay_facts():
    entries = run.aggregate({"ratio": [1.2, 0.9, 1.5], "images": 48, "group": {"note": "x"}}, "p")
    assert entries["ratio"] == {"median": 1.2, "min": 0.9, "max": 1.5, "rounds": [1.2, 0.9, 1.5], "part": "p"}
    assert entries["images"] == {"value": 48, "part": "p"} and entries["note"] == {"value": "x", "part": "p"}


@pytest.mark.parametrize("bad,message", [
    ({"ratio": [1.0, 2.0]}, "at least 3 are needed"),
    ({"ratio": []}, "non-empty list of numbers"),
    ({"ratio": [1.0, "2", 3.0]}, "non-empty list of numbers"),
    ({"ratio": object()}, "type object"),
])
def test_a_part_breaking_the_contract_is_told_why(bad, message):
    with pytest.raises(ValueError, match=message):
        run.aggregate(bad, "p")


def test_the_table_shows_described_keys_with_their_spread_and_names_what_is_missing():
    report = {"measured_at": "2026-12-01T10:00:00Z", "wall_s": 300.0,
              "machine": {"cpus": 2, "platform": "Linux", "python": "3.11.7"},
              "keys": run.aggregate({"generation_speedup_vs_stock_batched": [1.1, 1.0, 1.3], "raw_s": [1, 2, 3],
                                     "generation_padding_waste": 0.0}, "generate"),
              "descriptions": {"generation_speedup_vs_stock_batched": "stock / Sleeve",
                               "generation_padding_waste": "thrown away / stored"},
              "missing": ["crawl_ceiling_fraction"], "failed": []}
    text = table.render(report)
    assert "Measured on 2026-12-01" in text
    assert "| `generation_speedup_vs_stock_batched` | **1.1** (1-1.3, 3) | stock / Sleeve |" in text
    assert "| `generation_padding_waste` | **0** (one count) | thrown away / stored |" in text
    assert "raw_s" not in text and "Not produced by this run: `crawl_ceiling_fraction`." in text
    readme = f"intro\n{table.START}\nold\n{table.END}\nafter\n"
    assert table.replace_table(readme, "new") == f"intro\n{table.START}\nnew\n{table.END}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        table.replace_table("no markers here", "new")


def test_the_readme_has_the_table_markers():
    text = (REPO / "README.md").read_text()
    assert text.count(table.START) == 1 and text.count(table.END) == 1


def test_product_packages_hold_no_benchmarks():
    stray = [p.relative_to(REPO).as_posix() for pkg in ("sleeve", "crawlers", "training", "inference", "plugins")
             for p in (REPO / pkg).rglob("*bench*.py")]
    assert stray == []


def test_snapshot_bench_baseline_does_the_same_work(tmp_path):
    """The snapshot benchmark's quadratic baseline and the snapshot keep the same images (a
    small catalogue; the timings belong to `make bench`)."""
    from benchmarks import snapshot as bench

    warehouse, store, new, keep = bench.build_catalogue(tmp_path, 300, all_files=True, generated=12)
    snap = bench.snapshot(warehouse, store, bench.WEEK_START, bench.WEEK_END)
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
