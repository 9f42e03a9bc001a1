"""`make serve` / `python -m service` refuses a bad setting at once, with one line naming it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import tiny_model_dir


def _serve(env_overrides: dict) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "SLEEVE_BASE_MODEL": str(tiny_model_dir()), **env_overrides}
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "service"], env=env, capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


@pytest.mark.parametrize("env, setting", [
    ({"SLEEVE_SERVICE_PORT": "eighty"}, "SLEEVE_SERVICE_PORT"),
    ({"SLEEVE_SERVICE_PORT": "70000"}, "SLEEVE_SERVICE_PORT"),
    ({"SLEEVE_SERVICE_SECRET": "short"}, "SLEEVE_SERVICE_SECRET"),
    ({"SLEEVE_SERVICE_DB_WAIT_S": "0"}, "SLEEVE_SERVICE_DB_WAIT_S"),
    ({"SLEEVE_AIRFLOW_API_URL": "airflow:8080"}, "SLEEVE_AIRFLOW_API_URL"),
    ({"SLEEVE_AIRFLOW_API_URL": "http://airflow:8080"}, "SLEEVE_AIRFLOW_API_USER"),
    ({"SLEEVE_WAREHOUSE": "bigquery", "SLEEVE_BQ_PROJECT": "p", "SLEEVE_BQ_DATASET": "d"}, "SLEEVE_SERVICE_SECRET"),
    ({"SLEEVE_BASE_MODEL": "/nonexistent/model"}, "SLEEVE_BASE_MODEL"),
    ({"SLEEVE_WAREHOUSE": "sqlite"}, "SLEEVE_WAREHOUSE"),
])
def test_a_bad_setting_fails_at_once_with_one_line_naming_it(env, setting):
    done, elapsed = _serve(env)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and setting in lines[0], done.stderr
    assert elapsed < 3  # measured ~0.3 s on an idle 2-core box; the bound allows a busy one


def test_a_port_in_use_is_named():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done, _ = _serve({"SLEEVE_SERVICE_PORT": str(taken.getsockname()[1])})
    assert done.returncode == 2 and "SLEEVE_SERVICE_PORT" in done.stderr and "in use" in done.stderr.lower()
