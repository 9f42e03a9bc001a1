"""How a pending request becomes covers.

- Production (``SLEEVE_AIRFLOW_API_URL`` set): :class:`AirflowTrigger` creates a
  ``batch_generate`` DAG run through Airflow's REST API (public API v2, JWT from ``/auth/token``);
  the DAG selects every pending request, so bursts of requests share one run.
- Embedded default: :class:`EmbeddedWorker`, a thread of the service, does what batch_generate
  does (``inference.shards.plan_shards`` -> the ``inference.generate_job`` shard job ->
  ``inference.shards.record_images``). The job runs in one long-lived child process (imports
  stay warm; torch never holds the service's GIL), by the job's own ``sleeve.jobs.run_job``.
"""

from __future__ import annotations

import json
import logging
import select
import subprocess
import sys
import threading

import requests

from inference.shards import load_requests, plan_shards, record_images
from service.clock import Clock, wall_clock
from service.warehouse import WarehouseBusy
from sleeve.jobs import RESULT_NAME
from sleeve.settings import Settings
from sleeve.store import ObjectStore
from sleeve.warehouse import Warehouse

log = logging.getLogger(__name__)

SHARD_TIMEOUT_S = 600


class AirflowApiError(RuntimeError):
    """Airflow's API refused or could not be reached; the message says which and why."""


class AirflowTrigger:
    """Creates DAG runs through Airflow 3's public REST API (``POST /api/v2/dags/{id}/dagRuns``)."""

    def __init__(self, base_url: str, username: str, password: str, *, timeout_s: float = 10.0,
                 min_interval_s: float = 5.0, session: requests.Session | None = None):
        self.base_url, self.timeout_s, self.min_interval_s = base_url.rstrip("/"), timeout_s, min_interval_s
        self._credentials = {"username": username, "password": password}
        self._http = session or requests.Session()
        self._token: str | None = None
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None
        self.ready = True

    def _post(self, path: str, body: dict, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            return self._http.post(f"{self.base_url}{path}", json=body, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise AirflowApiError(f"Airflow API at {self.base_url} is unreachable ({type(exc).__name__}); "
                                  "check SLEEVE_AIRFLOW_API_URL") from None

    def token(self, *, renew: bool = False) -> str:
        with self._lock:
            if self._token is None or renew:
                response = self._post("/auth/token", self._credentials)
                if response.status_code not in (200, 201):
                    raise AirflowApiError(f"Airflow API refused the credentials (HTTP {response.status_code}); "
                                          "check SLEEVE_AIRFLOW_API_USER and SLEEVE_AIRFLOW_API_PASSWORD")
                self._token = response.json()["access_token"]
            return self._token

    def trigger(self, dag_id: str, conf: dict | None = None, note: str = "requested by the covers service") -> dict:
        """Create a run of ``dag_id`` now (no logical date: its data interval is its run time)."""
        body = {"logical_date": None, "conf": conf or {}, "note": note}
        response = self._post(f"/api/v2/dags/{dag_id}/dagRuns", body, self.token())
        if response.status_code in (401, 403):  # an expired or stale token (Airflow says 403): one fresh one
            response = self._post(f"/api/v2/dags/{dag_id}/dagRuns", body, self.token(renew=True))
        if response.status_code not in (200, 201):
            detail = _detail(response)
            raise AirflowApiError(f"Airflow API did not create a {dag_id} run (HTTP {response.status_code}: {detail})")
        return response.json()

    # Pending requests are picked up by whichever run starts next, so bursts coalesce.
    def notify(self) -> None:
        self._wanted.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="airflow-trigger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wanted.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wanted.wait()
            if self._stopped.is_set():
                return
            self._wanted.clear()
            try:
                run = self.trigger("batch_generate", {"mode": "pending"})
                self.last_error = None
                log.info("batch_generate run %s created", run.get("dag_run_id"))
            except AirflowApiError as exc:
                self.last_error = str(exc)
                log.warning("%s", exc)
                self._wanted.set()  # try again after the pause
            self._stopped.wait(self.min_interval_s)


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    return str(detail or response.reason)[:300]


# --- embedded worker ---------------------------------------------------------------------

class ShardJobError(RuntimeError):
    """The shard job failed; the message is its error."""


class ShardProcess:
    """One long-lived ``python -m service.shard_worker`` child (restarted if it dies)."""

    def __init__(self, timeout_s: float = SHARD_TIMEOUT_S):
        self.timeout_s = timeout_s
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._proc = subprocess.Popen([sys.executable, "-m", "service.shard_worker"], stdin=subprocess.PIPE,
                                              stdout=subprocess.PIPE, text=True, bufsize=1)
                self._ready = False

    def _reply(self) -> dict:
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
        line = self._proc.stdout.readline() if ready else ""
        if not line:
            self.stop()
            raise ShardJobError("the shard worker stopped or timed out")
        return json.loads(line)

    @property
    def ready(self) -> bool:
        return bool(self._proc and self._ready)

    def warm(self) -> None:
        """Wait for the child's ``{"ready": true}`` (its imports done)."""
        with self._lock:
            if not self._ready:
                self._reply()
                self._ready = True

    def run(self, manifest_uri: str, config: str, output_uri: str) -> None:
        self.start()
        self.warm()
        with self._lock:
            self._proc.stdin.write(json.dumps({"manifest": manifest_uri, "config": config,
                                               "output": output_uri}) + "\n")
            self._proc.stdin.flush()
            reply = self._reply()
        if not reply.get("ok"):
            raise ShardJobError(reply.get("error") or "shard job failed")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class EmbeddedWorker:
    """Renders pending ``user`` requests in the background, one shard at a time."""

    def __init__(self, warehouse: Warehouse, store: ObjectStore, settings: Settings, *, poll_s: float = 2.0,
                 shard_size: int = 8, batch_size: int = 4, clock: Clock = wall_clock):
        self.warehouse, self.store, self.settings, self.clock = warehouse, store, settings, clock
        self.poll_s, self.shard_size = poll_s, shard_size
        self.config = json.dumps({"store_url": settings.store_url, "format": "png", "batch_size": batch_size})
        self.defaults = {"width": settings.gen_size, "height": settings.gen_size, "steps": settings.gen_steps}
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._jobs = ShardProcess()
        self._thread: threading.Thread | None = None
        self.rendered = 0
        self.last_error: str | None = None

    @property
    def ready(self) -> bool:
        return self._jobs.ready

    def start(self) -> None:
        self._jobs.start()  # its imports warm up while the first request is typed
        threading.Thread(target=self._jobs.warm, name="covers-worker-warm-up", daemon=True).start()
        self._thread = threading.Thread(target=self._loop, name="covers-worker", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)
        self._jobs.stop()

    def _loop(self) -> None:
        while not self._stopped.is_set():
            try:
                while self.run_once() and not self._stopped.is_set():
                    pass
                self.last_error = None
            except Exception as exc:  # keep serving; the next round retries
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.exception("covers worker round failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def run_once(self) -> int:
        """Render up to ``shard_size`` pending requests; returns how many were taken."""
        ids = [r["request_id"] for r in self.warehouse.query(
            # 'running' ones too: this worker renders one shard at a time, so any it sees were
            # left by a round that stopped (a restart, a busy warehouse) and are taken again.
            "SELECT request_id FROM generation_requests WHERE kind = 'user' AND status IN ('pending', 'running')"
            " ORDER BY created_at, request_id LIMIT @n", {"n": self.shard_size})]
        if not ids:
            return 0
        rows = load_requests(self.warehouse, ids)
        self._set_status(ids, "running")
        try:
            planned = plan_shards(self.warehouse, self.store, rows, base_model=self.settings.base_model,
                                  defaults=self.defaults, shard_size=self.shard_size)
            results = [self._run(shard) for shard in planned["shards"]]
        except WarehouseBusy:
            raise  # still 'running': the next round takes it again
        except Exception as exc:  # the job itself failed: say so on the requests, do not loop on them
            self._set_status(ids, "failed", f"generation failed ({type(exc).__name__})")
            raise
        try:
            recorded = record_images(self.warehouse, self.store, requests=rows, results=results,
                                     plan_failed=planned["failed"], data_time=lambda req: req["created_at"])
        except WarehouseBusy:
            raise  # the images are stored: the next round finds them and records them
        self.rendered += recorded["images"]
        return len(ids)

    def _run(self, shard: dict) -> dict:
        self._jobs.run(shard["manifest_uri"], self.config, shard["output_uri"])
        return {"manifest_uri": shard["manifest_uri"], "result_uri": f"{shard['output_uri']}/{RESULT_NAME}"}

    def _set_status(self, ids: list[str], status: str, reason: str | None = None) -> None:
        now = self.clock()
        self.warehouse.upsert("generation_requests", [
            {"request_id": rid, "status": status, "reason": reason, "updated_at": now} for rid in ids])
