"""Airflow's components as local processes, and a small client of its public REST API (v2).

Each component runs in its own session (``start_new_session``) so that a fault can SIGKILL it
with everything it started (task supervisors, GPU job subprocesses), as a lost machine would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests

from cluster.services import stop, wait_for_port

BIN = Path(sys.executable).parent
WORKERS = {"worker": "default", "gpu-worker": "gpu"}  # name -> the Celery queue it serves


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    env: dict
    proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            out.write(f"\n==== start {' '.join(self.argv)} at {time.strftime('%H:%M:%S')}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=self.env, start_new_session=True)

    def tree(self) -> list[psutil.Process]:
        if self.proc is None or self.proc.poll() is not None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> int:
        """SIGKILL the component and every process under it at once; returns how many died."""
        procs = self.tree()
        for p in procs:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(procs, timeout=20)
        if self.proc is not None:
            self.proc.wait(timeout=20)
        return len(procs)

    def stop(self) -> None:
        procs = self.tree()
        stop(self.proc, signal.SIGTERM, timeout=45)
        for p in procs:  # anything that left the session (e.g. setsid'd task runners)
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Airflow:
    home: Path
    env: dict
    api_port: int
    components: dict[str, Component] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 600) -> str:
        """``airflow ARGS`` to completion; raises with its output on failure."""
        out = subprocess.run([str(BIN / "airflow"), *args], env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({out.returncode}):\n{out.stdout[-2000:]}"
                               f"\n{out.stderr[-3000:]}")
        return out.stdout

    def define(self, logs: Path) -> None:
        host = socket.gethostname()
        airflow = str(BIN / "airflow")
        argv = {
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"],
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
        }
        for name, queue in WORKERS.items():
            # --skip-serve-logs: the log server would listen on every interface; the API server
            # reads these logs from the shared local folder instead.
            argv[name] = [airflow, "celery", "worker", "--queues", queue, "--concurrency", "1" if queue == "gpu" else "2",
                          "--celery-hostname", f"{name}@{host}", "--skip-serve-logs", "--without-gossip",
                          "--without-mingle"]
        for name, args in argv.items():
            self.components[name] = Component(name, args, logs / f"{name}.log", self.env)

    def start(self, *names: str) -> None:
        for name in names or self.components:
            self.components[name].start()
        if not names or "api-server" in names:
            wait_for_port(self.api_port, 180, self.components["api-server"].proc, self.components["api-server"].log)

    def dead(self, expected: set[str]) -> list[str]:
        """Components that exited though nobody stopped them: name and exit status."""
        return [f"{c.name} (exit {c.proc.returncode})" for c in self.components.values()
                if c.proc is not None and c.proc.poll() is not None and c.name not in expected]

    def stop_all(self) -> None:
        for name in reversed(list(self.components)):
            self.components[name].stop()


class Api:
    """Airflow 3's public REST API (``/api/v2``) with a JWT from ``/auth/token``."""

    def __init__(self, base_url: str, username: str, password: str, watch=lambda: None):
        self.watch = watch  # called on every poll: raises when a component died unexpectedly
        self.base = base_url.rstrip("/")
        self.session = requests.Session()
        self.username, self.password = username, password
        self._token_at = 0.0

    def _auth(self) -> None:
        if time.monotonic() - self._token_at < 600:
            return
        r = self.session.post(f"{self.base}/auth/token", json={"username": self.username, "password": self.password},
                              timeout=30)
        r.raise_for_status()
        self.session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        self._token_at = time.monotonic()

    def call(self, method: str, path: str, **kwargs) -> dict:
        self._auth()
        for attempt in range(30):  # the API server may be busy on two shared cores
            try:
                r = self.session.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
            except requests.ConnectionError:
                if attempt == 29:
                    raise
                time.sleep(2)
                continue
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:500]}")
            return r.json() if r.content else {}
        raise AssertionError("unreachable")

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.call("GET", "/dags", params={"limit": 100})["dags"]}

    def unpause(self, dag_id: str) -> None:
        self.call("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, logical_date: str, conf: dict | None = None, run_id: str | None = None) -> str:
        body = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def runs(self, dag_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 200})[
            "task_instances"]

    def wait_run(self, dag_id: str, run_id: str, timeout: float, log=None) -> str:
        """Poll until the run leaves queued/running; returns its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run(dag_id, run_id)["state"]
            if state not in ("queued", "running"):
                return state
            self.watch()
            time.sleep(2)
        states = {t["task_id"] + (f"[{t['map_index']}]" if t.get("map_index", -1) >= 0 else ""): t["state"]
                  for t in self.task_instances(dag_id, run_id)}
        raise TimeoutError(f"{dag_id} {run_id} still running after {timeout:.0f} s: {json.dumps(states)}")

    def wait_task(self, dag_id: str, run_id: str, task_id: str, states: set[str], timeout: float) -> list[dict]:
        """Until some instance of ``task_id`` is in one of ``states`` (mapped ones included)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [t for t in self.task_instances(dag_id, run_id) if t["task_id"] == task_id
                     and t["state"] in states]
            if found:
                return found
            if self.run(dag_id, run_id)["state"] not in ("queued", "running"):
                raise RuntimeError(f"{dag_id} {run_id} ended before {task_id} reached {states}")
            self.watch()
            time.sleep(0.5)
        raise TimeoutError(f"{dag_id}.{task_id} not in {states} after {timeout:.0f} s")


def process_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SLEEVE_"))}
    env.update(extra)
    return env
