"""`make bench` part: the covers service under load on loopback, while covers are being rendered.

``python -m service`` runs as its own process with the embedded defaults (DuckDB file, in-process
worker). 50 simulated users (asyncio + httpx, each with its own session) sign in, look at the
gallery, poll their request's status and review their cover for 60 s, pausing 0.5-1.5 s
between calls (locust's ``between(0.5, 1.5)``); meanwhile another user asks for 4 new covers
every 5 s, so the worker renders the whole time. Every review changes the rating; afterwards each
user's stored rating must be the last one sent (``service_reviews_lost`` counts mismatches).

Baseline, same run, same load: the same service on the stock ``DuckDBWarehouse`` (a DuckDB
connection opened per call, waited for while locked) instead of the service's warehouse gate
(one kept-open file handed over to waiting processes). ``service_covers_s`` is the time from
asking to 4 covers recorded, on the warm service.
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

USERS, DURATION_S, THINK_S = 50, 60.0, (0.5, 1.5)
PASSWORD = "bench password 123"
TIMED = ("gallery", "status", "review")
# The baseline server: the service on the stock warehouse, a DuckDB connection per call. Its
# calls are serialised: concurrent connects of one process to the same file fail ("Unique file
# handle conflict"), so that is what a first working version does.
STOCK = """
import threading
import service.app as app
from sleeve.warehouse.duckdb_backend import DuckDBWarehouse

class Serialised(DuckDBWarehouse):
    lock = threading.RLock()
    def query(self, sql, params=None):
        with self.lock:
            return super().query(sql, params)
    def execute(self, sql, params=None):
        with self.lock:
            return super().execute(sql, params)
    def columns(self, table):
        with self.lock:
            return super().columns(table)
    def tables(self):
        with self.lock:
            return super().tables()
    def _merge(self, *args):
        with self.lock:
            return super()._merge(*args)

app.service_warehouse = lambda s: Serialised(s.warehouse_path, lock_timeout_s=s.service_db_wait_s)
from service.__main__ import main
main()
"""


def _start(home: Path, port: int, model: str, stock: bool) -> subprocess.Popen:
    env = {**os.environ, "SLEEVE_HOME": str(home), "SLEEVE_BASE_MODEL": model, "SLEEVE_SERVICE_PORT": str(port),
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "DIFFUSERS_VERBOSITY": "error", "TRANSFORMERS_VERBOSITY": "error"}
    cmd = [sys.executable, "-c", STOCK] if stock else [sys.executable, "-m", "service"]
    with open(home / "service.log", "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log)


async def _wait_ready(client, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            response = await client.get("/healthz")
            if response.status_code == 200 and response.json()["generation_ready"]:
                return
        except Exception:  # not listening yet
            pass
        await asyncio.sleep(0.5)
    raise RuntimeError("the service did not become ready")


async def _await_done(client, request_id: str, timeout_s: float = 600) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = await client.get(f"/api/requests/{request_id}")
        body = response.json() if response.status_code == 200 else {}
        if body.get("status") in ("done", "failed"):
            return body
        await asyncio.sleep(0.2)
    raise RuntimeError(f"request {request_id} was not rendered")


async def _covers_time(client) -> float:
    started = time.perf_counter()
    response = await client.post("/api/covers", json={"title": "Timing Song", "artist": "Bench", "num_images": 4})
    body = await _await_done(client, response.json()["request_id"])
    assert body["status"] == "done" and len(body["images"]) == 4, body
    return time.perf_counter() - started


async def _retrying(client, path: str, body: dict):
    """Set-up calls wait out a 503 (50 sign-ups at once queue for the warehouse)."""
    while True:
        response = await client.post(path, json=body)
        if response.status_code != 503:
            assert response.status_code < 400, response.text
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))


class User:
    def __init__(self, httpx, url: str, index: int):
        self.email = f"load{index}@example.com"
        self.client = httpx.AsyncClient(base_url=url, timeout=30)
        self.rng = random.Random(index)
        self.request_id = self.image_id = None
        self.last_rating = None
        self.latencies: dict[str, list[float]] = {}
        self.errors: list[str] = []

    async def setup(self, index: int) -> None:
        await _retrying(self.client, "/api/signup", {"email": self.email, "password": PASSWORD})
        response = await _retrying(self.client, "/api/covers", {"title": f"Load song {index}", "artist": "Bench",
                                                                "num_images": 1})
        self.request_id = response.json()["request_id"]

    async def call(self, op: str, method: str, path: str, **kw) -> None:
        started = time.perf_counter()
        try:
            response = await self.client.request(method, path, **kw)
            ok = response.status_code == 200
        except Exception as exc:
            ok, response = False, exc
        self.latencies.setdefault(op, []).append((time.perf_counter() - started) * 1000)
        if not ok:
            self.errors.append(f"{op}: {getattr(response, 'status_code', response)}")
        elif op == "review":
            self.last_rating = kw["json"]["rating"]

    async def run(self, until: float) -> None:
        n = 0
        while time.monotonic() < until:
            op = "login" if n % 10 == 9 else TIMED[n % 3]
            if op == "login":
                await self.call(op, "POST", "/api/login", json={"email": self.email, "password": PASSWORD})
            elif op == "gallery":
                await self.call(op, "GET", "/api/gallery")
            elif op == "status":
                await self.call(op, "GET", f"/api/requests/{self.request_id}")
            else:
                await self.call(op, "POST", f"/api/images/{self.image_id}/review",
                                json={"rating": 1 + self.rng.randrange(5), "comment": f"round {n}"})
            n += 1
            await asyncio.sleep(self.rng.uniform(*THINK_S))


async def _creator(client, until: float, every_s: float = 5.0) -> int:
    made = 0
    while time.monotonic() < until:
        await client.post("/api/covers", json={"title": f"Background {made}", "artist": "Bench", "num_images": 4})
        made += 1
        await asyncio.sleep(every_s)
    return made


def _p95(values: list[float]) -> float | None:
    if not values:
        return None
    return round(statistics.quantiles(values, n=20)[18], 1) if len(values) >= 20 else round(max(values), 1)


async def _variant(url: str, rounds: int, duration_s: float) -> dict:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=30) as admin:
        await _wait_ready(admin)
        await admin.post("/api/signup", json={"email": "bench-admin@example.com", "password": PASSWORD})
        covers_s = [await _covers_time(admin) for _ in range(3)]
        users = [User(httpx, url, i) for i in range(USERS)]
        await asyncio.gather(*(u.setup(i) for i, u in enumerate(users)))
        for u in users:
            body = await _await_done(u.client, u.request_id)
            u.image_id = body["images"][0]["image_id"]
        out = {"p95": [], "errors": [], "calls": [], "ops": {}, "lost": [], "covers_s": covers_s, "rendering": []}
        for _ in range(rounds):
            for u in users:
                u.latencies, u.errors = {}, []
            until = time.monotonic() + duration_s
            made, *_ = await asyncio.gather(_creator(admin, until), *(u.run(until) for u in users))
            timed = [v for u in users for op in TIMED for v in u.latencies.get(op, [])]
            out["p95"].append(_p95(timed))
            out["errors"].append(sum(len(u.errors) for u in users))
            out["calls"].append(sum(len(v) for u in users for v in u.latencies.values()))
            out["rendering"].append(made)
            for op in (*TIMED, "login"):
                out["ops"].setdefault(op, []).append(_p95([v for u in users for v in u.latencies.get(op, [])]))
            lost = 0
            for u in users:
                mine = (await u.client.get("/api/me/images")).json()["images"]
                stored = {m["image_id"]: m["rating"] for m in mine}
                lost += int(u.last_rating is not None and stored.get(u.image_id) != u.last_rating)
            out["lost"].append(lost)
            out["first_errors"] = [e for u in users for e in u.errors][:5]
            print(f"service bench round: p95 {out['p95'][-1]} ms, errors {out['errors'][-1]}, lost {lost}, "
                  f"calls {out['calls'][-1]}, ops {({k: v[-1] for k, v in out['ops'].items()})}", file=sys.stderr)
        for u in users:
            await u.client.aclose()
        return out


def run(rounds: int = 3, duration_s: float = DURATION_S) -> dict:
    import socket

    from sleeve.settings import get_settings
    from sleeve.tinymodel import ensure_tiny_sdxl

    model = str(ensure_tiny_sdxl(get_settings().tiny_model_dir))
    results = {}
    for name, stock in (("sleeve", False), ("stock", True)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        home = Path(tempfile.mkdtemp(prefix=f"sleeve-bench-service-{name}-"))
        proc = _start(home, port, model, stock)
        try:
            results[name] = asyncio.run(_variant(f"http://127.0.0.1:{port}", rounds, duration_s))
        except Exception as exc:
            if not stock:
                raise
            # Seen on a loaded 2-core box: the baseline's 50 sign-ups time out (30 s) queued behind
            # ~60 ms connects; say so instead of dropping the service's own figures.
            results[name] = {"failed": f"{type(exc).__name__}: {exc}"[:200]}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    ours, stock = results["sleeve"], results["stock"]
    values = {
        "service_p95_ms": ours["p95"], "service_errors": ours["errors"], "service_reviews_lost": sum(ours["lost"]),
        "service_calls": ours["calls"], "service_covers_requested_during_rounds": ours["rendering"],
        **{f"service_p95_ms_{op}": statistics.median(v) for op, v in ours["ops"].items()},
        "service_covers_s": [round(v, 2) for v in ours["covers_s"]],
        "service_first_errors": "; ".join(ours.get("first_errors", []))[:300] or None,
    }
    if "failed" in stock:
        return values | {"service_stock_failed": stock["failed"]}
    return values | {
        "service_stock_p95_ms": stock["p95"], "service_stock_errors": sum(stock["errors"]),
        "service_stock_reviews_lost": sum(stock["lost"]),
        "service_p95_speedup_vs_stock_duckdb": [round(b / o, 2) if o else 0.0
                                                for o, b in zip(ours["p95"], stock["p95"], strict=True)]}


DESCRIPTIONS = {
    "service_p95_ms": (f"p95 ms of gallery/status/review calls, {USERS} users x {DURATION_S:.0f} s per round on "
                       f"loopback, think time {THINK_S[0]}-{THINK_S[1]} s, while 4 covers are requested every 5 s "
                       "(target 100 ms)"),
    "service_errors": "failed calls per round (5xx, timeouts) in the same load",
    "service_p95_speedup_vs_stock_duckdb": ("stock DuckDBWarehouse (a connection per call, calls serialised) "
                                            "p95 / Sleeve's p95, the same load in the same run"),
}
