"""The sender for :mod:`sleeve.delivery`: the outbox, or Slack through connection ``sleeve_slack``.

``sleeve_slack`` uses the Slack provider's own connection types, so an existing connection works
unchanged and the Airflow UI shows its form:

- ``slack`` (Slack API): bot token as password; extra ``base_url``/``timeout``/``proxy`` as the
  provider reads them, plus ``channel`` (``SLEEVE_SLACK_CHANNEL`` wins) — a bot needs a channel id;
- ``slackwebhook`` (Incoming Webhook): the webhook URL as password, or its token with the host.

Only when the connection is not defined, ``SLEEVE_SLACK_TOKEN`` or ``SLEEVE_SLACK_WEBHOOK`` is
used (the rules: :func:`sleeve.preflight.slack_problem`, which the DAG runs' first task checks
too; a missing piece raises ``NotReady``). 429 answers are retried after their ``Retry-After``;
500/503 and connection resets are retried with back-off.
"""

from __future__ import annotations

import os
from functools import cached_property

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from sleeve.delivery import ImagesRejected, Outbox
from sleeve.preflight import NotReady, slack_problem
from sleeve.settings import Settings, get_settings


class NotifierError(RuntimeError):
    """Slack answered, but not with success (a webhook's non-200)."""


def open_sender(settings: Settings | None = None):
    """The configured sender: the outbox (``SLEEVE_NOTIFIER=outbox``, the default) or Slack."""
    settings = settings or get_settings()
    if settings.notifier == "outbox":
        return Outbox(settings.outbox_dir)
    return SlackSenderHook(settings=settings)


class SlackSenderHook(BaseHook):
    """Connection ``sleeve_slack`` → a cached slack-sdk client (bot or webhook) → the verbs
    :mod:`sleeve.delivery` calls. No policy here: what to post, update or skip is delivery's."""

    conn_name_attr = "slack_conn_id"
    default_conn_name = "sleeve_slack"
    conn_type = "slack"
    hook_name = "Sleeve Slack sender"
    server_error_backoff_s = 1.0  # 1, 2, 4 s between retries of a 500/503 (429s wait Retry-After)

    def __init__(self, slack_conn_id: str = default_conn_name, settings: Settings | None = None):
        super().__init__()
        self.slack_conn_id = slack_conn_id
        self.settings = settings or get_settings()

    @cached_property
    def connection(self):
        try:
            return self.get_connection(self.slack_conn_id)
        except AirflowNotFoundException:  # not defined: the environment may hold the secret instead
            return None

    @cached_property
    def client(self):
        """A slack_sdk ``WebClient`` (bot) or ``WebhookClient``, built by the provider's hooks
        from the connection, else from the environment. The secret is never logged."""
        from slack_sdk import WebClient
        from slack_sdk.webhook import WebhookClient

        conn, retry = self.connection, self._retry_handlers()
        if problem := slack_problem(self.settings, os.environ, conn):
            raise NotReady(problem)
        # A webhook URL as a `slack` connection's password is how Sleeve documented webhooks before.
        if conn is not None and (conn.conn_type == "slackwebhook" or "://" in (conn.password or "")):
            from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

            return SlackWebhookHook(slack_webhook_conn_id=self.slack_conn_id, retry_handlers=retry).client
        if conn is not None:
            from airflow.providers.slack.hooks.slack import SlackHook

            client = SlackHook(slack_conn_id=self.slack_conn_id, retry_handlers=retry).client
        elif token := os.environ.get("SLEEVE_SLACK_TOKEN", "").strip():
            client = WebClient(token=token, retry_handlers=retry)
        else:
            return WebhookClient(os.environ["SLEEVE_SLACK_WEBHOOK"].strip(), retry_handlers=retry)
        return client

    @property
    def transport(self) -> str:
        from slack_sdk.webhook import WebhookClient

        return "webhook" if isinstance(self.client, WebhookClient) else "bot"

    @cached_property
    def channel(self) -> str | None:
        extra = self.connection.extra_dejson if self.connection is not None else {}
        return self.settings.slack_channel or extra.get("channel")

    def get_conn(self):
        return self.client

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

    # -- bot verbs -------------------------------------------------------------------------

    def post(self, text: str, blocks: list | None = None) -> str:
        return self.client.chat_postMessage(channel=self.channel, text=text, blocks=blocks)["ts"]

    def update(self, ts: str, text: str, blocks: list | None = None) -> None:
        from slack_sdk.errors import SlackApiError

        try:
            self.client.chat_update(channel=self.channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            if exc.response.get("error") == "invalid_blocks" and any(b.get("type") == "image" for b in blocks or []):
                raise ImagesRejected(str(exc.response.get("errors") or "invalid_blocks")) from exc
            raise

    def upload(self, *, thread_ts: str, filename: str, content: bytes, title: str) -> str:
        upload = self.client.files_upload_v2(channel=self.channel, thread_ts=thread_ts, filename=filename,
                                             content=content, title=title)
        return upload["file"]["id"]

    def delete_file(self, file_id: str) -> bool:
        from slack_sdk.errors import SlackApiError

        try:
            self.client.files_delete(file=file_id)
        except SlackApiError as exc:
            if exc.response.get("error") != "file_not_found":
                raise
            return False
        return True

    # -- webhook verb ----------------------------------------------------------------------

    def send(self, text: str, blocks: list | None = None) -> None:
        response = self.client.send(text=text, blocks=blocks)
        if response.status_code != 200:
            raise NotifierError(f"Slack webhook answered {response.status_code}: {response.body[:200]}")
