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
    assert report["activity"] == {"requests": 0, "personalization_requests": 0, "images": 0,
                                  "personalized_images": 0, "reviews": 0, "users": 0, "previous_images": 0}
    assert report["ratings"]["mean"] is None and report["ratings"]["change"] is None
    assert [w["mean"] for w in report["trend"]] == [None] * 8
    assert report["top_covers"] == [] and report["model"]["runs"] == [] and report["model"]["production"] is None
    assert report["health"]["gpu_seconds_total"] == 0
    json.dumps(report)  # JSON-ready for XCom and reports.summary


def test_week_with_data(report_env):
    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)
    report = build_report(warehouse, WEEK, WEEK_END)
    assert report["empty"] is False
    assert report["activity"] == {"requests": 3, "personalization_requests": 0, "images": 4,
                                  "personalized_images": 0, "reviews": 6, "users": 3, "previous_images": 0}
    r = report["ratings"]
    assert r["distribution"] == {1: 0, 2: 1, 3: 1, 4: 1, 5: 2}
    assert r["invalid"] == 1 and r["count"] == 5
    assert r["mean"] == pytest.approx(19 / 5)
    assert r["previous_mean"] == 3 and r["change"] == pytest.approx(19 / 5 - 3)

    top = report["top_covers"]
    assert [c["image_id"] for c in top] == ["i0"]  # by default a cover needs 2 valid reviews to rank
    # One per request (r0's best is i0: 4.5 from 2 reviews; its i1 has 2.0), at least 1 review here.
    report = build_report(warehouse, WEEK, WEEK_END, min_reviews=1)
    top = report["top_covers"]
    assert [c["image_id"] for c in top] == ["i2", "i0", "i3"]  # 5.0 (r1), 4.5 (r0), 3.0 (r2)
    assert top[0]["title"] == "Sunrise <Remix> & Co" and top[0]["artist"] == "Demo Band"

    m = report["model"]
    assert m["runs"][0]["status"] == "trained" and m["runs"][0]["decision"] == "promote"
    assert m["runs"][0]["decision_reasons"] == ["clip improved by 0.02"]
    assert m["production"]["version"] == "style-v2"  # a per-user DreamBooth adapter is not "the" model
    assert m["rollbacks"] == []

    d = report["data"]
    assert d["crawl"]["sample"] == {"fetched": 15, "new": 3, "updated": 1, "unchanged": 6, "quarantined": 1, "errors": 2}
    assert d["label"]["llm"] == 1 and d["label"]["prompt_tokens"] == 120
    h = report["health"]
    assert h["failed_runs"] == 1 and h["failures"][0]["tries"] == 2 and h["failed_stages"] == 1
    crawl = next(s for s in h["stages"] if s["stage"] == "crawl:sample")
    assert crawl["runs"] == 2 and crawl["statuses"] == ["success"]
    assert h["gpu_seconds"] == {"personalize": 2, "train:style": 300.0}  # generation's is not kept by re-runs
    assert h["gpu_seconds_total"] == pytest.approx(302)


def test_rollback_is_reported(report_env):
    from sleeve import registry

    warehouse = report_env.warehouse
    for n, version in enumerate(("style-v1", "style-v2")):
        registry.register(warehouse, version=version, kind="style", base_model="b", adapter_uri="file:///a",
                          manifest_uri="file:///m", metrics={}, training_run_id="r", now=WEEK - timedelta(days=9 - n))
        registry.promote(warehouse, version, now=WEEK - timedelta(days=8 - n))
    registry.rollback(warehouse, now=WEEK + timedelta(days=2))
    model = build_report(warehouse, WEEK, WEEK_END)["model"]
    assert model["rollbacks"] == [{"restored": "style-v1", "retired": "style-v2"}]
    assert model["production"] == {"version": "style-v1", "base_model": "b",
                                   "since": (WEEK + timedelta(days=2)).isoformat()}
    # The week before, style-v2 was in production: its report still says so.
    assert build_report(warehouse, WEEK - timedelta(days=7), WEEK)["model"]["production"]["version"] == "style-v2"


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


def test_top_covers_one_per_request_ties_by_review_count_never_personalised(report_env):
    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)
    t = WEEK + timedelta(days=2)
    warehouse.upsert("generation_requests", [
        {"request_id": "r-many", "song_id": "s0", "kind": "user", "created_at": t},
        {"request_id": "r-face", "song_id": "s1", "kind": "personalize", "created_at": t}])
    warehouse.upsert("images", [
        {"image_id": "i-many", "request_id": "r-many", "uri": "file:///x.png", "created_at": t},
        {"image_id": "i-face", "request_id": "r-face", "uri": "file:///face.png", "created_at": t}])
    warehouse.upsert("reviews", [{"review_id": f"m{n}", "image_id": "i-many", "user_id": f"u{n}", "rating": 5,
                                  "created_at": t} for n in range(3)]
                     + [{"review_id": f"f{n}", "image_id": "i-face", "user_id": f"u{n}", "rating": 5,
                         "created_at": t} for n in range(5)])
    top = build_report(warehouse, WEEK, WEEK_END, min_reviews=1)["top_covers"]
    # 5.0 from 3 reviews beats 5.0 from 1; the personalised cover (a user's face) never shows.
    assert [c["image_id"] for c in top] == ["i-many", "i2", "i0", "i3"]
    assert len({c["request_id"] for c in top}) == len(top)


def test_trend_of_the_last_weeks(report_env):
    warehouse = report_env.warehouse
    ratings_by_week = {0: [2, 3], 2: [3, 4], 3: [4, 4, 5]}  # weeks back from WEEK; 1 has no reviews
    warehouse.upsert("reviews", [
        {"review_id": f"w{back}-{n}", "image_id": "i", "rating": rating,
         "created_at": WEEK - timedelta(weeks=back) + timedelta(hours=5)}
        for back, rs in ratings_by_week.items() for n, rating in enumerate(rs)])
    warehouse.upsert("training_runs", [{"run_id": "t", "kind": "style", "interval_start": WEEK - timedelta(weeks=2),
                                        "status": "trained", "decision": "promote", "model_version": "style-x"}])
    trend = build_report(warehouse, WEEK, WEEK_END, trend_weeks=4)["trend"]
    assert [w["week_start"][:10] for w in trend] == ["2025-12-22", "2025-12-29", "2026-01-05", "2026-01-12"]
    assert [w["mean"] for w in trend] == [13 / 3, 3.5, None, 2.5]
    assert [w["share_4plus"] for w in trend] == [1.0, 0.5, None, 0.0]
    assert [w["promoted"] for w in trend] == [None, "style-x", None, None]


def test_report_is_a_function_of_its_week(report_env):
    """Re-running stages for the same interval (their bookkeeping: durations, skipped counts, a
    generation re-run's GPU seconds, the wall clock on registry rows) changes nothing reported."""
    from sleeve.report_render import render

    warehouse = report_env.warehouse
    seed_week(warehouse, report_env.store)

    def text():
        return render(build_report(warehouse, WEEK, WEEK_END, store=report_env.store), lambda uri: b"")["markdown"]

    before = text()
    rerun_at = WEEK + timedelta(days=40)
    for row in warehouse.query("SELECT * FROM stage_runs"):
        stats = json.loads(row["stats"])
        if row["stage"] == "generate":
            stats.update(skipped_existing=4, gpu_seconds=1.5)
        warehouse.upsert("stage_runs", [{**row, "stats": json.dumps(stats), "started_at": rerun_at,
                                         "finished_at": rerun_at + timedelta(seconds=1)}])
    warehouse.execute("UPDATE model_versions SET updated_at = @t", {"t": rerun_at})
    assert text() == before


def test_waiting_for_the_weeks_retraining():
    from sleeve.report import retraining_to_wait_for

    week = WEEK
    wait = lambda **facts: retraining_to_wait_for(week_start=week, **facts)  # noqa: E731
    assert wait(paused=False, active_runs=1, next_run=week + timedelta(weeks=1))  # running now
    assert wait(paused=False, active_runs=0, next_run=week)  # the scheduler is about to create it
    assert wait(paused=True, active_runs=1, next_run=None)  # a run of a paused DAG still finishes
    assert wait(paused=True, active_runs=0, next_run=week) is None  # paused: it will never come
    assert wait(paused=False, active_runs=0, next_run=week + timedelta(weeks=1)) is None  # it ran already
    assert wait(paused=False, active_runs=0, next_run=None) is None  # no schedule
    assert wait(paused=None, active_runs=0, next_run=None) is None  # no such DAG
