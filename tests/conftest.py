"""Shared fixtures. The environment is set before anything imports Airflow: every test
session gets its own SLEEVE_HOME and AIRFLOW_HOME under a temporary directory, so tests never
touch a developer's .sleeve."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="sleeve-test-"))

os.environ.update(
    SLEEVE_HOME=str(_SESSION_HOME),
    AIRFLOW_HOME=str(_SESSION_HOME / "airflow"),
    AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    HF_HUB_OFFLINE="1",
    TOKENIZERS_PARALLELISM="false",
)
for name in [k for k in os.environ if k.startswith("SLEEVE_") and k != "SLEEVE_HOME"]:
    del os.environ[name]
# Tests that switch to Slack, BigQuery or GCS are outside the demo, where the PII key is required.
os.environ["SLEEVE_PII_KEY"] = "test-session-pii-key"


@pytest.fixture(autouse=True)
def _fresh_settings():
    from sleeve.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def sleeve_env(tmp_path, monkeypatch):
    """A private SLEEVE_HOME for one test, with migrated warehouse and store/outbox dirs.
    Returns the Settings."""
    from sleeve.settings import get_settings
    from sleeve.warehouse import open_warehouse

    monkeypatch.setenv("SLEEVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLEEVE_BASE_MODEL", str(tiny_model_dir()))
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    open_warehouse(settings).migrate()
    return settings


@pytest.fixture
def warehouse(sleeve_env):
    from sleeve.warehouse import open_warehouse

    return open_warehouse(sleeve_env)


@pytest.fixture
def store(sleeve_env):
    from sleeve.store import open_store

    return open_store(sleeve_env.store_url)


def tiny_model_dir() -> Path:
    """The tiny SDXL, built once per test session (about 5 s)."""
    from sleeve.tinymodel import ensure_tiny_sdxl

    target = _SESSION_HOME / "models" / "tiny-sdxl"
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        ensure_tiny_sdxl(target)
    return target


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    return tiny_model_dir()


@pytest.fixture(scope="session")
def airflow_db():
    """Airflow's metadata DB for dag.test(), migrated once per session."""
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@pytest.fixture(scope="session")
def gcs_emulator():
    """gcp-storage-emulator on loopback; yields the STORAGE_EMULATOR_HOST value."""
    port = free_port()
    data = Path(tempfile.mkdtemp(prefix="gcs-emu-"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
         "--in-memory", "--default-bucket", "sleeve-test"],
        cwd=data, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
