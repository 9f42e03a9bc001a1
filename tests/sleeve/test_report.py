"""The weekly report's numbers, from rows inserted directly into the warehouse."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from sleeve.report import build_report
from tests.report_support import WEEK, WEEK_END, make_report_env, seed_week


@pytest.fixture
def report_env(tmp_path, monkeypatch):
    return make_report_env(tmp_path, monkeypatch)


def test_empty_week_says_so_and_does_not_divide_by_zero(report_env):
    warehouse = report_env.warehouse
    report = build_report(warehouse, WEEK, WEEK_END)
    assert report["empty"] is True
    assert report["activity"] == {"requests": 0, "images": 0, "reviews": 0, "users": 0}
    assert report["ratings"]["mean"] is None and report["ratings"]["change"] is None
    assert report["top_covers"] == [] and report["model"]["runs"] == [] and report["model"]["production"] is None
    assert report["health"]["gpu_seconds_total"] == 0
    json.dumps(report)  # JSON-ready for XCom and reports.summary


def test_week_with_data(report_env):
    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)
    report = build_report(warehouse, WEEK, WEEK_END)
    assert report["empty"] is False
    assert report["activity"] == {"requests": 3, "images": 4, "reviews": 6, "users": 3}
    r = report["ratings"]
    assert r["distribution"] == {1: 0, 2: 1, 3: 1, 4: 1, 5: 2}
    assert r["invalid"] == 1 and r["count"] == 5
    assert r["mean"] == pytest.approx(19 / 5)
    assert r["previous_mean"] == 3 and r["change"] == pytest.approx(19 / 5 - 3)

    top = report["top_covers"]
    assert [c["image_id"] for c in top] == ["i2", "i0", "i3", "i1"]  # 5.0, 4.5 (2 reviews), 3.0, 2.0
    assert top[0]["title"] == "Sunrise <Remix> & Co" and top[1]["reviews"] == 2

    m = report["model"]
    assert m["runs"][0]["status"] == "trained" and m["runs"][0]["decision"] == "promote"
    assert m["runs"][0]["decision_reasons"] == ["clip improved by 0.02"] and m["runs"][0]["duration_s"] == 320
    assert m["production"]["version"] == "style-v2"  # a per-user DreamBooth adapter is not "the" model
    assert m["promoted"] == ["style-v2"] and m["rollbacks"] == []

    d = report["data"]
    assert d["crawl"]["sample"] == {"fetched": 15, "new": 3, "updated": 1, "unchanged": 6, "quarantined": 1, "errors": 2}
    assert d["label"]["llm"] == 1 and d["label"]["prompt_tokens"] == 120
    h = report["health"]
    assert h["failed_runs"] == 1 and h["failures"][0]["tries"] == 2 and h["failed_stages"] == 1
    crawl = next(s for s in h["stages"] if s["stage"] == "crawl:sample")
    assert crawl["runs"] == 2 and crawl["total_s"] == 20 and crawl["max_s"] == 12
    assert h["gpu_seconds"] == {"generate": 40.5, "personalize": 2, "train:style": 300.0}
    assert h["gpu_seconds_total"] == pytest.approx(342.5)


def test_rollback_is_reported(report_env):
    warehouse = report_env.warehouse
    t = WEEK + timedelta(days=2)
    warehouse.upsert("model_versions", [
        {"version": "style-v1", "kind": "style", "alias": "production", "created_at": WEEK - timedelta(days=30),
         "updated_at": t},
        {"version": "style-v2", "kind": "style", "alias": "archived", "created_at": WEEK - timedelta(days=1),
         "updated_at": t},
    ])
    model = build_report(warehouse, WEEK, WEEK_END)["model"]
    assert model["rollbacks"] == [{"restored": "style-v1", "retired": ["style-v2"]}]
    assert model["production"]["version"] == "style-v1"


def test_malformed_stats_are_ignored_not_fatal(report_env):
    warehouse = report_env.warehouse
    warehouse.upsert("stage_runs", [{"dag_id": "crawl_songs", "stage": "crawl:melon", "interval_start": WEEK,
                                     "stats": "{not json", "status": "success"}])
    report = build_report(warehouse, WEEK, WEEK_END)
    assert report["data"]["crawl"]["melon"]["new"] == 0 and report["empty"] is False


def test_bad_window_is_named(report_env):
    warehouse = report_env.warehouse
    with pytest.raises(ValueError, match="week_end"):
        build_report(warehouse, WEEK_END, WEEK)


def test_retraining_settled_waits_for_the_weeks_run_to_end(report_env):
    from sleeve.report import retraining_settled

    warehouse = report_env.warehouse
    warehouse.execute("DELETE FROM training_runs")
    assert not retraining_settled(warehouse, WEEK)
    row = {"run_id": "r1", "kind": "style", "interval_start": WEEK, "interval_end": WEEK_END, "status": "running"}
    warehouse.upsert("training_runs", [row])
    assert not retraining_settled(warehouse, WEEK)
    warehouse.upsert("training_runs", [{**row, "status": "skipped"}])
    assert retraining_settled(warehouse, WEEK)
    assert not retraining_settled(warehouse, WEEK + timedelta(days=7))
