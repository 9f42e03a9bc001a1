"""weekly_report through dag.test(): empty week, a week with data, re-runs update, backfill."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pendulum
import pytest

from sleeve.settings import get_settings
from tests.plugins.slack_server import SlackServer
from tests.report_support import WEEK, make_report_env, seed_week

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "weekly_report.py"


@pytest.fixture
def report_env(tmp_path, monkeypatch):
    return make_report_env(tmp_path, monkeypatch)


@pytest.fixture
def dagbag(airflow_db):
    """Only this DAG's file: parsing every DAG in the folder is not this test's business."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FILE))


def run_week(dagbag, interval_start, **conf):
    """dag.test() for the run whose data interval is [interval_start, + 7 days): a
    scheduled weekly run's logical date is the end of its interval."""
    dag = dagbag.get_dag("weekly_report")
    return dag.test(logical_date=pendulum.instance(interval_start + timedelta(days=7)), run_conf=conf or None)


def test_dag_shape(dagbag):
    dag = dagbag.get_dag("weekly_report")
    assert [t.task_id for t in dag.topological_sort()] == ["retraining_settled", "gather", "deliver"]
    # The numbers are gathered only after the week's retraining settled, never beside the wait.
    assert dag.get_task("gather").upstream_task_ids == {"retraining_settled"}
    assert dag.get_task("deliver").upstream_task_ids == {"gather"}
    sensor = dag.get_task("retraining_settled")
    assert sensor.mode == "reschedule" and sensor.soft_fail
    assert dag.get_task("gather").trigger_rule == "none_failed"  # a timed-out wait still reports
    assert "week_start" in dag.params and "top_min_reviews" in dag.params


def test_runs_of_other_weeks_do_not_queue_behind_a_waiting_run(dagbag):
    """A manual run of one week must not wait for a scheduled run of another that is waiting for
    its retraining; deliveries still go one at a time, so a week never posts twice."""
    dag = dagbag.get_dag("weekly_report")
    assert dag.max_active_runs > 1
    assert dag.get_task("deliver").max_active_tis_per_dag == 1


@pytest.fixture
def as_scheduled(monkeypatch):
    """dag.test() creates manual runs; make its run a scheduled one (what the scheduler creates)."""
    from airflow.models import dagrun as dagrun_module
    from airflow.utils.types import DagRunType

    original = dagrun_module.get_or_create_dagrun

    def scheduled_run(*, session, **kwargs):
        dr = original(session=session, **kwargs)
        dr.run_type = DagRunType.SCHEDULED
        session.commit()
        return dr

    monkeypatch.setattr(dagrun_module, "get_or_create_dagrun", scheduled_run)


@pytest.mark.timeout(300)  # waiting would mean a 10-minute reschedule: the old sensor fails here
def test_scheduled_run_does_not_wait_for_a_paused_retraining(report_env, dagbag, as_scheduled):
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    seed_week(report_env.warehouse, report_env.store)
    report_env.warehouse.execute("DELETE FROM training_runs")  # this week's retraining never ran
    run_week(dagbag, WEEK)  # registers every DAG of the folder, paused as Airflow creates them
    with create_session() as session:
        assert session.get(DagModel, "weekly_retrain").is_paused
    run = run_week(dagbag, WEEK)
    assert run.run_type == "scheduled" and run.state == "success"
    md = (report_env.settings.outbox_dir / "weekly_report" / "2026-01-12" / "report.md").read_text()
    assert "No retraining ran for this week" in md


def test_a_settings_error_fails_the_first_task_at_once_without_retrying(report_env, dagbag, monkeypatch):
    import time

    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")  # and no token, webhook or connection
    get_settings.cache_clear()
    started = time.monotonic()
    run = run_week(dagbag, WEEK)
    elapsed = time.monotonic() - started
    states = {ti.task_id: (str(ti.state), ti.try_number) for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states["retraining_settled"] == ("failed", 1)  # no retry: retrying cannot fix configuration
    assert states["gather"][0] == "upstream_failed" and states["deliver"][0] == "upstream_failed"
    assert elapsed < 120, f"took {elapsed:.0f} s"  # a retried task would wait a minute per retry
    (alert,) = (report_env.settings.outbox_dir / "alerts").glob("weekly_report.retraining_settled.*.json")
    body = json.loads(alert.read_text())
    assert body["error"] == "NotReady" and "SLEEVE_SLACK_TOKEN" in body["reason"]
    assert body["delivery"]["status"] == "pending"  # kept for when Slack is configured
    assert report_env.warehouse.count("reports") == 0 and report_env.warehouse.count("task_failures") == 1


def test_empty_week_to_outbox(report_env, dagbag):
    run_week(dagbag, WEEK)
    folder = report_env.settings.outbox_dir / "weekly_report" / "2026-01-12"
    md = (folder / "report.md").read_text()
    assert "No activity in the week 2026-01-12 → 2026-01-19" in md
    run_week(dagbag, WEEK)
    assert (folder / "report.md").read_text() == md  # a report is a function of its week
    (row,) = report_env.warehouse.query("SELECT * FROM reports")
    assert json.loads(row["summary"])["empty"] is True and row["transport"] == "outbox"


def test_week_with_data_posts_once_then_updates(report_env, dagbag, monkeypatch):
    seed_week(report_env.warehouse, report_env.store)
    with SlackServer() as slack:
        monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
        monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", "C0REPORTS")
        monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps(
            {"conn_type": "slack", "password": slack.token, "extra": {"base_url": slack.base_url}}))
        get_settings.cache_clear()
        run_week(dagbag, WEEK)
        run_week(dagbag, WEEK)  # re-run of the same week
        run_week(dagbag, WEEK - timedelta(weeks=1), week_start="2026-01-14")  # by hand, naming a day in the week
    # One post; each delivery then updates it (the first to add the uploaded images).
    assert len(slack.calls("chat.postMessage")) == 1 and len(slack.calls("chat.update")) == 3
    (message,) = slack.messages.values()
    assert "mean rating 3.80 (▲0.80 vs 3.00 the week before) · 4 covers · 6 reviews · 3 users" in message["text"]
    assert any("*Top covers" in b.get("text", {}).get("text", "") for b in message["blocks"])
    assert sorted(f["name"] for f in slack.files.values()) == ["ratings.png", "top_covers.png", "trend.png"]
    images = [b for b in message["blocks"] if b["type"] == "image"]
    assert len(images) == 3 and {b["slack_file"]["id"] for b in images} == set(slack.files)
    (row,) = report_env.warehouse.query("SELECT * FROM reports")
    assert row["message_ts"] in slack.messages and json.loads(row["summary"])["activity"]["images"] == 4


def test_backfill_of_three_weeks_gives_three_reports(report_env, dagbag):
    seed_week(report_env.warehouse, report_env.store)
    for weeks in (0, 1, 2):
        run_week(dagbag, WEEK + timedelta(weeks=weeks))
    weeks = [str(r["week_start"]) for r in report_env.warehouse.query("SELECT week_start FROM reports ORDER BY 1")]
    assert weeks == ["2026-01-12", "2026-01-19", "2026-01-26"]
    assert len(list((report_env.settings.outbox_dir / "weekly_report").iterdir())) == 3
