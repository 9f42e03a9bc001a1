"""One place for Sleeve's configuration.

Every setting has an embedded default that works offline with no credentials. Production
values come from environment variables; secrets (API keys, tokens, service-account keys) come
only from Airflow Connections (read by the hooks in ``plugins/``) or from the environment,
never from this module's defaults.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the setting and the fix."""


WAREHOUSES = ("duckdb", "bigquery")
NOTIFIERS = ("outbox", "slack")
LABELLERS = ("offline", "llm")
GPU_EXECUTORS = ("local", "celery", "kubernetes")


def _choice(env: dict, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not supported; set {name} to one of {', '.join(allowed)}")
    return value


def _text(env: dict, name: str, default: str) -> str:
    return env.get(name, "").strip() or default


def _share(env: dict, name: str, default: float) -> float:
    raw = env.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; set a share between 0 and 1, e.g. {default}") from None
    if not 0 <= value <= 1:
        raise SettingsError(f"{name}={value} must be between 0 and 1 (a share, e.g. {default} for {default:.0%})")
    return value


def _positive_int(env: dict, name: str, default: int) -> int:
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer; set {name} to a whole number like {default}") from None
    if value < 1:
        raise SettingsError(f"{name}={value} must be at least 1")
    return value


@dataclass(frozen=True)
class Settings:
    """The validated settings. A field's default is that setting's embedded default, written
    only here; ``load_settings`` reads the environment over it."""

    home: Path
    store_url: str = ""  # empty: the directory store_dir under home
    base_model: str = ""  # empty: the project's trained base model at base_model_dir under home
    warehouse: str = "duckdb"
    bq_project: str = ""
    bq_dataset: str = ""
    bq_location: str = "US"
    notifier: str = "outbox"
    slack_channel: str = ""
    labeller: str = "offline"
    llm_base_url: str = ""
    llm_model: str = ""
    gpu_executor: str = "local"
    gpu_slots: int = 1
    torch_threads: int = 1
    gpu_image: str = ""  # container image for GPU pods (SLEEVE_GPU_EXECUTOR=kubernetes)
    gpu_job_server: str = ""  # unix socket of a warm job server (python -m sleeve.jobserver); empty: fresh processes
    k8s_namespace: str = "default"
    gen_size: int = 64  # generated image side in px (tiny model); SDXL: SLEEVE_GEN_SIZE=1024
    gen_steps: int = 4  # sampling steps per image; SDXL: SLEEVE_GEN_STEPS=30
    canary_share: float = 0.2  # share of new requests a canary model serves (batch_generate)
    # crawl_songs: source, endpoints, politeness
    crawl_source: str = "sample"
    musicbrainz_url: str = "https://musicbrainz.org"
    coverart_url: str = "https://coverartarchive.org"
    melon_url: str = "https://www.melon.com"
    crawl_contact: str = ""  # contact in the User-Agent (MusicBrainz policy)
    crawl_rate: float = 1.0  # requests/s per host
    crawl_workers: int = 4  # requests in flight across hosts
    crawl_obey_robots: bool = True
    # Keys the email hash. The default is public and suits the offline demo only: anywhere
    # else (a non-default warehouse, store or notifier) SLEEVE_PII_KEY must hold a secret.
    pii_key: str = field(default="sleeve-local-demo-key", repr=False)
    scratch_dir: Path | None = None  # None: home/scratch; GPU jobs' private folders (sleeve.scratch)
    # The web service (service/): where it listens, what signs its cookies (empty: a random key
    # kept in $SLEEVE_HOME/service-secret), how long a request waits for the warehouse before
    # answering 503, and the Airflow REST API that renders covers in production (empty: the
    # service's in-process worker does).
    service_host: str = "127.0.0.1"
    service_port: int = 8000
    service_secret: str = field(default="", repr=False)
    service_db_wait_s: float = 5.0
    airflow_api_url: str = ""
    airflow_api_user: str = ""
    airflow_api_password: str = field(default="", repr=False)

    def __post_init__(self):
        if not self.store_url:
            object.__setattr__(self, "store_url", f"file://{self.store_dir}")
        if not self.base_model:
            object.__setattr__(self, "base_model", str(self.base_model_dir))
        if self.scratch_dir is None:
            object.__setattr__(self, "scratch_dir", self.home / "scratch")

    @property
    def is_demo(self) -> bool:
        """All on the embedded defaults: local warehouse, store and outbox."""
        return (self.warehouse, self.store_url, self.notifier) == \
            (Settings.warehouse, f"file://{self.store_dir}", Settings.notifier)

    # Embedded-default locations under SLEEVE_HOME.
    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def base_model_dir(self) -> Path:
        """Where ``sleeve.basemodel`` installs the committed, trained base model."""
        return self.home / "models" / "sleeve-base"

    @property
    def tiny_model_dir(self) -> Path:
        """The random tiny SDXL (shapes only, for unit tests): ``python -m sleeve.cli tiny-model``."""
        return self.home / "models" / "tiny-sdxl"

    def ensure_dirs(self) -> None:
        for path in (self.home, self.outbox_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.store_url.startswith("file://"):
            Path(self.store_url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)


CRAWL_SOURCES = ("sample", "musicbrainz", "melon")


def _crawl_settings(env: dict) -> dict:
    """SLEEVE_CRAWL_* / endpoint settings for crawl_songs, validated."""
    source = _choice(env, "SLEEVE_CRAWL_SOURCE", Settings.crawl_source, CRAWL_SOURCES)
    urls = {}
    for key in ("musicbrainz_url", "coverart_url", "melon_url"):
        name = f"SLEEVE_{key.upper()}"
        urls[key] = _text(env, name, getattr(Settings, key)).rstrip("/")
        if not urls[key].startswith(("http://", "https://")):
            raise SettingsError(f"{name}={urls[key]!r} must start with http:// or https://")
    contact = _text(env, "SLEEVE_CRAWL_CONTACT", Settings.crawl_contact)
    if source in ("musicbrainz", "melon") and not contact:
        raise SettingsError(f"SLEEVE_CRAWL_SOURCE={source} needs SLEEVE_CRAWL_CONTACT (an email or URL for the "
                            "User-Agent, required by the MusicBrainz API policy), e.g. ops@example.com")
    raw = env.get("SLEEVE_CRAWL_RATE", str(Settings.crawl_rate)).strip()
    try:
        rate = float(raw)
    except ValueError:
        raise SettingsError(f"SLEEVE_CRAWL_RATE={raw!r} is not a number; set requests/s per host, e.g. 1") from None
    cap = 1.0 if source == "musicbrainz" else 10.0
    if not 0 < rate <= cap:
        raise SettingsError(f"SLEEVE_CRAWL_RATE={rate} is out of range: MusicBrainz allows at most 1 request/s "
                            f"per host, other sources at most 10; set a value in (0, {cap:g}]")
    obey = env.get("SLEEVE_CRAWL_OBEY_ROBOTS", str(Settings.crawl_obey_robots)).strip().lower()
    if obey not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"SLEEVE_CRAWL_OBEY_ROBOTS={obey!r} must be true or false")
    return {"crawl_source": source, **urls, "crawl_contact": contact, "crawl_rate": rate,
            "crawl_workers": _positive_int(env, "SLEEVE_CRAWL_WORKERS", Settings.crawl_workers),
            "crawl_obey_robots": obey in ("true", "1", "yes")}


MIN_SECRET_CHARS = 32


def _service_settings(env: dict) -> dict:
    """SLEEVE_SERVICE_* and SLEEVE_AIRFLOW_API_* for the web service, validated."""
    port = _positive_int(env, "SLEEVE_SERVICE_PORT", Settings.service_port)
    if port > 65535:
        raise SettingsError(f"SLEEVE_SERVICE_PORT={port} is not a TCP port; use 1..65535, e.g. 8000")
    secret = env.get("SLEEVE_SERVICE_SECRET", "").strip()
    if secret and len(secret) < MIN_SECRET_CHARS:
        raise SettingsError(f"SLEEVE_SERVICE_SECRET is {len(secret)} characters; use at least {MIN_SECRET_CHARS} "
                            "(e.g. `openssl rand -hex 32`)")
    raw = env.get("SLEEVE_SERVICE_DB_WAIT_S", str(Settings.service_db_wait_s)).strip()
    try:
        wait = float(raw)
    except ValueError:
        raise SettingsError(f"SLEEVE_SERVICE_DB_WAIT_S={raw!r} is not a number; set seconds, e.g. 5") from None
    if not 0 < wait <= 60:
        raise SettingsError(f"SLEEVE_SERVICE_DB_WAIT_S={wait} is out of range; set seconds in (0, 60], e.g. 5")
    url = _text(env, "SLEEVE_AIRFLOW_API_URL", Settings.airflow_api_url).rstrip("/")
    user = _text(env, "SLEEVE_AIRFLOW_API_USER", Settings.airflow_api_user)
    password = env.get("SLEEVE_AIRFLOW_API_PASSWORD", "")
    if url and not url.startswith(("http://", "https://")):
        raise SettingsError(f"SLEEVE_AIRFLOW_API_URL={url!r} must start with http:// or https://")
    if url and not (user and password):
        raise SettingsError("SLEEVE_AIRFLOW_API_URL needs SLEEVE_AIRFLOW_API_USER and SLEEVE_AIRFLOW_API_PASSWORD "
                            "(an Airflow user allowed to trigger DAG runs); set both or unset the URL")
    return {"service_host": _text(env, "SLEEVE_SERVICE_HOST", Settings.service_host), "service_port": port,
            "service_secret": secret, "service_db_wait_s": wait, "airflow_api_url": url,
            "airflow_api_user": user, "airflow_api_password": password}


def _pii_key(env: dict, settings: Settings, gpu_job: bool) -> str:
    """The public demo key serves the demo only. GPU jobs never see an email, so they run
    without the secret (least privilege: GPU pods are not handed it)."""
    key = env.get("SLEEVE_PII_KEY", "").strip()
    if key and key != Settings.pii_key:
        return key
    if settings.is_demo or gpu_job:
        return Settings.pii_key
    raise SettingsError(
        "SLEEVE_PII_KEY is " + ("the public demo key" if key else "not set") + " but this is not the demo "
        f"(warehouse {settings.warehouse}, store {settings.store_url}, notifier {settings.notifier}): "
        "set SLEEVE_PII_KEY to a secret that keys the email hash, e.g. the output of `openssl rand -hex 32`")


def _absolute_dir(env: dict, name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        raise SettingsError(f"{name}={raw!r} must be an absolute path, e.g. {name}=/var/lib/sleeve/scratch")
    return path


def load_settings(env: dict | None = None, *, gpu_job: bool = False) -> Settings:
    """Read and validate settings from ``env`` (default: ``os.environ``). ``gpu_job``: the
    process is a GPU job (:func:`sleeve.jobs.run_job`), which needs no ``SLEEVE_PII_KEY``."""
    env = dict(os.environ if env is None else env)
    home = Path(env.get("SLEEVE_HOME", "./.sleeve")).expanduser().resolve()

    warehouse = _choice(env, "SLEEVE_WAREHOUSE", Settings.warehouse, WAREHOUSES)
    bq_project = _text(env, "SLEEVE_BQ_PROJECT", Settings.bq_project)
    bq_dataset = _text(env, "SLEEVE_BQ_DATASET", Settings.bq_dataset)
    if warehouse == "bigquery":
        for name, value in (("SLEEVE_BQ_PROJECT", bq_project), ("SLEEVE_BQ_DATASET", bq_dataset)):
            if not value:
                raise SettingsError(
                    f"SLEEVE_WAREHOUSE=bigquery needs {name}; set it (e.g. {name}=my-project) "
                    "or unset SLEEVE_WAREHOUSE to use the embedded DuckDB warehouse"
                )

    store_url = _text(env, "SLEEVE_STORE_URL", Settings.store_url)
    if store_url.startswith("gs://"):
        if not store_url.removeprefix("gs://").split("/", 1)[0]:
            raise SettingsError(f"SLEEVE_STORE_URL={store_url!r} names no bucket; use gs://BUCKET[/prefix]")
    elif store_url.startswith("file://"):
        if not store_url.removeprefix("file://").startswith("/"):
            raise SettingsError(f"SLEEVE_STORE_URL={store_url!r} must be an absolute path: file:///abs/path")
    elif store_url:
        raise SettingsError(
            f"SLEEVE_STORE_URL={store_url!r} is not supported; use file:///abs/path or gs://BUCKET[/prefix]"
        )

    # Slack credentials, the channel and the LLM endpoint may live in Airflow Connections
    # (sleeve_slack, sleeve_llm), which this plain module cannot read: the hooks check them and
    # name the missing piece when they are first used.
    notifier = _choice(env, "SLEEVE_NOTIFIER", Settings.notifier, NOTIFIERS)
    slack_channel = _text(env, "SLEEVE_SLACK_CHANNEL", Settings.slack_channel)
    labeller = _choice(env, "SLEEVE_LABELLER", Settings.labeller, LABELLERS)
    llm_base_url = _text(env, "SLEEVE_LLM_BASE_URL", Settings.llm_base_url)
    llm_model = _text(env, "SLEEVE_LLM_MODEL", Settings.llm_model)
    if llm_base_url and not llm_base_url.startswith(("http://", "https://")):
        raise SettingsError(f"SLEEVE_LLM_BASE_URL={llm_base_url!r} must start with http:// or https://")

    base_model = _text(env, "SLEEVE_BASE_MODEL", Settings.base_model)

    gpu_executor = _choice(env, "SLEEVE_GPU_EXECUTOR", Settings.gpu_executor, GPU_EXECUTORS)
    gpu_image = _text(env, "SLEEVE_GPU_IMAGE", Settings.gpu_image)
    if gpu_executor == "kubernetes" and not gpu_image:
        raise SettingsError(
            "SLEEVE_GPU_EXECUTOR=kubernetes needs SLEEVE_GPU_IMAGE (the GPU worker image, e.g. "
            "ghcr.io/acme/sleeve-gpu:1.0); set it or unset SLEEVE_GPU_EXECUTOR to run GPU jobs locally"
        )

    gpu_job_server = _text(env, "SLEEVE_GPU_JOB_SERVER", Settings.gpu_job_server)
    if gpu_job_server and (gpu_executor == "kubernetes" or not Path(gpu_job_server).is_absolute()):
        raise SettingsError(
            f"SLEEVE_GPU_JOB_SERVER={gpu_job_server!r} must be the absolute path of the job server's socket on "
            "this machine, and pods (SLEEVE_GPU_EXECUTOR=kubernetes) start fresh: unset one of them")

    settings = Settings(
        home=home,
        warehouse=warehouse,
        bq_project=bq_project,
        bq_dataset=bq_dataset,
        bq_location=_text(env, "SLEEVE_BQ_LOCATION", Settings.bq_location),
        store_url=store_url.rstrip("/"),
        notifier=notifier,
        slack_channel=slack_channel,
        labeller=labeller,
        llm_base_url=llm_base_url.rstrip("/"),
        llm_model=llm_model,
        base_model=base_model,
        gpu_executor=gpu_executor,
        gpu_slots=_positive_int(env, "SLEEVE_GPU_SLOTS", Settings.gpu_slots),
        torch_threads=_positive_int(env, "SLEEVE_TORCH_THREADS", Settings.torch_threads),
        gpu_image=gpu_image,
        gpu_job_server=gpu_job_server,
        k8s_namespace=_text(env, "SLEEVE_K8S_NAMESPACE", Settings.k8s_namespace),
        gen_size=_positive_int(env, "SLEEVE_GEN_SIZE", Settings.gen_size),
        gen_steps=_positive_int(env, "SLEEVE_GEN_STEPS", Settings.gen_steps),
        canary_share=_share(env, "SLEEVE_CANARY_SHARE", Settings.canary_share),
        scratch_dir=_absolute_dir(env, "SLEEVE_SCRATCH_DIR"),
        **_crawl_settings(env),
        **_service_settings(env),
    )
    return replace(settings, pii_key=_pii_key(env, settings, gpu_job))


_process = {"gpu_job": False}


def mark_gpu_job(on: bool = True) -> None:
    """This process is a GPU job from now on (or no longer): see :func:`load_settings`."""
    _process["gpu_job"] = on
    get_settings.cache_clear()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, validated once. Tests call ``get_settings.cache_clear()``."""
    return load_settings(gpu_job=_process["gpu_job"])
