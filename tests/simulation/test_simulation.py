"""A short simulation through the real DAGs: the loop learns what users like, and a week of
inverted ratings never reaches production. (Full-length numbers: ``make simulate``.)"""

from __future__ import annotations

import json

import pytest

from simulation.run import Plan, build_world, run_strategy
from simulation.taste import TASTES_DIR


@pytest.fixture
def trained_base(sleeve_env, base_model, monkeypatch):
    """The trained base model instead of the random tiny one."""
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_BASE_MODEL", str(base_model))
    get_settings.cache_clear()
    return get_settings()


def test_the_loop_follows_a_taste_the_base_model_misses_and_keeps_a_sabotaged_week(dagbag, trained_base):
    build_world()
    plan = Plan(weeks=2, taste=str(TASTES_DIR / "dark-minimal.json"), sabotaged_week=2, strategies=["sleeve"],
                users=12, activity=1.0, heldout_prompts=6, heldout_seeds=2)
    result = run_strategy("sleeve", plan)
    series, details = result["series"], result["details"]
    base, week1, week2 = series["mean_rating"]
    # week 1: honest reviews; the retrained model's held-out covers are rated higher than the base's
    assert series["promotions"][0] is True and week1 > base + 0.15, (series, details)
    # week 2: every rating inverted; the gate keeps the champion, so production does not drop
    assert series["promotions"][1] is False and details["decisions"][1] == "keep", series["gate_reasons"][1]
    assert week2 == week1 and details["versions"][2] == details["versions"][1]
    json.dumps(result)  # the worker writes it as JSON
