"""Fixtures for the web service: the app in-process (no worker) and a real server on loopback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
import requests

from tests.conftest import free_port, tiny_model_dir

PASSWORD = "correct horse battery"


@pytest.fixture
def app_settings(tmp_path, monkeypatch):
    """Settings of a private SLEEVE_HOME whose warehouse waits at most 1 s for the file (the
    app migrates it at start, through its own warehouse, faster than a connection per statement)."""
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SLEEVE_BASE_MODEL", str(tiny_model_dir()))
    monkeypatch.setenv("SLEEVE_SERVICE_DB_WAIT_S", "1")
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    return settings


@pytest.fixture
def client(app_settings):
    """The app in-process with no worker (covers are added by ``add_images``)."""
    from fastapi.testclient import TestClient

    from service.app import create_app

    app = create_app(app_settings, worker=False)
    with TestClient(app, base_url="http://testserver") as c:
        c.app_state = app.state
        yield c


def sign_up(client, email: str = "ann@example.com", password: str = PASSWORD):
    response = client.post("/api/signup", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return response.json()


def create(client, **fields) -> str:
    body = {"title": "Night Letter", "artist": "Mina", "genre": "ballad", **fields}
    response = client.post("/api/covers", json=body)
    assert response.status_code == 202, response.text
    return response.json()["request_id"]


def add_images(state, request_id: str, n: int = 4) -> list[str]:
    """Stand-in for the worker in API tests: ``n`` small stored PNGs recorded as the request's images."""
    from PIL import Image

    from sleeve.ids import stable_id

    store, warehouse = state.store, state.warehouse
    ids, rows = [], []
    for i in range(n):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (40 * i, 80, 160)).save(buf, format="PNG")
        key = f"images/test/{request_id}-{i}.png"
        store.put_bytes(key, buf.getvalue())
        image_id = stable_id(request_id, i, "base")
        ids.append(image_id)
        rows.append({"image_id": image_id, "request_id": request_id, "image_index": i, "uri": store.uri(key),
                     "thumb_uri": store.uri(key), "model_version": "base", "created_at": datetime.now(UTC)})
    warehouse.upsert("images", rows)
    warehouse.upsert("generation_requests", [{"request_id": request_id, "status": "done"}])
    return ids


@pytest.fixture(scope="session")
def live_service(tmp_path_factory):
    """``python -m service`` on a free loopback port with its own SLEEVE_HOME and the embedded
    worker; yields ``{"url", "home", "env"}``."""
    home = tmp_path_factory.mktemp("service-home")
    port = free_port()
    env = {**os.environ, "SLEEVE_HOME": str(home), "SLEEVE_BASE_MODEL": str(tiny_model_dir()),
           "SLEEVE_SERVICE_PORT": str(port), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DIFFUSERS_VERBOSITY": "error",
           "TRANSFORMERS_VERBOSITY": "error"}
    log = open(home / "service.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start: {(home / 'service.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield {"url": url, "home": home, "env": env}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
