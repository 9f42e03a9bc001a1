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
    dag.test(logical_date=pendulum.instance(interval_start + timedelta(days=7)), run_conf=conf or None)


def test_dag_shape(dagbag):
    dag = dagbag.get_dag("weekly_report")
    assert [t.task_id for t in dag.topological_sort()] == ["retraining_settled", "gather", "deliver"]
    sensor = dag.get_task("retraining_settled")
    assert sensor.mode == "reschedule" and sensor.soft_fail
    assert dag.get_task("gather").trigger_rule == "none_failed"  # a timed-out wait still reports
    assert "week_start" in dag.params and dag.max_active_runs == 1


def test_empty_week_to_outbox(report_env, dagbag):
    run_week(dagbag, WEEK)
    folder = report_env.settings.outbox_dir / "weekly_report" / "2026-01-12"
    md = (folder / "report.md").read_text()
    assert "No activity in the week 2026-01-12 → 2026-01-19" in md
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
    assert len(slack.calls("chat.postMessage")) == 1 and len(slack.calls("chat.update")) == 2
    (message,) = slack.messages.values()
    assert "3 requests · 4 images · 6 reviews · 3 users" in message["text"]
    assert any("*Top-rated covers*" in b.get("text", {}).get("text", "") for b in message["blocks"])
    assert sorted(f["name"] for f in slack.files.values()) == ["ratings.png", "top_covers.png"]
    (row,) = report_env.warehouse.query("SELECT * FROM reports")
    assert row["message_ts"] in slack.messages and json.loads(row["summary"])["activity"]["images"] == 4


def test_backfill_of_three_weeks_gives_three_reports(report_env, dagbag):
    seed_week(report_env.warehouse, report_env.store)
    for weeks in (0, 1, 2):
        run_week(dagbag, WEEK + timedelta(weeks=weeks))
    weeks = [str(r["week_start"]) for r in report_env.warehouse.query("SELECT week_start FROM reports ORDER BY 1")]
    assert weeks == ["2026-01-12", "2026-01-19", "2026-01-26"]
    assert len(list((report_env.settings.outbox_dir / "weekly_report").iterdir())) == 3
