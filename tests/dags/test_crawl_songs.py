"""crawl_songs through dag.test(): the embedded default crawls the sample site; re-running the
same interval leaves the same state; Params are validated."""

import json

import pendulum
import pytest


def _state(warehouse):
    return {t: warehouse.query(f"SELECT * FROM {t} ORDER BY 1, 2") for t in ("songs", "covers", "quarantine")}


def test_default_run_crawls_sample_and_is_idempotent(dagbag, warehouse, store):
    dag = dagbag.get_dag("crawl_songs")
    assert dag is not None and dag.catchup is False
    run = dag.test(logical_date=pendulum.datetime(2026, 1, 12, 3, tz="UTC"))
    assert run.state == "success"
    songs = warehouse.count("songs")
    # every song is kept; the sample's two bad covers (an HTML "image", a 32 px one) cost two songs each their cover
    assert songs >= 15 and warehouse.count("covers") == songs - 4
    stage = warehouse.query("SELECT * FROM stage_runs WHERE dag_id = 'crawl_songs'")
    assert [s["stage"] for s in stage] == ["crawl:sample"]
    stats = json.loads(stage[0]["stats"])
    assert stats["new"] == songs and stats["quarantined"] > 0 and stats["errors"] == 0
    # the data interval is the previous week (Mondays 03:00 UTC), not the wall clock
    assert stage[0]["interval_start"] == pendulum.datetime(2026, 1, 5, 3, tz="UTC")

    before = _state(warehouse)
    again = dag.test(logical_date=pendulum.datetime(2026, 1, 12, 3, tz="UTC"))
    assert again.state == "success"
    assert _state(warehouse) == before and warehouse.count("stage_runs") == 1


def test_params_are_validated(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    params = dagbag.get_dag("crawl_songs").params
    for name, bad in (("source", "spotify"), ("chart", "hourly"), ("limit", 0), ("since", "last week")):
        with pytest.raises(ParamValidationError):
            params.get_param(name).resolve(bad)
    assert params.get_param("since").resolve("2026-01-01") == "2026-01-01"
    assert params.get_param("limit").resolve(None) is None
