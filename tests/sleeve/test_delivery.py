"""sleeve.delivery with an in-memory sender: the exactly-once policy needs no Slack and no
Airflow (tests/plugins/test_notifier.py runs the same policy against real slack-sdk clients)."""

from __future__ import annotations

import json

import pytest

from sleeve.delivery import deliver_report
from tests.report_support import make_report_env


class FakeBot:
    transport, channel = "bot", "C1"

    def __init__(self):
        self.calls, self.fail_uploads = [], 0

    def post(self, text, blocks=None):
        self.calls.append(("post", text))
        return "ts-1"

    def update(self, ts, text, blocks=None):
        self.calls.append(("update", ts))

    def upload(self, *, thread_ts, filename, content, title):
        if self.fail_uploads:
            self.fail_uploads -= 1
            raise ConnectionError("upload failed")
        self.calls.append(("upload", filename))
        return f"F-{filename}-{len(self.calls)}"

    def delete_file(self, file_id):
        self.calls.append(("delete", file_id))
        return True


def rendered(chart: bytes = b"chart") -> dict:
    return {"week_start": "2026-01-12", "week_end": "2026-01-19", "title": "t", "text": "x", "blocks": [],
            "markdown": "", "images": {"a.png": chart, "b.png": b"grid"}}


def test_ts_and_each_upload_are_kept_so_a_retry_repeats_nothing(tmp_path, monkeypatch):
    warehouse, bot = make_report_env(tmp_path, monkeypatch).warehouse, FakeBot()
    bot.fail_uploads = 1
    with pytest.raises(ConnectionError):
        deliver_report(warehouse, bot, rendered(), {})
    deliver_report(warehouse, bot, rendered(), {})  # the task's retry
    assert bot.calls == [("post", "x"), ("update", "ts-1"), ("upload", "a.png"), ("upload", "b.png")]

    bot.calls.clear()
    deliver_report(warehouse, bot, rendered(chart=b"new chart"), {})  # only the changed image moves
    assert [c[0] for c in bot.calls] == ["update", "delete", "upload"] and bot.calls[2] == ("upload", "a.png")
    row, = warehouse.query("SELECT * FROM reports")
    assert row["message_ts"] == "ts-1" and set(json.loads(row["files"])) == {"a.png", "b.png"}
