"""The failure callback: recorded in task_failures, alerted through the configured notifier,
never carrying the exception message."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import BaseNotifier
from sleeve_airflow.callbacks import failure_alert, notify_failure
from sleeve_airflow.dag_defaults import DEFAULT_ARGS

from tests.plugins.slack_server import SlackServer
from tests.report_support import make_report_env

SECRET = "alice@example.com token=xoxb-leak"


@pytest.fixture
def report_env(tmp_path, monkeypatch):
    return make_report_env(tmp_path, monkeypatch)


def context(try_number: int = 1) -> dict:
    """What the task runner hands an on_failure_callback (the fields Sleeve reads)."""
    ti = SimpleNamespace(dag_id="crawl_songs", task_id="fetch", run_id="scheduled__2026-01-12T03:00:00+00:00",
                         try_number=try_number)
    return {"ti": ti, "exception": ValueError(SECRET),
            "data_interval_start": pendulum.datetime(2026, 1, 12, 3), "data_interval_end": pendulum.datetime(2026, 1, 19, 3)}


def test_every_task_fails_into_the_notifier():
    assert isinstance(notify_failure, BaseNotifier) and DEFAULT_ARGS["on_failure_callback"] is notify_failure


def test_alert_has_no_exception_message():
    alert = failure_alert(context())
    assert alert["error"] == "ValueError" and SECRET not in json.dumps(alert)


def test_failure_is_recorded_once_per_try_and_written_to_the_outbox(report_env):
    notify_failure(context())
    notify_failure(context())  # a re-delivered callback
    notify_failure(context(try_number=2))
    rows = report_env.warehouse.query("SELECT * FROM task_failures ORDER BY try_number")
    assert [(r["dag_id"], r["task_id"], r["try_number"], r["error"]) for r in rows] == [
        ("crawl_songs", "fetch", 1, "ValueError"), ("crawl_songs", "fetch", 2, "ValueError")]
    assert rows[0]["interval_start"] == pendulum.datetime(2026, 1, 12, 3)
    alerts = sorted((report_env.settings.outbox_dir / "alerts").iterdir())
    assert len(alerts) == 2 and all(SECRET not in p.read_text() for p in alerts)
    assert json.loads(alerts[0].read_text())["task_id"] == "fetch"


def test_alert_goes_to_slack_when_configured(report_env, monkeypatch):
    with SlackServer() as slack:
        monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
        monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", "C0ALERTS")
        monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps(
            {"conn_type": "slack", "password": slack.token, "extra": {"base_url": slack.base_url}}))
        from sleeve.settings import get_settings

        get_settings.cache_clear()
        notify_failure(context())
    (message,) = slack.messages.values()
    assert message["channel"] == "C0ALERTS" and "crawl_songs.fetch" in message["text"]
    assert SECRET not in message["text"] and report_env.warehouse.count("task_failures") == 1


def test_callback_never_raises(report_env, monkeypatch):
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")  # no token, no webhook: the alert cannot be sent
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", "C1")
    from sleeve.settings import get_settings

    get_settings.cache_clear()
    notify_failure(context())
    assert report_env.warehouse.count("task_failures") == 1  # recording still happened


def _slack_env(monkeypatch, slack):
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", "C0ALERTS")
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps(
        {"conn_type": "slack", "password": slack.token, "extra": {"base_url": slack.base_url}}))
    from sleeve.settings import get_settings

    get_settings.cache_clear()


def test_an_alert_survives_slack_answering_500(report_env, monkeypatch):
    from sleeve_airflow.notifier import SlackSenderHook

    monkeypatch.setattr(SlackSenderHook, "server_error_backoff_s", 0.01)
    with SlackServer() as slack:
        _slack_env(monkeypatch, slack)
        slack.fail_next("chat.postMessage", 500, times=4)  # first try + 3 retries
        notify_failure(context())  # never raises
        (alert,) = (report_env.settings.outbox_dir / "alerts").glob("*.json")
        assert json.loads(alert.read_text())["delivery"]["status"] == "pending" and slack.messages == {}
        assert report_env.warehouse.count("task_failures") == 1

        notify_failure(context(try_number=2))  # the next alert takes the pending one along
        notify_failure(context(try_number=2))  # a re-delivered callback: nothing twice
    texts = sorted(m["text"] for m in slack.messages.values())
    assert len(texts) == 2 and "try 1" in texts[0] and "try 2" in texts[1]
    assert all(json.loads(p.read_text())["delivery"]["status"] == "delivered"
               for p in (report_env.settings.outbox_dir / "alerts").glob("*.json"))


def test_bad_settings_are_recorded_and_alerted_with_their_one_line(report_env, monkeypatch):
    """A crawl setting that cannot load must not silence the alert about it: the failure is
    recorded where the platform settings point and the alert carries the line that names the fix."""
    from sleeve.preflight import NotReady
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_CRAWL_SOURCE", "musicbrainz")  # without SLEEVE_CRAWL_CONTACT
    get_settings.cache_clear()
    ctx = {**context(), "exception": NotReady("SLEEVE_CRAWL_SOURCE=musicbrainz needs SLEEVE_CRAWL_CONTACT")}
    notify_failure(ctx)
    (row,) = report_env.warehouse.query("SELECT * FROM task_failures")
    assert row["error"] == "NotReady"
    (alert,) = (report_env.settings.outbox_dir / "alerts").glob("*.json")
    assert "SLEEVE_CRAWL_CONTACT" in json.loads(alert.read_text())["reason"]
