"""sleeve.delivery with an in-memory sender: the exactly-once and outbox-first policy needs no
Slack and no Airflow (tests/plugins/test_notifier.py runs the same policy against real slack-sdk
clients and a Slack-compatible server answering 500)."""

from __future__ import annotations

import json

import pytest

from sleeve.delivery import Outbox, deliver_pending, deliver_report, send_alert
from tests.report_support import make_report_env

ALERT = {"dag_id": "crawl_songs", "task_id": "crawl", "run_id": "scheduled__2026-01-12", "try_number": 1,
         "data_interval_end": "2026-01-19", "error": "HTTPError", "reason": None}


class FakeBot:
    transport, channel = "bot", "C1"

    def __init__(self):
        self.calls, self.fail_uploads, self.down = [], 0, False

    def _check(self):
        if self.down:
            raise ConnectionError("Slack is down")

    def post(self, text, blocks=None):
        self._check()
        self.calls.append(("post", text))
        return f"ts-{sum(c[0] == 'post' for c in self.calls)}"

    def update(self, ts, text, blocks=None):
        self._check()
        self.calls.append(("update", ts))

    def upload(self, *, thread_ts, filename, content, title):
        self._check()
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise ConnectionError("upload failed")
        self.calls.append(("upload", filename))
        return f"F-{filename}-{len(self.calls)}"

    def delete_file(self, file_id):
        self.calls.append(("delete", file_id))
        return True


def rendered(week: str = "2026-01-12", chart: bytes = b"chart") -> dict:
    return {"week_start": week, "week_end": "2026-01-19", "title": "t", "text": f"x {week}",
            "blocks": [{"type": "image", "image_url": "a.png", "alt_text": "a"}],
            "markdown": f"# {week}", "images": {"a.png": chart, "b.png": b"grid"}}


@pytest.fixture
def env(tmp_path, monkeypatch):
    env = make_report_env(tmp_path, monkeypatch)
    env.outbox = Outbox(env.settings.outbox_dir)
    return env


def test_ts_and_each_upload_are_kept_so_a_retry_repeats_nothing(env):
    warehouse, bot = env.warehouse, FakeBot()
    bot.fail_uploads = 1
    with pytest.raises(ConnectionError):
        deliver_report(warehouse, env.outbox, bot, rendered(), {})
    deliver_report(warehouse, env.outbox, bot, rendered(), {})  # the task's retry
    assert bot.calls == [("post", "x 2026-01-12"), ("upload", "a.png"), ("upload", "b.png"), ("update", "ts-1")]

    bot.calls.clear()
    deliver_report(warehouse, env.outbox, bot, rendered(chart=b"new chart"), {})  # only the changed image moves
    assert [c[0] for c in bot.calls] == ["delete", "upload", "update"] and bot.calls[1] == ("upload", "a.png")
    row, = warehouse.query("SELECT * FROM reports")
    assert row["message_ts"] == "ts-1" and set(json.loads(row["files"])) == {"a.png", "b.png"}
    assert row["status"] == "delivered"


def test_an_outage_keeps_the_report_pending_and_a_later_run_delivers_it_once(env):
    warehouse, bot = env.warehouse, FakeBot()
    bot.down = True
    with pytest.raises(ConnectionError):
        deliver_report(warehouse, env.outbox, bot, rendered("2026-01-12"), {"n": 1})
    row, = warehouse.query("SELECT * FROM reports")
    assert row["status"] == "pending" and row["delivered_at"] is None
    folder = env.settings.outbox_dir / "weekly_report" / "2026-01-12"
    assert sorted(p.name for p in folder.iterdir()) == ["a.png", "b.png", "report.blocks.json", "report.md"]

    bot.down = False
    deliver_report(warehouse, env.outbox, bot, rendered("2026-01-19"), {"n": 2})  # next week's run
    assert [c for c in bot.calls if c[0] == "post"] == [("post", "x 2026-01-12"), ("post", "x 2026-01-19")]
    assert {r["week_start"].isoformat(): r["status"] for r in warehouse.query("SELECT * FROM reports")} == {
        "2026-01-12": "delivered", "2026-01-19": "delivered"}
    assert deliver_pending(warehouse, env.outbox, bot) == {"reports": 0, "alerts": 0}  # nothing twice
    assert sum(c[0] == "post" for c in bot.calls) == 2


def test_a_pending_report_whose_week_is_rerun_is_updated_not_reposted(env):
    warehouse, bot = env.warehouse, FakeBot()
    bot.fail_uploads = 5  # posted, then the uploads fail: pending with a ts
    with pytest.raises(ConnectionError):
        deliver_report(warehouse, env.outbox, bot, rendered(), {})
    assert warehouse.query("SELECT status FROM reports")[0]["status"] == "pending"
    bot.fail_uploads = 0
    assert deliver_pending(warehouse, env.outbox, bot) == {"reports": 1, "alerts": 0}
    assert [c[0] for c in bot.calls] == ["post", "upload", "upload", "update"]


def test_alerts_wait_in_the_outbox_and_go_out_once(env):
    bot = FakeBot()
    bot.down = True
    first = send_alert(env.outbox, None, ALERT)  # Slack not configured right now: kept
    second = {**ALERT, "try_number": 2}
    with pytest.raises(ConnectionError):
        send_alert(env.outbox, bot, second)
    assert [json.loads(p.read_text())["delivery"]["status"] for p in (first, env.outbox.alert_path(second))] == [
        "pending", "pending"]

    bot.down = False
    assert deliver_pending(env.warehouse, env.outbox, bot) == {"reports": 0, "alerts": 2}
    assert deliver_pending(env.warehouse, env.outbox, bot) == {"reports": 0, "alerts": 0}
    posts = [c[1] for c in bot.calls if c[0] == "post"]
    assert len(posts) == 2 and all("crawl_songs.crawl" in p and "HTTPError" in p for p in posts)
    assert json.loads(first.read_text())["delivery"]["ts"] == "ts-1"
    send_alert(env.outbox, bot, ALERT)  # the same try's callback delivered again: not re-posted
    assert sum(c[0] == "post" for c in bot.calls) == 2


def test_an_alert_claimed_by_another_process_is_not_sent_twice(env):
    bot = FakeBot()
    path = env.outbox.write_alert(ALERT)
    lock = env.outbox.claim(path)  # another process is sending it right now
    assert lock is not None and env.outbox.claim(path) is None
    assert deliver_pending(env.warehouse, env.outbox, bot)["alerts"] == 0 and bot.calls == []
    lock.unlink()
    assert deliver_pending(env.warehouse, env.outbox, bot)["alerts"] == 1
