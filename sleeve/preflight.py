"""Is Sleeve ready to do its work? Checked before any work starts, answered in one line.

    check_ready(settings=None, needs=("warehouse", "store"), *, env=None, connection=None) -> Settings

Loads the settings (unless given) and checks what the caller is about to need:

=============  ===========================================================================
``warehouse``  DuckDB: the warehouse file exists (``make setup`` makes it); BigQuery: Google
               credentials (connection ``sleeve_gcp`` or Application Default Credentials)
``store``      a local store: its folder is writable; GCS: Google credentials, as above
``notifier``   the outbox folder is writable; Slack: a bot token with a channel, or a webhook
``labeller``   ``SLEEVE_LABELLER=llm``: an endpoint and a model (connection or environment)
``gpu``        ``SLEEVE_GPU_EXECUTOR=kubernetes``: the cncf.kubernetes provider is installed
``base_model`` a local base model is a diffusers folder; a hub id is in the cache when offline
=============  ===========================================================================

The first problem raises :class:`NotReady` (a ``SettingsError``): one line that names the
setting and the fix, never a secret's value. Command lines print it and exit 2; Airflow tasks
fail without retrying (``sleeve_airflow.dag_defaults``). ``connection(conn_id)`` looks up an
Airflow Connection (``None`` when it is not defined); without it only the environment counts,
which is what plain command lines and the web service have.

Checks never write, never call a remote service and take well under a second (the Google
credential lookup, only with BigQuery or GCS configured, may take a few).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from sleeve.settings import Settings, SettingsError, load_settings

NEEDS = ("warehouse", "store", "notifier", "labeller", "gpu", "base_model")
SLACK_CONN, GCP_CONN, LLM_CONN = "sleeve_slack", "sleeve_gcp", "sleeve_llm"
Lookup = Callable[[str], Any]


class NotReady(SettingsError):
    """What the caller needs is not configured; the message names the setting and the fix."""


# The settings that say where a failure is recorded and alerted, in the order they are given up
# when the settings do not load: a bad crawl or GPU setting must not silence the alert about it.
_REPORTING = (
    ("SLEEVE_HOME", "SLEEVE_WAREHOUSE", "SLEEVE_BQ_PROJECT", "SLEEVE_BQ_DATASET", "SLEEVE_BQ_LOCATION",
     "SLEEVE_STORE_URL", "SLEEVE_NOTIFIER", "SLEEVE_SLACK_CHANNEL", "SLEEVE_PII_KEY"),
    ("SLEEVE_HOME", "SLEEVE_NOTIFIER", "SLEEVE_SLACK_CHANNEL"),
    ("SLEEVE_HOME",),
)


def reporting_settings(env: Mapping[str, str] | None = None) -> tuple[Settings, str | None]:
    """The settings to record and alert a failure with, even when some settings are bad: all of
    them when they load, else only those naming the warehouse, store and notifier (the others at
    their defaults), else the notifier alone, else the embedded defaults under ``SLEEVE_HOME`` (the
    outbox). Returns ``(settings, the settings error or None)``."""
    env = dict(os.environ if env is None else env)
    try:
        return load_settings(env), None
    except SettingsError as exc:
        problem = str(exc)
    for names in _REPORTING:
        try:  # recording and alerting a failure hashes no email, so like a GPU job it needs no PII key
            return load_settings({k: v for k, v in env.items() if k in names}, gpu_job=True), problem
        except SettingsError:
            continue
    return Settings(home=Path(env.get("SLEEVE_HOME") or "./.sleeve").expanduser().resolve()), problem


def check_ready(settings: Settings | None = None, needs: Iterable[str] = ("warehouse", "store"), *,
                env: Mapping[str, str] | None = None, connection: Lookup | None = None) -> Settings:
    """Raise :class:`NotReady` (or ``SettingsError`` from loading) unless everything in ``needs``
    is configured; returns the settings."""
    env = os.environ if env is None else env
    settings = settings or load_settings(dict(env))
    lookup = connection or (lambda _conn_id: None)
    for need in needs:
        if need not in CHECKS:
            raise ValueError(f"unknown need {need!r}; known: {', '.join(NEEDS)}")
        problem = CHECKS[need](settings, env, lookup)
        if problem:
            raise NotReady(problem)
    return settings


def _writable(path: Path) -> bool:
    """The folder is writable, or can be made: its nearest existing parent is writable."""
    for folder in (path, *path.parents):
        if folder.exists():
            return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
    return False


def _google(what: str, env: Mapping[str, str], lookup: Lookup) -> str | None:
    if lookup(GCP_CONN) is not None:
        return None  # the hooks read it the way the Google provider does
    if path := env.get("GOOGLE_APPLICATION_CREDENTIALS"):
        return None if Path(path).is_file() else (
            f"GOOGLE_APPLICATION_CREDENTIALS={path} does not exist; point it at a service-account key file")
    try:
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        google.auth.default()
    except DefaultCredentialsError:
        return (f"{what} needs Google credentials: define Airflow connection {GCP_CONN!r} (google_cloud_platform, "
                "key JSON in extra keyfile_dict), or set GOOGLE_APPLICATION_CREDENTIALS to a key file")
    return None


def _warehouse(settings: Settings, env, lookup) -> str | None:
    if settings.warehouse == "bigquery":
        if env.get("BIGQUERY_EMULATOR_HOST"):
            return None  # an emulator needs no credentials (the client talks to it anonymously)
        return _google("SLEEVE_WAREHOUSE=bigquery", env, lookup)
    if not settings.warehouse_path.is_file():
        return (f"the DuckDB warehouse {settings.warehouse_path} does not exist (SLEEVE_HOME={settings.home}): "
                "run `make setup` (or `python -m sleeve.cli init`), or set SLEEVE_HOME to the prepared folder")
    return None


def _store(settings: Settings, env, lookup) -> str | None:
    if settings.store_url.startswith("gs://"):
        if env.get("STORAGE_EMULATOR_HOST"):
            return None  # an emulator needs no credentials
        return _google(f"SLEEVE_STORE_URL={settings.store_url}", env, lookup)
    folder = Path(settings.store_url.removeprefix("file://"))
    if not _writable(folder):
        return f"the object store folder {folder} is not writable (SLEEVE_STORE_URL): fix its permissions or set another"
    return None


def slack_problem(settings: Settings, env: Mapping[str, str], conn) -> str | None:
    """Why Slack cannot be used (``conn``: connection ``sleeve_slack`` or None), or None. The
    same rules the Slack sender follows: the connection wins; else a token (which needs a
    channel) or a webhook URL from the environment."""
    channel_fix = ("set SLEEVE_SLACK_CHANNEL (a channel id like C0123456789)"
                   + (f" or extra.channel on connection {SLACK_CONN!r}" if conn is not None else ""))
    if conn is not None:
        password = conn.password or ""
        if conn.conn_type == "slackwebhook" or "://" in password:
            return None if password or conn.host else (
                f"connection {SLACK_CONN!r} (slackwebhook) has no webhook: put the webhook URL in its password")
        if not password:
            return f"connection {SLACK_CONN!r} has no password: put the Slack bot token (xoxb-...) there"
        channel = settings.slack_channel or (conn.extra_dejson or {}).get("channel")
        return None if channel else f"a Slack bot token needs a channel: {channel_fix}"
    if env.get("SLEEVE_SLACK_TOKEN", "").strip():
        return None if settings.slack_channel else f"SLEEVE_SLACK_TOKEN needs a channel: {channel_fix}"
    if webhook := env.get("SLEEVE_SLACK_WEBHOOK", "").strip():
        return None if webhook.startswith(("https://", "http://")) else (
            "SLEEVE_SLACK_WEBHOOK is not a URL: set it to the Incoming Webhook URL (https://hooks.slack.com/...)")
    return (f"SLEEVE_NOTIFIER=slack needs Slack credentials: define Airflow connection {SLACK_CONN!r} (bot token "
            "or webhook URL as password), or set SLEEVE_SLACK_TOKEN (+ SLEEVE_SLACK_CHANNEL) or SLEEVE_SLACK_WEBHOOK; "
            "or unset SLEEVE_NOTIFIER to write reports to the outbox")


def _notifier(settings: Settings, env, lookup) -> str | None:
    if not _writable(settings.outbox_dir):
        return f"the outbox folder {settings.outbox_dir} is not writable (SLEEVE_HOME): fix its permissions"
    return slack_problem(settings, env, lookup(SLACK_CONN)) if settings.notifier == "slack" else None


def _labeller(settings: Settings, env, lookup) -> str | None:
    if settings.labeller != "llm":
        return None
    conn = lookup(LLM_CONN)
    if conn is not None and conn.host:
        if (conn.extra_dejson or {}).get("model") or settings.llm_model:
            return None
        return f"connection {LLM_CONN!r} names no model: set its extra {{\"model\": ...}} or SLEEVE_LLM_MODEL"
    if settings.llm_base_url and settings.llm_model:
        return None
    return (f"SLEEVE_LABELLER=llm needs an endpoint: define Airflow connection {LLM_CONN!r} (host = base URL, "
            "password = API key, extra {\"model\": ...}) or set SLEEVE_LLM_BASE_URL and SLEEVE_LLM_MODEL; "
            "or unset SLEEVE_LABELLER to use the offline labeller")


def _gpu(settings: Settings, env, lookup) -> str | None:
    if settings.gpu_executor != "kubernetes":
        return None
    from importlib.util import find_spec

    try:
        found = find_spec("airflow.providers.cncf.kubernetes") is not None
    except ModuleNotFoundError:
        found = False
    return None if found else ("SLEEVE_GPU_EXECUTOR=kubernetes needs apache-airflow-providers-cncf-kubernetes in "
                               "the Airflow image; install it, or set SLEEVE_GPU_EXECUTOR=local or celery")


def _base_model(settings: Settings, env, lookup) -> str | None:
    model = settings.base_model
    path = Path(model).expanduser()
    if path.is_absolute() or model.startswith(".") or path.exists():
        if (path / "model_index.json").is_file():
            return None
        fix = ("run `make setup` (or `python -m sleeve.cli tiny-model`) to build the tiny model"
               if path == settings.tiny_model_dir else "point SLEEVE_BASE_MODEL at a diffusers model folder or hub id")
        return f"SLEEVE_BASE_MODEL={model} is not a diffusers model folder (no model_index.json): {fix}"
    if env.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "model_index.json"), str):
            return (f"SLEEVE_BASE_MODEL={model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
                    "download it once (unset HF_HUB_OFFLINE) or point SLEEVE_BASE_MODEL at a local folder")
    return None


CHECKS: dict[str, Callable[[Settings, Mapping[str, str], Lookup], str | None]] = {
    "warehouse": _warehouse, "store": _store, "notifier": _notifier, "labeller": _labeller, "gpu": _gpu,
    "base_model": _base_model,
}
