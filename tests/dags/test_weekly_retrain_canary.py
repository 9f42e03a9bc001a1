"""weekly_retrain through dag.test() with a running canary and objective dpo: the canary is judged
on the week's ratings first, then the week trains by Diffusion-DPO on its review pairs."""

from __future__ import annotations

import json
from datetime import timedelta

import pendulum

from tests.training.conftest import WEEK_START
from tests.training.test_canary import _register, _serve
from tests.training.test_preference import add_request

WEEK_RUN = pendulum.datetime(2026, 1, 12, 3, tz="UTC")  # interval [Jan 5 03:00, Jan 12 03:00)


def test_canary_judged_then_dpo_trains_on_pairs(dagbag, warehouse, store):
    from sleeve import registry

    _register(warehouse, "prod")
    registry.promote(warehouse, "prod", WEEK_START - timedelta(days=7))
    _register(warehouse, "cand")
    registry.start_canary(warehouse, "cand", WEEK_START)
    day = WEEK_START + timedelta(days=2)
    _serve(warehouse, "prod", [2, 3, 4, 3] * 5, "p", day)
    _serve(warehouse, "cand", [3, 4, 5, 4] * 5, "c", day)
    for n in range(4):
        add_request(warehouse, store, f"rq{n}", [5, 4, 2, 1], seed=300 + 10 * n)

    dag = dagbag.get_dag("weekly_retrain")
    conf = {"steps": 2, "objective": "dpo", "min_pairs": 1, "canary_min_requests": 10, "warm_start": False}
    assert dag.test(logical_date=WEEK_RUN, run_conf=conf).state == "success"

    decision = warehouse.query("SELECT * FROM canary_decisions")[0]
    assert decision["decision"] == "promote" and decision["version"] == "cand", decision["reason"]
    assert registry.production_version(warehouse)["version"] == "cand"
    run = warehouse.query("SELECT * FROM training_runs")[0]
    assert run["status"] == "trained", run["reason"]
    metrics = json.loads(run["metrics"])
    assert metrics["objective"] == "dpo" and metrics["train_pairs"] > 0
    assert metrics["snapshot"]["pairs"] == 4 * 6  # ratings 5, 4, 2, 1: all six pairs at least 1 apart
