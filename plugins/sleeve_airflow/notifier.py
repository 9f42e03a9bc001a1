"""NotifierHook: one interface for the weekly report and failure alerts, three transports.

- ``outbox`` (embedded default): files under ``$SLEEVE_HOME/outbox`` — readable without Slack.
- ``bot``: a Slack bot token (slack-sdk WebClient): Block Kit message via ``chat.postMessage``,
  PNGs via ``files_upload_v2`` in the message's thread; needs a channel id.
- ``webhook``: a Slack Incoming Webhook (text and blocks only; it cannot edit or upload).

With ``SLEEVE_NOTIFIER=slack`` the credentials come from the Airflow Connection ``sleeve_slack``
(password = bot token, or a webhook URL in password/host/``extra.webhook_url``; optional
``extra.channel`` and ``extra.base_url``), else from ``SLEEVE_SLACK_TOKEN`` /
``SLEEVE_SLACK_WEBHOOK``. 429 answers are retried after their ``Retry-After``; 500/503 and
connection resets are retried with back-off.

Exactly once per week: the ``reports`` row (key ``week_start``) keeps the message ``ts`` as soon
as the message is posted; re-running the week calls ``chat.update`` on it, and re-uploads only
images whose content changed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, date, datetime
from functools import cached_property
from pathlib import Path

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from sleeve.ids import sha256_bytes
from sleeve.settings import Settings, get_settings

log = logging.getLogger(__name__)


class NotifierError(RuntimeError):
    pass


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class NotifierHook(BaseHook):
    conn_name_attr = "slack_conn_id"
    default_conn_name = "sleeve_slack"
    conn_type = "slack"
    hook_name = "Sleeve notifier"
    server_error_backoff_s = 1.0  # 1, 2, 4 s between retries of a 500/503 (429s wait Retry-After)

    def __init__(self, slack_conn_id: str = default_conn_name, settings: Settings | None = None):
        super().__init__()
        self.slack_conn_id = slack_conn_id
        self.settings = settings or get_settings()

    @cached_property
    def config(self) -> dict:
        """transport, channel, base_url and the secret (token or webhook URL) — never logged."""
        if self.settings.notifier == "outbox":
            return {"transport": "outbox"}
        token = webhook = base_url = channel = None
        try:
            conn = BaseHook.get_connection(self.slack_conn_id)
        except AirflowNotFoundException:  # not defined: the environment may hold the secret instead
            conn = None
        if conn is not None:
            extra = conn.extra_dejson
            secret = conn.password or ""
            webhook = extra.get("webhook_url") or (secret if secret.startswith("http") else None) or (
                conn.host if (conn.host or "").startswith("http") else None)
            token = None if webhook else secret or None
            base_url, channel = extra.get("base_url"), extra.get("channel")
        token = token or os.environ.get("SLEEVE_SLACK_TOKEN", "").strip() or None
        webhook = webhook or os.environ.get("SLEEVE_SLACK_WEBHOOK", "").strip() or None
        channel = self.settings.slack_channel or channel
        if token:
            if not channel:
                raise NotifierError("a Slack bot token needs a channel id: set SLEEVE_SLACK_CHANNEL (e.g. C0123456789) "
                                    f"or extra.channel on connection {self.slack_conn_id!r}")
            return {"transport": "bot", "token": token, "channel": channel, "base_url": base_url}
        if webhook:
            return {"transport": "webhook", "url": webhook}
        raise NotifierError(f"SLEEVE_NOTIFIER=slack but connection {self.slack_conn_id!r} has no bot token or webhook "
                            "URL and neither SLEEVE_SLACK_TOKEN nor SLEEVE_SLACK_WEBHOOK is set; set one, or unset "
                            "SLEEVE_NOTIFIER to write to the outbox")

    @property
    def transport(self) -> str:
        return self.config["transport"]

    def _retry_handlers(self):
        from slack_sdk.http_retry.builtin_handlers import (
            ConnectionErrorRetryHandler,
            RateLimitErrorRetryHandler,
            ServerErrorRetryHandler,
        )
        from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator

        backoff = BackoffRetryIntervalCalculator(backoff_factor=self.server_error_backoff_s)
        return [ConnectionErrorRetryHandler(max_retry_count=2, interval_calculator=backoff),
                RateLimitErrorRetryHandler(max_retry_count=3),
                ServerErrorRetryHandler(max_retry_count=3, interval_calculator=backoff)]

    @cached_property
    def client(self):
        """The cached slack-sdk client for the configured transport."""
        config = self.config
        if config["transport"] == "bot":
            from slack_sdk import WebClient

            kwargs = {"base_url": config["base_url"]} if config["base_url"] else {}
            return WebClient(token=config["token"], retry_handlers=self._retry_handlers(), timeout=30, **kwargs)
        if config["transport"] == "webhook":
            from slack_sdk.webhook import WebhookClient

            return WebhookClient(config["url"], retry_handlers=self._retry_handlers(), timeout=30)
        raise NotifierError("the outbox transport has no Slack client")

    def get_conn(self):
        return self.client

    # -- weekly report ---------------------------------------------------------------------

    def send_report(self, warehouse, rendered: dict, summary: dict) -> dict:
        """Deliver a rendered report (``sleeve.report_render.render``) exactly once per week and
        record it in ``reports``. Returns the reports row."""
        week_start = date.fromisoformat(rendered["week_start"][:10])
        found = warehouse.query("SELECT * FROM reports WHERE week_start = @w", {"w": week_start})
        previous = found[0] if found else {}
        row = {
            "week_start": week_start, "week_end": date.fromisoformat(rendered["week_end"][:10]),
            "summary": json.dumps(summary, sort_keys=True, default=str), "transport": self.transport,
            "posted_at": previous.get("posted_at") or utcnow(),  # first delivery; kept on re-runs
        }
        if self.transport == "outbox":
            row["outbox_uri"] = self._write_outbox(rendered).as_uri()
        elif self.transport == "webhook":
            self._send_webhook(rendered, previous)
        else:
            self._send_bot(warehouse, rendered, previous, row)
        warehouse.upsert("reports", [row])
        return row

    def _write_outbox(self, rendered: dict) -> Path:
        folder = self.settings.outbox_dir / "weekly_report" / rendered["week_start"][:10]
        _write_atomic(folder / "report.md", rendered["markdown"].encode())
        blocks = {"text": rendered["text"], "blocks": rendered["blocks"]}
        _write_atomic(folder / "report.blocks.json", json.dumps(blocks, indent=2, ensure_ascii=False).encode())
        for stale in folder.glob("*.png"):
            if stale.name not in rendered["images"]:
                stale.unlink()
        for name, data in rendered["images"].items():
            _write_atomic(folder / name, data)
        log.info("weekly report written to %s", folder)
        return folder

    def _send_webhook(self, rendered: dict, previous: dict) -> None:
        if previous.get("transport") == "webhook":
            # An Incoming Webhook cannot edit a message: posting again would duplicate it.
            log.info("report for %s already posted by webhook; not posting again", rendered["week_start"][:10])
            return
        response = self.client.send(text=rendered["text"], blocks=rendered["blocks"])
        if response.status_code != 200:
            raise NotifierError(f"Slack webhook answered {response.status_code}: {response.body[:200]}")

    def _send_bot(self, warehouse, rendered: dict, previous: dict, row: dict) -> None:
        channel = self.config["channel"]
        row["channel"] = channel
        ts = previous.get("message_ts") if previous.get("channel") == channel else None
        if ts:
            self.client.chat_update(channel=channel, ts=ts, text=rendered["text"], blocks=rendered["blocks"])
            log.info("updated the weekly report message for %s", rendered["week_start"][:10])
        else:
            ts = self.client.chat_postMessage(channel=channel, text=rendered["text"], blocks=rendered["blocks"])["ts"]
            # Keep the ts before uploading anything: a retry after a later failure must update, not re-post.
            warehouse.upsert("reports", [{**row, "message_ts": ts, "files": None}])
            log.info("posted the weekly report for %s", rendered["week_start"][:10])
        row["message_ts"] = ts
        files = json.loads(previous.get("files") or "{}") if previous.get("message_ts") == ts else {}
        for name, data in rendered["images"].items():
            digest = sha256_bytes(data)
            if files.get(name, {}).get("sha256") == digest:
                continue
            if name in files:
                self._delete_file(files[name]["id"])
            upload = self.client.files_upload_v2(channel=channel, thread_ts=ts, filename=name, content=data,
                                                 title=f"{rendered['title']}: {name.removesuffix('.png')}")
            files[name] = {"id": upload["file"]["id"], "sha256": digest}
            row["files"] = json.dumps(files, sort_keys=True)
            warehouse.upsert("reports", [row])
        row["files"] = json.dumps(files, sort_keys=True)

    def _delete_file(self, file_id: str) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            self.client.files_delete(file=file_id)
        except SlackApiError as exc:  # already gone: nothing to replace
            if exc.response.get("error") != "file_not_found":
                raise

    # -- alerts ----------------------------------------------------------------------------

    def send_alert(self, alert: dict) -> None:
        """A failure alert: a JSON file in the outbox, or a short Slack message."""
        if self.transport == "outbox":
            name = f"{alert['dag_id']}.{alert['task_id']}.{alert['run_id']}.{alert['try_number']}.json"
            safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
            _write_atomic(self.settings.outbox_dir / "alerts" / safe, json.dumps(alert, indent=2).encode())
            return
        text = (f":red_circle: Sleeve task failed: {alert['dag_id']}.{alert['task_id']} "
                f"(run {alert['run_id']}, try {alert['try_number']}, interval end {alert['data_interval_end']}): "
                f"{alert['error'] or 'error'}")
        if self.transport == "webhook":
            response = self.client.send(text=text)
            if response.status_code != 200:
                raise NotifierError(f"Slack webhook answered {response.status_code}")
        else:
            self.client.chat_postMessage(channel=self.config["channel"], text=text)


def utcnow() -> datetime:
    """The time a failure is recorded (an event time, never a key or a window)."""
    return datetime.now(UTC)
