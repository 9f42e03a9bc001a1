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


def test_a_part_run_again_replaces_its_keys_and_keeps_the_others():
    def report(parts: dict, at: str, failed=()):
        keys = {}
        for name, values in parts.items():
            keys.update(run.aggregate(values, name))
        return {"measured_at": at, "wall_s": 10.0, "machine": {"cpus": 2, "platform": "Linux", "python": "3.11.7"},
                "keys": keys, "descriptions": {"crawl_ceiling_fraction": "crawl", "generation_padding_waste": "gen"},
                "parts": {name: {"wall_s": 1.0, "keys": sorted(values), "measured_at": at} for name in parts},
                "failed": list(failed)}

    full = report({"crawl": {"crawl_ceiling_fraction": [0.8, 0.85, 0.9], "crawl_old_only": 1},
                   "generate": {"generation_padding_waste": 0}}, "2026-12-01T10:00:00Z")
    again = run.merge(full, report({"crawl": {"crawl_ceiling_fraction": [0.91, 0.92, 0.93]}}, "2026-12-01T19:33:00Z"))
    assert again["keys"]["crawl_ceiling_fraction"]["median"] == 0.92
    assert "crawl_old_only" not in again["keys"]  # a re-run part's keys are all its new ones
    assert again["keys"]["generation_padding_waste"] == full["keys"]["generation_padding_waste"]
    assert again["parts"]["generate"]["measured_at"] == "2026-12-01T10:00:00Z"
    assert again["measured_at"] == "2026-12-01T10:00:00Z"
    text = table.render({**again, "missing": []})
    assert "Re-run later with `--only`: crawl (2026-12-01 19:33 UTC)." in text
    assert "| `crawl_ceiling_fraction` | **0.92** (0.91-0.93, 3) | crawl |" in text
    # a part that fails on its re-run loses its old numbers: they no longer describe the code
    broken = run.merge(full, report({}, "2026-12-01T20:00:00Z", failed=["crawl"]))
    assert "crawl_ceiling_fraction" not in broken["keys"] and broken["failed"] == ["crawl"]
