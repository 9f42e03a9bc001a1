"""A short simulation through the real DAGs: the loop learns what users like, and a week of
inverted ratings never reaches production. (Full-length numbers: ``make simulate``.)

weekly_retrain runs with its own defaults (filter, caption dropout, gate floors), only fewer
users and a smaller held-out set than ``make simulate``; the GPU jobs run on a warm job server,
as in ``make simulate``. Measured 2026-12-01 with the users acting through the covers service's
API: held-out 2.930 -> 3.359 (week 1 promoted, val loss -9.9 % [-11.8 %, -8.0 %] over 6 images),
the inverted week 2 kept by the reference rule (+5.9 % [+2.4 %, +10.2 %]). With the users writing
their rows directly (the catalogue's prompts) week 1 was not promoted and the test was xfail."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from simulation.run import Plan, build_world, run_strategy
from simulation.taste import TASTES_DIR


@pytest.fixture
def trained_base(sleeve_env, base_model, monkeypatch):
    """The trained base model instead of the random tiny one; GPU jobs on a warm job server."""
    from sleeve.jobserver import running_server
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_BASE_MODEL", str(base_model))
    with tempfile.TemporaryDirectory(prefix="sleeve-jobs-") as folder:  # a short path: sockets allow ~100 bytes
        with running_server(Path(folder) / "jobs.sock") as sock:
            monkeypatch.setenv("SLEEVE_GPU_JOB_SERVER", sock)
            get_settings.cache_clear()
            yield get_settings()
    get_settings.cache_clear()


def test_the_loop_follows_a_taste_the_base_model_misses_and_keeps_a_sabotaged_week(dagbag, trained_base):
    build_world()
    plan = Plan(weeks=2, taste=str(TASTES_DIR / "dark-minimal.json"), sabotaged_week=2, strategies=["sleeve"],
                users=24, activity=1.0, heldout_prompts=8, heldout_seeds=2)
    result = run_strategy("sleeve", plan)
    series, details = result["series"], result["details"]
    base, week1, week2 = series["mean_rating"]
    # week 1: honest reviews; the gate promotes, and the new model's held-out covers are rated higher
    assert series["promotions"][0] is True, series["gate_reasons"][0]
    assert week1 > base + 0.05, (series, details)
    # week 2: every rating inverted; the gate keeps the champion on the reference (week 1's
    # held-out well-rated images and pairs), not on the suspect week's own images, and production holds
    assert series["promotions"][1] is False and details["decisions"][1] == "keep", series["gate_reasons"][1]
    assert any(r.startswith("reference") and "this week's data is suspect" in r
               for r in series["gate_reasons"][1]), series["gate_reasons"][1]
    assert week2 == week1 and details["versions"][2] == details["versions"][1]
    json.dumps(result)  # the worker writes it as JSON
