"""require_approval against a real Airflow on loopback (`airflow standalone`: API server,
scheduler, DAG processor and triggerer): the canary promotion waits in the standard provider's
ApprovalOperator; approving it through the REST API promotes the canary, refusing it retires
the canary, and the registry ends in the matching state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from tests.conftest import REPO, free_port, tiny_model_dir

DAG = "weekly_retrain"
WEEK1 = datetime(2026, 3, 2, 3, tzinfo=UTC)


def _seed_canary(env, version: str, production: str, start: datetime, lift: float) -> None:
    """Register ``version`` as canary against ``production`` and rate both arms in [start, start+7d)."""
    code = f"""
import os
from datetime import datetime, timedelta
from sleeve import registry
from sleeve.warehouse import open_warehouse
w = open_warehouse(); w.migrate()
start = datetime.fromisoformat({start.isoformat()!r})
def reg(v):
    registry.register(w, version=v, kind="style", base_model="tiny", adapter_uri="file:///m/" + v,
                      manifest_uri="file:///s.json", metrics={{"contact_sheet_uri": "file:///sheets/" + v + ".png"}},
                      training_run_id="run-" + v, alias=None)
if registry.production_version(w) is None:
    reg({production!r}); registry.promote(w, {production!r}, start - timedelta(days=30))
reg({version!r}); registry.start_canary(w, {version!r}, start)
day = start + timedelta(days=2)
for arm, version, lift in (("p", {production!r}, 0.0), ("c", {version!r}, {lift})):
    for n in range(12):
        rid = f"{version}-{{arm}}{{n}}"
        w.upsert("generation_requests", [{{"request_id": rid, "kind": "user", "user_id": "u1", "created_at": day}}])
        w.upsert("images", [{{"image_id": rid + "-0", "request_id": rid, "image_index": 0, "model_version": version,
                              "created_at": day}}])
        w.upsert("reviews", [{{"review_id": "rv-" + rid, "image_id": rid + "-0", "user_id": "u1",
                               "rating": min(5, [2, 3, 4, 3][n % 4] + lift), "created_at": day}}])
"""
    subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO)


def _registry(env) -> dict:
    code = ("import json; from sleeve.warehouse import open_warehouse; w = open_warehouse(); "
            "print(json.dumps({r['version']: r['alias'] for r in w.query('SELECT version, alias FROM model_versions')}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, cwd=REPO, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wait(what, probe, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(2)
    raise TimeoutError(f"{what} not reached in {timeout:.0f}s")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    """`airflow standalone` on a free loopback port with its own AIRFLOW_HOME and SLEEVE_HOME."""
    home = tmp_path_factory.mktemp("live")
    port = free_port()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "AIRFLOW_HOME": str(home / "airflow"), "SLEEVE_HOME": str(home / "sleeve"),
           "SLEEVE_BASE_MODEL": str(tiny_model_dir()),
           "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
           "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True", "AIRFLOW__API__PORT": str(port),
           "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__CORE__PARALLELISM": "2",
           "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
           "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2", "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2"}
    subprocess.run([sys.executable, "-m", "sleeve.cli", "migrate"], env=env, cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)  # as `make setup` does before Airflow starts
    log = open(home / "standalone.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "airflow", "standalone"], env=env, cwd=REPO, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api/v2"
    try:
        def dag_known():
            try:
                return requests.get(f"{api}/dags/{DAG}", timeout=30).status_code == 200
            except requests.RequestException:  # not up yet, or too busy to answer
                return False
        _wait("weekly_retrain parsed and served", dag_known, 300)
        # GPU tasks take a slot of pool `gpu` (`make setup` creates it): without it they never run
        r = requests.post(f"{api}/pools", json={"name": "gpu", "slots": 1}, timeout=30)
        assert r.status_code in (200, 201), r.text
        # Only weekly_retrain runs. Unpausing it schedules its latest interval once (catchup is
        # off); let that run finish (no canary yet: it changes nothing) before the weeks under test.
        assert requests.patch(f"{api}/dags/{DAG}", json={"is_paused": False}, timeout=30).status_code == 200

        def idle():
            runs = requests.get(f"{api}/dags/{DAG}/dagRuns", timeout=30).json()["dag_runs"]
            return bool(runs) and all(r["state"] in ("success", "failed") for r in runs)
        _wait("the scheduled run finished", idle, 400)
        yield {"api": api, "env": env, "log": home / "standalone.log"}
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def _trigger(api, start: datetime, timeout_hours: float = 1.0) -> str:
    conf = {"interval_start": start.isoformat(), "interval_end": (start + timedelta(days=7)).isoformat(),
            "require_approval": True, "canary_min_requests": 10, "approval_timeout_hours": timeout_hours}
    r = requests.post(f"{api}/dags/{DAG}/dagRuns", timeout=30,
                      json={"logical_date": (start + timedelta(days=7)).isoformat(), "conf": conf})
    assert r.status_code == 200, r.text
    return r.json()["dag_run_id"]


def _answer_and_finish(airflow, start: datetime, option: str | None, timeout_hours: float = 1.0) -> dict:
    """Trigger the week, wait for the approval request, answer it (None: never) and wait for the end."""
    api = airflow["api"]
    run_id = _trigger(api, start, timeout_hours)
    base = f"{api}/dags/{DAG}/dagRuns/{run_id}/taskInstances/approve_promotion"

    def waiting():
        ti = requests.get(base, timeout=30)
        if ti.status_code != 200 or ti.json()["state"] != "awaiting_input":
            return None
        r = requests.get(f"{base}/-1/hitlDetails", timeout=30)
        return r.json() if r.status_code == 200 and r.json().get("response_received") is False else None

    detail = _wait(f"the approval of {run_id} waiting", waiting, 400)
    # Answer as a person would, not within a second: on a loaded machine an answer that arrives
    # before the scheduler has handled the exit of the process that asked makes it mark the
    # resumed try up_for_retry (seen in a full run on 2 busy cores), and the question is asked again.
    time.sleep(15)
    if option:
        r = requests.patch(f"{base}/-1/hitlDetails", json={"chosen_options": [option]}, timeout=30)
        assert r.status_code == 200, r.text

    def finished():
        r = requests.get(f"{api}/dags/{DAG}/dagRuns/{run_id}", timeout=30).json()
        return r if r["state"] in ("success", "failed") else None

    run = _wait(f"{run_id} finished", finished, 400)
    states = {t["task_id"]: t["state"] for t in
              requests.get(f"{api}/dags/{DAG}/dagRuns/{run_id}/taskInstances", timeout=30).json()["task_instances"]}
    return {"detail": detail, "run": run, "states": states}


def test_approving_promotes_and_refusing_retires(airflow):
    env = airflow["env"]
    _seed_canary(env, "canary-1", "prod-0", WEEK1, lift=1)
    approved = _answer_and_finish(airflow, WEEK1, "Approve")
    detail = approved["detail"]
    assert detail["subject"] == "Promote canary canary-1 to production?"
    assert "better (lower end above +0.00), promoted" in detail["body"]
    assert "file:///sheets/canary-1.png" in detail["body"] and detail["defaults"] == ["Reject"]
    assert approved["run"]["state"] == "success", approved["states"]
    assert _registry(env) == {"prod-0": "archived", "canary-1": "production"}

    week2 = WEEK1 + timedelta(days=7)
    _seed_canary(env, "canary-2", "canary-1", week2, lift=1)
    refused = _answer_and_finish(airflow, week2, "Reject")
    assert refused["run"]["state"] == "success", refused["states"]
    assert refused["states"]["approved"] == "skipped" and refused["states"]["settle_canary"] == "success"
    assert _registry(env) == {"prod-0": "archived", "canary-1": "production", "canary-2": "retired"}

    week3 = week2 + timedelta(days=7)
    _seed_canary(env, "canary-3", "canary-1", week3, lift=1)
    unanswered = _answer_and_finish(airflow, week3, None, timeout_hours=0.005)  # 18 s, then the default: Reject
    assert unanswered["run"]["state"] == "success", unanswered["states"]
    assert unanswered["states"]["approved"] == "skipped"
    assert _registry(env)["canary-3"] == "retired" and _registry(env)["canary-1"] == "production"
