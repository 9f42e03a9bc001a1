"""The embedded DuckDB file shared by the running service and another process writing to it
(a DAG task's ``DuckDBWarehouse``): both make progress, nothing is lost, and a file held too
long gives a 503 with Retry-After instead of a hung request."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import requests

from tests.service.conftest import PASSWORD

# A DAG-task-like process: the core backend, one connection per call, many small writes.
WRITER = """
import sys, time
from datetime import datetime, UTC
from sleeve.warehouse.duckdb_backend import DuckDBWarehouse
w = DuckDBWarehouse(sys.argv[1], lock_timeout_s=60)
started = time.monotonic()
for i in range(int(sys.argv[2])):
    w.upsert("stage_runs", [{"dag_id": "sharing_test", "stage": "write", "run_id": str(i), "status": "success",
                             "interval_start": datetime(2026, 1, 1, tzinfo=UTC).replace(minute=i % 60, hour=i // 60)}])
print(f"writer done in {time.monotonic() - started:.1f} s", flush=True)
"""

HOLDER = """
import sys, time
from sleeve.warehouse.duckdb_backend import DuckDBWarehouse
con = DuckDBWarehouse(sys.argv[1], lock_timeout_s=30)._connect()
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def _session(url: str, email: str) -> requests.Session:
    s = requests.Session()
    response = s.post(f"{url}/api/signup", json={"email": email, "password": PASSWORD}, timeout=30)
    assert response.status_code == 201, response.text
    return s


def _covers(s: requests.Session, url: str, n: int) -> list[str]:
    request_id = s.post(f"{url}/api/covers", json={"title": "Shared File", "artist": "Two Writers",
                                                   "num_images": n}, timeout=30).json()["request_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body = s.get(f"{url}/api/requests/{request_id}", timeout=30).json()
        if body["status"] in ("done", "failed"):
            assert body["status"] == "done", body
            return [i["image_id"] for i in body["images"]]
        time.sleep(0.5)
    raise AssertionError("covers were not rendered")


def _post_retrying(s: requests.Session, url: str, body: dict, statuses: list) -> requests.Response:
    while True:
        response = s.post(url, json=body, timeout=30)
        statuses.append(response.status_code)
        if response.status_code != 503:
            return response
        assert int(response.headers["Retry-After"]) > 0  # a 503 always says when to come back
        time.sleep(0.2)


def test_service_reviews_and_another_process_write_at_once(live_service):
    url, path = live_service["url"], live_service["home"] / "warehouse.duckdb"
    users = [_session(url, f"sharer{i}@example.com") for i in range(2)]
    images = [_covers(s, url, 4) for s in users]
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path), "40"], stdout=subprocess.PIPE, text=True,
                              env=live_service["env"])
    statuses: list[int] = []
    expected: dict[tuple[int, str], int] = {}

    def review(u: int, mine: list[str]) -> None:
        for round_ in range(5):  # every review but the last of each image is an update
            for image in mine:
                rating = 1 + (round_ + len(image)) % 5
                response = _post_retrying(users[u], f"{url}/api/images/{image}/review", {"rating": rating}, statuses)
                assert response.status_code == 200, response.text
                expected[(u, image)] = rating

    threads = [threading.Thread(target=review, args=(u, images[u][k::2])) for u in range(2) for k in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    out, _ = writer.communicate(timeout=240)
    elapsed = time.monotonic() - started
    assert writer.returncode == 0 and "writer done" in out, out
    assert set(statuses) <= {200, 503}, statuses
    # Everything landed once: the other process's 40 rows and one review per (user, image).
    from sleeve.warehouse.duckdb_backend import DuckDBWarehouse

    health = requests.get(f"{url}/healthz", timeout=30).json()
    check = DuckDBWarehouse(path, lock_timeout_s=60)
    assert check.query("SELECT COUNT(*) AS n FROM stage_runs WHERE dag_id = 'sharing_test'")[0]["n"] == 40
    rows = check.query("SELECT image_id, rating FROM reviews WHERE image_id IN UNNEST(@ids)",
                       {"ids": [i for ims in images for i in ims]})
    assert len(rows) == 8
    assert {r["image_id"]: r["rating"] for r in rows} == {image: rating for (_, image), rating in expected.items()}
    assert health["warehouse_yields"] > 0  # the service handed the file over rather than starving the writer
    print(f"40 writes + {len(statuses)} review calls in {elapsed:.1f} s; 503s: {statuses.count(503)}; "
          f"yields: {health['warehouse_yields']}")


def test_a_file_held_too_long_is_a_503_with_retry_after_not_a_hung_request(live_service):
    url, path = live_service["url"], live_service["home"] / "warehouse.duckdb"
    s = _session(url, "holder-victim@example.com")
    stop = threading.Event()

    def keep_busy() -> None:  # the service stays in use while the other process asks for the file
        while not stop.is_set():
            s.get(f"{url}/api/me/images", timeout=30)
            time.sleep(0.05)

    busy = threading.Thread(target=keep_busy)
    busy.start()
    try:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "12"], stdout=subprocess.PIPE, text=True,
                                  env=live_service["env"])
        started = time.monotonic()
        assert holder.stdout.readline().strip() == "holding"
        got_file_s = time.monotonic() - started
    finally:
        stop.set()
        busy.join()
    started = time.monotonic()
    response = s.get(f"{url}/api/me/images", timeout=30)
    waited = time.monotonic() - started
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert "busy" in response.json()["detail"]
    assert waited < 8  # SLEEVE_SERVICE_DB_WAIT_S (5 s) and no more
    holder.wait(timeout=30)
    assert s.get(f"{url}/api/me/images", timeout=30).status_code == 200
    print(f"the other process got the file {got_file_s:.1f} s after asking, with the service busy; "
          f"a request then waited {waited:.1f} s for a 503")
