"""Delivery through the Slack sender hook with the REAL slack-sdk clients (built by the Slack
provider's hooks from ``slack`` / ``slackwebhook`` connections) against a Slack-compatible server
on loopback (also answering 500), and through the embedded outbox."""

from __future__ import annotations

import json

import pytest
from slack_sdk.errors import SlackApiError
from sleeve_airflow.notifier import NotifierError, SlackSenderHook, open_sender

from sleeve.delivery import Outbox, deliver_pending, deliver_report, send_alert
from sleeve.preflight import NotReady
from sleeve.settings import load_settings
from tests.plugins.slack_server import SlackServer
from tests.report_support import make_report_env


@pytest.fixture
def report_env(tmp_path, monkeypatch):
    return make_report_env(tmp_path, monkeypatch)


CHANNEL = "C0REPORTS"
ALERT = {"dag_id": "crawl_songs", "task_id": "fetch", "run_id": "scheduled__2026", "try_number": 3,
         "data_interval_end": "2026-01-12", "error": "HTTPError"}


def rendered(week_start: str = "2026-01-12", chart: bytes = b"\x89PNG chart", text: str = "3 requests") -> dict:
    return {
        "week_start": f"{week_start}T03:00:00+00:00", "week_end": "2026-01-19T03:00:00+00:00",
        "title": f"Sleeve weekly report {week_start}", "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                   {"type": "image", "image_url": "ratings.png", "alt_text": "ratings"}],
        "markdown": f"# report\n{text}\n", "images": {"ratings.png": chart, "top_covers.png": b"\x89PNG grid"},
    }


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(SlackSenderHook, "server_error_backoff_s", 0.01)


def deliver(report_env, sender, report=None, summary=None):
    return deliver_report(report_env.warehouse, Outbox(report_env.settings.outbox_dir), sender, report or rendered(),
                          summary or {})


@pytest.fixture
def slack():
    with SlackServer() as server:
        yield server


@pytest.fixture
def bot(report_env, slack, monkeypatch):
    """The sender configured like production: SLEEVE_NOTIFIER=slack + a `slack` connection sleeve_slack."""
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps(
        {"conn_type": "slack", "password": slack.token, "extra": {"base_url": slack.base_url}}))
    return open_sender(load_settings())


def test_outbox_gets_markdown_blocks_and_pngs(report_env):
    warehouse, sleeve_env = report_env.warehouse, report_env.settings
    outbox = open_sender(sleeve_env)
    assert outbox.transport == "outbox"
    row = deliver_report(warehouse, outbox, outbox, rendered(), {"n": 1})
    folder = sleeve_env.outbox_dir / "weekly_report" / "2026-01-12"
    assert sorted(p.name for p in folder.iterdir()) == ["ratings.png", "report.blocks.json", "report.md",
                                                        "top_covers.png"]
    assert json.loads((folder / "report.blocks.json").read_text())["text"] == "3 requests"
    assert row["outbox_uri"] == folder.as_uri() and row["status"] == "delivered"
    deliver_report(warehouse, outbox, outbox, rendered(text="4 requests"), {"n": 2})  # re-run: same files, updated
    assert (folder / "report.md").read_text() == "# report\n4 requests\n"
    stored = warehouse.query("SELECT * FROM reports")
    assert len(stored) == 1 and json.loads(stored[0]["summary"]) == {"n": 2}


def test_bot_posts_once_then_updates(report_env, slack, bot):
    warehouse = report_env.warehouse
    assert bot.client.auth_test()["ok"]
    deliver(report_env, bot)
    assert len(slack.calls("chat.postMessage")) == 1 and len(slack.files) == 2
    (ts, message), = slack.messages.items()
    assert message["channel"] == CHANNEL and message["blocks"][0]["type"] == "section"
    assert {f["thread_ts"] for f in slack.files.values()} == {ts}  # charts in the message's thread
    assert {f["data"] for f in slack.files.values()} == {b"\x89PNG chart", b"\x89PNG grid"}
    chart_id = next(i for i, f in slack.files.items() if f["name"] == "ratings.png")
    # ... and in the message itself: the image block points at the uploaded file.
    assert message["blocks"][1] == {"type": "image", "alt_text": "ratings", "slack_file": {"id": chart_id}}

    deliver(report_env, bot, rendered(text="3 requests, updated"))  # same week again
    assert len(slack.calls("chat.postMessage")) == 1 and len(slack.calls("chat.update")) == 2
    assert slack.messages[ts]["text"] == "3 requests, updated" and slack.messages[ts]["edits"] == 2
    assert len(slack.calls("files.getUploadURLExternal")) == 2  # unchanged images are not re-uploaded

    deliver(report_env, bot, rendered(chart=b"\x89PNG new chart"))
    assert len(slack.calls("files.delete")) == 1 and len(slack.files) == 2
    assert b"\x89PNG new chart" in {f["data"] for f in slack.files.values()}
    row, = warehouse.query("SELECT * FROM reports")
    assert row["message_ts"] == ts and row["channel"] == CHANNEL and row["transport"] == "bot"
    assert set(json.loads(row["files"])) == {"ratings.png", "top_covers.png"}


def test_each_week_gets_its_own_message(report_env, slack, bot):
    warehouse = report_env.warehouse
    for week in ("2026-01-05", "2026-01-12", "2026-01-19"):
        deliver(report_env, bot, rendered(week))
    assert len(slack.messages) == 3 and warehouse.count("reports") == 3


def test_429_is_retried_after_retry_after(report_env, slack, bot):
    slack.fail_next("chat.postMessage", 429, times=2, retry_after=0)
    slack.fail_next("files.getUploadURLExternal", 429, retry_after=0)
    deliver(report_env, bot)
    assert len(slack.calls("chat.postMessage")) == 3 and len(slack.messages) == 1
    assert len(slack.files) == 2


def test_5xx_is_retried_and_then_fails_loudly(report_env, slack, bot):
    warehouse = report_env.warehouse
    slack.fail_next("chat.postMessage", 503, times=2)
    deliver(report_env, bot)
    assert len(slack.messages) == 1

    slack.fail_next("chat.update", 500, times=10)  # beyond the retry budget
    with pytest.raises(SlackApiError):
        deliver(report_env, bot)
    assert len(slack.calls("chat.update")) == 1 + 4  # the first delivery's + first try + 3 retries
    assert len(slack.messages) == 1  # a failed update never turns into a second post
    assert warehouse.query("SELECT status FROM reports")[0]["status"] == "pending"


def test_ts_is_kept_when_an_upload_fails(report_env, slack, bot):
    warehouse = report_env.warehouse
    slack.fail_next("files.completeUploadExternal", 500, times=4)  # first try + 3 retries
    with pytest.raises(SlackApiError):
        deliver(report_env, bot)
    deliver(report_env, bot)  # the retry of the task
    assert len(slack.messages) == 1 and len(slack.calls("chat.update")) == 1
    assert warehouse.query("SELECT status FROM reports")[0]["status"] == "delivered"


def test_webhook_posts_text_and_blocks_once(report_env, slack, monkeypatch):
    warehouse = report_env.warehouse
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps({"conn_type": "slackwebhook",
                                                                "password": slack.webhook_url}))
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", "C-unused")
    hook = open_sender(load_settings())
    assert hook.transport == "webhook"
    slack.fail_next("webhook", 429, retry_after=0)
    deliver(report_env, hook)
    deliver(report_env, hook)  # a webhook cannot edit: no second post
    assert len(slack.webhook_posts) == 1 and len(slack.calls("webhook")) == 2
    assert slack.webhook_posts[0]["text"] == "3 requests"
    assert [b["type"] for b in slack.webhook_posts[0]["blocks"]] == ["section"]  # a webhook cannot upload images
    assert warehouse.query("SELECT status FROM reports")[0]["status"] == "delivered"


def test_bad_token_is_an_error(report_env, slack, bot):
    warehouse = report_env.warehouse
    slack.token = "xoxb-other"
    with pytest.raises(SlackApiError, match="invalid_auth"):
        deliver(report_env, bot)
    assert warehouse.query("SELECT status FROM reports")[0]["status"] == "pending"


def test_configuration_errors_name_the_fix(report_env, monkeypatch):
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("SLEEVE_SLACK_WEBHOOK", "")
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", "C1")
    with pytest.raises(NotReady, match="SLEEVE_SLACK_TOKEN"):
        _ = SlackSenderHook(settings=load_settings()).transport
    monkeypatch.delenv("SLEEVE_SLACK_CHANNEL")
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps({"conn_type": "slack", "password": "xoxb-1"}))
    monkeypatch.setenv("SLEEVE_SLACK_WEBHOOK", "http://127.0.0.1:9/hook")  # ignored: the connection is defined
    with pytest.raises(NotReady, match="channel"):
        _ = SlackSenderHook(settings=load_settings()).transport


def test_alert_through_slack_has_no_exception_message(report_env, slack, bot):
    send_alert(Outbox(report_env.settings.outbox_dir), bot, ALERT)
    (message,) = slack.messages.values()
    assert "crawl_songs.fetch" in message["text"] and "HTTPError" in message["text"]


def test_connections_as_the_slack_provider_saves_them(report_env, slack, monkeypatch):
    """A `slack` connection with the provider's older prefixed extra name, and a `slackwebhook`
    one with the webhook token as password and the endpoint as schema + host, work unchanged."""
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", CHANNEL)
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps({
        "conn_type": "slack", "password": slack.token,
        "extra": {"extra__slack__base_url": slack.base_url, "extra__slack__timeout": 5}}))
    deliver(report_env, open_sender(load_settings()))
    assert len(slack.messages) == 1 and len(slack.files) == 2

    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps({
        "conn_type": "slackwebhook", "schema": "http", "host": f"127.0.0.1:{slack.port}/services",
        "password": slack.webhook_path.removeprefix("/services/")}))
    webhook = open_sender(load_settings())
    assert webhook.transport == "webhook"
    send_alert(Outbox(report_env.settings.outbox_dir), webhook, ALERT)
    assert len(slack.webhook_posts) == 1 and "crawl_songs.fetch" in slack.webhook_posts[0]["text"]

    # Sleeve's earlier documented shape: a `slack` connection holding a webhook URL.
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps({"conn_type": "slack", "password": slack.webhook_url}))
    assert open_sender(load_settings()).transport == "webhook"


def test_environment_is_used_only_when_the_connection_is_not_defined(report_env, slack, monkeypatch):
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("SLEEVE_SLACK_WEBHOOK", slack.webhook_url)
    webhook = open_sender(load_settings())
    assert webhook.transport == "webhook"
    deliver(report_env, webhook)
    assert len(slack.webhook_posts) == 1

    monkeypatch.setenv("SLEEVE_SLACK_TOKEN", "xoxb-from-env")
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", CHANNEL)
    bot = SlackSenderHook(settings=load_settings())
    assert bot.transport == "bot" and bot.client.token == "xoxb-from-env"  # a token wins over a webhook

    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps({"conn_type": "slack", "password": ""}))
    with pytest.raises(NotReady, match="no password"):  # defined but empty: no silent fallback
        _ = SlackSenderHook(settings=load_settings()).transport


@pytest.mark.parametrize("transport", ["bot", "webhook"])
def test_slack_answering_500_loses_nothing(report_env, slack, monkeypatch, transport):
    """Slack down (500 on every call, beyond the retries): the report and the alert wait in the
    outbox, the report's row says pending; once Slack answers, the next delivery sends each once."""
    monkeypatch.setenv("SLEEVE_NOTIFIER", "slack")
    monkeypatch.setenv("SLEEVE_SLACK_CHANNEL", CHANNEL)
    conn = ({"conn_type": "slack", "password": slack.token, "extra": {"base_url": slack.base_url}}
            if transport == "bot" else {"conn_type": "slackwebhook", "password": slack.webhook_url})
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_SLACK", json.dumps(conn))
    sender, outbox = open_sender(load_settings()), Outbox(report_env.settings.outbox_dir)
    down = "chat.postMessage" if transport == "bot" else "webhook"
    slack.fail_next(down, 500, times=8)  # the report's try and the alert's try, each 1 + 3 retries

    with pytest.raises((SlackApiError, NotifierError)):
        deliver(report_env, sender)
    with pytest.raises((SlackApiError, NotifierError)):
        send_alert(outbox, sender, ALERT)
    row, = report_env.warehouse.query("SELECT * FROM reports")
    assert row["status"] == "pending" and row["outbox_uri"]
    folder = report_env.settings.outbox_dir / "weekly_report" / "2026-01-12"
    assert (folder / "report.md").read_text() == "# report\n3 requests\n"
    assert json.loads(outbox.alert_path(ALERT).read_text())["delivery"]["status"] == "pending"
    assert slack.messages == {} and slack.webhook_posts == []

    assert deliver_pending(report_env.warehouse, outbox, sender) == {"reports": 1, "alerts": 1}
    assert deliver_pending(report_env.warehouse, outbox, sender) == {"reports": 0, "alerts": 0}
    texts = [m["text"] for m in slack.messages.values()] + [p["text"] for p in slack.webhook_posts]
    assert sorted(texts, key=len) == ["3 requests", texts[1]] and "crawl_songs.fetch" in texts[1]
    assert report_env.warehouse.query("SELECT status FROM reports")[0]["status"] == "delivered"
