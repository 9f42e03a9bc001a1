"""The service's Airflow client against a real ``airflow api-server`` on loopback (Airflow 3
public API v2, SimpleAuthManager, JWT from /auth/token), and the service creating a
``batch_generate`` run for a new request when SLEEVE_AIRFLOW_API_URL is set."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import free_port
from tests.service.conftest import PASSWORD

USER = "sleeve-service"


@pytest.fixture(scope="module")
def api_server(airflow_db, tmp_path_factory):
    """``airflow api-server`` with the repository's DAGs serialised into the test session's DB."""
    work = tmp_path_factory.mktemp("airflow-api")
    password = secrets.token_urlsafe(16)
    (work / "passwords.json").write_text(json.dumps({USER: password}))
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:op",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
           "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(16), "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16)}
    subprocess.run([sys.executable, "-m", "airflow", "dags", "reserialize"], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    port = free_port()
    log = open(work / "api-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(f"{url}/api/v2/monitor/health", timeout=5).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((work / "api-server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield {"url": url, "password": password}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _runs(api_server, trigger) -> list[dict]:
    response = requests.get(f"{api_server['url']}/api/v2/dags/batch_generate/dagRuns",
                            headers={"Authorization": f"Bearer {trigger.token()}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["dag_runs"]


def test_the_client_creates_a_dag_run_through_the_rest_api(api_server):
    from service.generation import AirflowTrigger

    trigger = AirflowTrigger(api_server["url"], USER, api_server["password"])
    run = trigger.trigger("batch_generate", {"mode": "pending"})
    assert run["dag_id"] == "batch_generate" and run["state"] == "queued" and run["conf"] == {"mode": "pending"}
    assert run["logical_date"] is None  # its data interval is its run time: it sees the requests made before
    assert run["dag_run_id"] in {r["dag_run_id"] for r in _runs(api_server, trigger)}


def test_the_client_says_what_is_wrong(api_server):
    from service.generation import AirflowApiError, AirflowTrigger

    with pytest.raises(AirflowApiError, match="refused the credentials"):
        AirflowTrigger(api_server["url"], USER, "wrong").trigger("batch_generate")
    good = AirflowTrigger(api_server["url"], USER, api_server["password"])
    with pytest.raises(AirflowApiError, match="HTTP 404"):
        good.trigger("no_such_dag")
    with pytest.raises(AirflowApiError, match="unreachable"):
        AirflowTrigger(f"http://127.0.0.1:{free_port()}", USER, "x", timeout_s=2).trigger("batch_generate")
    # An expired (here: forged) token is renewed once.
    good.token()
    good._token = "not-a-token"
    assert good.trigger("batch_generate")["state"] == "queued"


def test_a_new_request_creates_a_batch_generate_run(api_server, sleeve_env, monkeypatch):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.generation import AirflowTrigger
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_AIRFLOW_API_URL", api_server["url"])
    monkeypatch.setenv("SLEEVE_AIRFLOW_API_USER", USER)
    monkeypatch.setenv("SLEEVE_AIRFLOW_API_PASSWORD", api_server["password"])
    get_settings.cache_clear()
    checker = AirflowTrigger(api_server["url"], USER, api_server["password"])
    before = {r["dag_run_id"] for r in _runs(api_server, checker)}
    with TestClient(create_app(get_settings())) as client:
        assert client.get("/healthz").json()["generation"] == "airflow"
        client.post("/api/signup", json={"email": "airflow-user@example.com", "password": PASSWORD})
        assert client.post("/api/covers", json={"title": "Queued", "artist": "Up"}).status_code == 202
        deadline = time.monotonic() + 30
        while not {r["dag_run_id"] for r in _runs(api_server, checker)} - before:
            assert time.monotonic() < deadline, client.get("/healthz").json()
            time.sleep(0.5)
    new = [r for r in _runs(api_server, checker) if r["dag_run_id"] not in before]
    assert len(new) == 1 and new[0]["conf"] == {"mode": "pending"} and "covers service" in (new[0]["note"] or "")
