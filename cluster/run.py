"""`make test-cluster`: Sleeve on a real CeleryExecutor cluster on loopback, with faults.

PostgreSQL + Redis (Debian packages) + Airflow's api-server, scheduler, dag-processor,
triggerer, a Celery worker on the default queue and one on queue ``gpu`` (pool ``gpu``), all
as local processes on 127.0.0.1 under ``$SLEEVE_HOME/cluster/``, configured from
:mod:`cluster.config` (the source of docker/docker-compose.yaml's Airflow settings).

1. the weekly cycle, every run created through the REST API and run by the scheduler; during
   ``weekly_retrain`` the ``gpu`` worker is SIGKILLed while ``train`` runs (fault 1);
2. ``airflow backfill create`` of weekly_report over 3 weeks;
3. fault 4: Slack answers 500 until two tries of ``deliver`` have failed, while meanwhile
   fault 2: SIGKILL the scheduler mid-run, and fault 3: restart Redis while mapped
   ``batch_generate`` shards run.
After each: every run ``success`` and nothing duplicated. Writes ``$SLEEVE_HOME/cluster-report.json``
and stops everything it started, also on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pendulum
import psutil

from cluster import checks
from cluster.airflow import Airflow, Api, process_env
from cluster.config import local_env
from cluster.services import MissingPrerequisite, Postgres, Redis, free_port, prerequisites

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "plugins"))  # the Slack-compatible server of the test suite

WEEK_END = pendulum.datetime(2026, 11, 16, 3, tz="UTC")  # the demo's week
DAGS = {"crawl_songs", "label_songs", "batch_generate", "weekly_retrain", "personalize", "product_shots",
        "weekly_report"}
SLACK_TOKEN = "xoxb-cluster-test-token"  # the loopback Slack server's, not a secret
SLACK_CHANNEL = "C0CLUSTER1"
TRAIN_STEPS = 70  # past the first checkpoint (every 50 steps): the kill comes after it


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class ClusterFailed(AssertionError):
    pass


class Scenario:
    def __init__(self, home: Path, slack):
        self.home = home
        self.dir = home / "cluster"
        self.slack = slack
        self.runs: list[tuple[str, str]] = []  # (dag_id, run_id) of every run this test created
        self.faults: list[dict] = []
        self.timings: dict[str, float] = {}
        self.expected_down: set[str] = set()  # components a fault is restarting right now
        self.in_flight: set[str] = set()  # run ids of a fault still under way (checked when it ends)

    # ------------------------------------------------------------------ set-up
    def start(self) -> None:
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "logs").mkdir(parents=True)
        self.postgres = Postgres(self.dir / "postgres", password=secrets.token_hex(16))
        self.redis = Redis(self.dir / "redis")
        self.postgres.start()
        self.redis.start()
        from cryptography.fernet import Fernet

        api_port = free_port()
        values = {
            "auth_manager": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
            "postgres_password": self.postgres.password, "postgres_host": self.postgres.host,
            "redis_host": self.redis.host, "visibility_timeout": "172800",
            "fernet_key": Fernet.generate_key().decode(), "jwt_secret": secrets.token_hex(32),
            "api_secret_key": secrets.token_hex(32), "paused_at_creation": "true",
            "api_url": f"http://127.0.0.1:{api_port}", "scheduler_health_port": str(free_port()),
            "dags": str(REPO / "dags"), "plugins": str(REPO / "plugins"),
            "sleeve_home": str(self.dir / "home"), "pii_key": secrets.token_hex(16),
        }
        base_model = Path(os.environ.get("SLEEVE_BASE_MODEL") or self.home / "models" / "tiny-sdxl")
        from training.trainer import current_code_version

        # Fixed for the whole run, as the images bake it in at build time: a commit made while the
        # cluster runs must not make the retried train job discard its checkpoint as other code's.
        code_version = os.environ.get("SLEEVE_CODE_VERSION") or current_code_version()
        env = process_env(
            **local_env(values),
            PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            AIRFLOW_HOME=str(self.dir / "airflow"),
            AIRFLOW__LOGGING__BASE_LOG_FOLDER=str(self.dir / "logs" / "tasks"),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin",
            AIRFLOW_CONN_SLEEVE_SLACK=json.dumps({"conn_type": "slack", "password": SLACK_TOKEN,
                                                  "extra": {"base_url": self.slack.base_url}}),
            # Sleeve's settings, as docker/.env gives them to the compose stack.
            SLEEVE_GPU_EXECUTOR="celery", SLEEVE_GPU_SLOTS="1", SLEEVE_NOTIFIER="slack",
            SLEEVE_SLACK_CHANNEL=SLACK_CHANNEL, SLEEVE_BASE_MODEL=str(base_model), SLEEVE_TORCH_THREADS="1",
            SLEEVE_CODE_VERSION=code_version,
            HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_HUB_DISABLE_PROGRESS_BARS="1",
            DIFFUSERS_VERBOSITY="error", TRANSFORMERS_VERBOSITY="error", PYTHONUNBUFFERED="1",
        )
        self.env = env
        from sleeve.settings import load_settings
        from sleeve.store import open_store
        from sleeve.warehouse import open_warehouse

        if not (base_model / "model_index.json").exists():
            from sleeve.tinymodel import ensure_tiny_sdxl

            ensure_tiny_sdxl(base_model)
        self.settings = load_settings(env)
        self.settings.ensure_dirs()
        self.warehouse = open_warehouse(self.settings)
        self.warehouse.migrate()
        self.store = open_store(self.settings.store_url)

        self.airflow = Airflow(self.dir / "airflow", env, api_port)
        say("airflow db migrate (PostgreSQL)")
        self.airflow.run("db", "migrate")
        self.airflow.run("pools", "set", "gpu", "1", "Sleeve GPU jobs: one slot per GPU (SLEEVE_GPU_SLOTS)")
        self.airflow.define(self.dir / "logs")
        say("starting api-server, scheduler, dag-processor, triggerer, worker (default), gpu-worker (gpu)")
        self.airflow.start()
        password = json.loads((self.dir / "airflow" / "simple_auth_manager_passwords.json.generated").read_text())
        self.api = Api(values["api_url"], "admin", password["admin"], watch=self.watch)
        deadline = time.monotonic() + 300
        while not DAGS <= self.api.dag_ids():
            if time.monotonic() > deadline:
                raise ClusterFailed(f"DAGs not parsed after 300 s: {sorted(DAGS - self.api.dag_ids())}")
            time.sleep(3)
        for dag_id in sorted(DAGS):
            self.api.unpause(dag_id)
        self.check_loopback()

    def watch(self) -> None:
        dead = self.airflow.dead(self.expected_down)
        dead += [f"{name} (exit {svc.proc.returncode})" for name, svc in (("postgres", self.postgres), ("redis", self.redis))
                 if svc.proc.poll() is not None and name not in self.expected_down]
        if dead:
            raise ClusterFailed(f"died unexpectedly: {', '.join(dead)}; logs in {self.dir / 'logs'}")

    def check_loopback(self) -> None:
        """Every socket our processes listen on is on 127.0.0.1."""
        ours = {p.pid for c in self.airflow.components.values() for p in c.tree()}
        for proc in (self.postgres.proc, self.redis.proc):
            ours |= {proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))}
        wide = [f"{c.laddr.ip}:{c.laddr.port} (pid {c.pid})" for c in psutil.net_connections("inet")
                if c.status == psutil.CONN_LISTEN and c.pid in ours and c.laddr.ip not in ("127.0.0.1", "::1")]
        if wide:
            raise ClusterFailed(f"listening beyond loopback: {wide}")

    def stop(self) -> None:
        for step in (lambda: self.airflow.stop_all(), lambda: self.redis.stop(), lambda: self.postgres.stop()):
            try:
                step()
            except Exception as exc:  # keep stopping the rest
                say(f"stop: {exc}")

    # ------------------------------------------------------------------ helpers
    def trigger(self, dag_id: str, logical_date, conf: dict | None = None) -> str:
        run_id = self.api.trigger(dag_id, logical_date.to_iso8601_string(), conf)
        self.runs.append((dag_id, run_id))
        return run_id

    def finish(self, dag_id: str, run_id: str, timeout: float = 600) -> None:
        state = self.api.wait_run(dag_id, run_id, timeout)
        if state != "success":
            failed = {t["task_id"]: t["state"] for t in self.api.task_instances(dag_id, run_id)
                      if t["state"] != "success"}
            raise ClusterFailed(f"{dag_id} {run_id} ended {state}: {failed}; logs in {self.dir / 'logs'}")

    def run_dag(self, dag_id: str, logical_date, conf: dict | None = None, timeout: float = 600) -> str:
        started = time.monotonic()
        run_id = self.trigger(dag_id, logical_date, conf)
        self.finish(dag_id, run_id, timeout)
        self.timings[f"{dag_id} {logical_date.to_date_string()}"] = round(time.monotonic() - started, 1)
        say(f"  {dag_id} ({logical_date.to_date_string()}) success in {time.monotonic() - started:.0f} s")
        return run_id

    def all_runs_succeeded(self) -> list[str]:
        bad = []
        for dag_id in sorted(DAGS):
            for run in self.api.runs(dag_id):
                if run["state"] != "success" and run["dag_run_id"] not in self.in_flight:
                    bad.append(f"{dag_id} {run['dag_run_id']}: {run['state']}")
        return bad

    def duplicates(self) -> tuple[int, dict]:
        found = checks.all_duplicates(self.warehouse, self.store, list(self.slack.messages.values()))
        found["slack_files"] = checks.duplicate_files(list(self.slack.files.values()))
        return sum(checks.count(v) for v in found.values()), {k: v for k, v in found.items() if v}

    def record(self, name: str, survived: bool, **detail) -> dict:
        bad = self.all_runs_succeeded()
        duplicates, found = self.duplicates()
        entry = {"name": name, "survived": bool(survived and not bad), "duplicates": duplicates, **detail}
        if bad:
            entry["runs_not_success"] = bad
        if found:
            entry["duplicates_found"] = found
        self.faults.append(entry)
        say(f"fault {name}: survived={entry['survived']} duplicates={duplicates} {json.dumps(detail)[:300]}")
        return entry

    # ------------------------------------------------------------------ the weekly cycle (+ fault 1)
    def weekly_cycle(self) -> None:
        from sleeve_airflow import demo_data

        from inference.product_samples import upload_samples

        week_end = WEEK_END
        week_start, inside = week_end - timedelta(days=7), week_end - timedelta(days=4)
        say("weekly cycle through the scheduler")
        self.run_dag("crawl_songs", week_end)
        self.run_dag("label_songs", inside)
        demo_data.seed_requests(self.warehouse, self.settings, week_start, week_end)
        self.run_dag("batch_generate", (week_end + timedelta(days=1)).replace(hour=2))
        demo_data.seed_reviews(self.warehouse, self.store, week_start, week_end)
        self.retrain_with_gpu_worker_killed(week_end)
        request_id = demo_data.seed_personalization(self.warehouse, self.settings, self.store, week_start)
        self.run_dag("personalize", inside, {"request_ids": [request_id], "steps": 10})
        products = upload_samples(self.store, size=256, keys=("mug", "bottle"))
        self.run_dag("product_shots", inside, {"products": products, "positions": ["centre", "left"], "variants": 1})
        demo_data.seed_product_reviews(self.warehouse, self.settings, week_start, week_end)
        self.run_dag("weekly_report", week_end)

    def _train_job(self) -> psutil.Process | None:
        for proc in self.airflow.components["gpu-worker"].tree():
            try:
                cmd = proc.cmdline()
            except psutil.NoSuchProcess:
                continue
            if "training.train_job" in cmd:
                return proc
        return None

    def retrain_with_gpu_worker_killed(self, week_end) -> None:
        """Fault 1: SIGKILL the gpu worker (and the training job under it) after the first
        checkpoint, restart it; the retry must resume and end with the same adapter bytes as
        an uninterrupted run of the same job."""
        from training.checkpoints import list_checkpoints

        started = time.monotonic()
        run_id = self.trigger("weekly_retrain", week_end, {"steps": TRAIN_STEPS})
        self.api.wait_task("weekly_retrain", run_id, "train", {"running"}, 300)
        deadline, job = time.monotonic() + 300, None
        while time.monotonic() < deadline:
            job = job or self._train_job()
            if job is not None:
                cmd = job.cmdline()
                config = json.loads(cmd[cmd.index("--config") + 1])
                if list_checkpoints(Path(config["work_dir"])):
                    break
            time.sleep(0.3)
        else:
            raise ClusterFailed("the training job wrote no checkpoint within 300 s")
        checkpoint = list_checkpoints(Path(config["work_dir"]))[-1].name
        killed = self.airflow.components["gpu-worker"].kill()
        say(f"fault 1: SIGKILLed the gpu worker ({killed} processes) after {checkpoint}; restarting it")
        time.sleep(2)
        self.airflow.start("gpu-worker")
        # The same job from scratch, meanwhile (the scheduler needs ~20 s to notice and the retry waits 60 s).
        output = cmd[cmd.index("--output") + 1]
        reference = self.uninterrupted(cmd, config)
        self.finish("weekly_retrain", run_id, 900)
        self.timings["weekly_retrain (fault 1)"] = round(time.monotonic() - started, 1)
        tries = {t["task_id"]: t["try_number"] for t in self.api.task_instances("weekly_retrain", run_id)}
        result = json.loads(self.store.get_bytes(output.removeprefix(self.store.url + "/") + "/result.json"))
        same = self.compare_adapters(reference, output)
        self.record("gpu worker SIGKILL during train", survived=tries["train"] >= 2 and result["resumed_from"] > 0
                    and same["tensors_identical"], killed_after=checkpoint, train_tries=tries["train"],
                    resumed_from=result["resumed_from"], **same)

    def uninterrupted(self, cmd: list[str], config: dict) -> subprocess.Popen:
        """Start the same job from scratch (fresh work and cache dirs) into a reference folder."""
        fresh = self.dir / "uninterrupted"
        config = {**config, "work_dir": str(fresh / "work"), "cache_dir": str(fresh / "cache")}
        argv = [*cmd[1:cmd.index("--config")], "--config", json.dumps(config, sort_keys=True), "--output",
                self.store.uri("cluster-test/uninterrupted-adapter")]
        say("fault 1: training the same job uninterrupted for comparison, meanwhile")
        with open(self.dir / "logs" / "uninterrupted-train.log", "wb") as log:
            return subprocess.Popen([sys.executable, *argv], env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def compare_adapters(self, reference: subprocess.Popen, output: str) -> dict:
        """The retried run's adapter files against the uninterrupted run's: bytes and tensors."""
        import torch
        from safetensors.torch import load_file

        if reference.wait(timeout=900) != 0:
            raise ClusterFailed(f"the uninterrupted training failed; see {self.dir / 'logs' / 'uninterrupted-train.log'}")
        local = Path(self.settings.store_dir)
        ours = sorted((local / output.removeprefix(self.store.url + "/")).glob("*.safetensors"))
        theirs = {p.name: p for p in (local / "cluster-test" / "uninterrupted-adapter").glob("*.safetensors")}
        if not ours or {p.name for p in ours} != set(theirs):
            return {"tensors_identical": False, "files": [p.name for p in ours]}
        tensors_same, bytes_same = True, {}
        for p in ours:
            bytes_same[p.name] = p.read_bytes() == theirs[p.name].read_bytes()
            a, b = load_file(str(p)), load_file(str(theirs[p.name]))
            tensors_same &= a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        return {"tensors_identical": bool(tensors_same), "bytes_identical": bytes_same}

    # ------------------------------------------------------------------ backfill
    def backfill(self) -> int:
        say("airflow backfill create --dag-id weekly_report over 3 weeks")
        started = time.monotonic()
        first, last = WEEK_END - timedelta(weeks=4), WEEK_END - timedelta(weeks=2)
        before = {r["dag_run_id"] for r in self.api.runs("weekly_report")}
        self.airflow.run("backfill", "create", "--dag-id", "weekly_report", "--from-date", first.to_iso8601_string(),
                         "--to-date", last.to_iso8601_string())
        deadline = time.monotonic() + 600
        while True:
            new = [r for r in self.api.runs("weekly_report") if r["dag_run_id"] not in before]
            if new and all(r["state"] not in ("queued", "running") for r in new) and len(new) >= 3:
                break
            if time.monotonic() > deadline:
                raise ClusterFailed(f"backfill not done after 600 s: {[(r['dag_run_id'], r['state']) for r in new]}")
            time.sleep(3)
        self.runs += [("weekly_report", r["dag_run_id"]) for r in new]
        weeks = sorted(r["data_interval_start"][:10] for r in new)
        bad = [r["dag_run_id"] for r in new if r["state"] != "success" or r["run_type"] != "backfill"]
        reports = self.warehouse.query("SELECT CAST(week_start AS STRING) AS w, message_ts FROM reports "
                                       "WHERE week_start IN UNNEST(@weeks)", {"weeks": [pendulum.parse(w).date()
                                                                                       for w in weeks]})
        posts = [p for r in new for p in self.posts_for(pendulum.parse(r["data_interval_start"]),
                                                        pendulum.parse(r["data_interval_end"]))]
        self.timings["backfill weekly_report x3"] = round(time.monotonic() - started, 1)
        if len(new) != 3 or bad or len(reports) != 3 or len(posts) != 3:
            raise ClusterFailed(f"backfill: {len(new)} runs {weeks}, not success: {bad}, {len(reports)} report rows, "
                                f"{len(posts)} Slack posts (want 3 each)")
        say(f"  backfill: 3 runs ({', '.join(weeks)}), 3 reports, 3 posts, in {time.monotonic() - started:.0f} s")
        return len(new)

    # ------------------------------------------------------------------ faults 2-4
    def scheduler_killed(self) -> None:
        """Fault 2: SIGKILL the scheduler while a crawl of the next week is running; restart it."""
        week_end = WEEK_END + timedelta(weeks=1)
        started = time.monotonic()
        run_id = self.trigger("crawl_songs", week_end)
        self.api.wait_task("crawl_songs", run_id, "crawl", {"running"}, 300) if self._has_task(
            "crawl_songs", run_id, "crawl") else self._wait_any_running("crawl_songs", run_id)
        killed = self.airflow.components["scheduler"].kill()
        say(f"fault 2: SIGKILLed the scheduler ({killed} processes) mid-run; restarting it")
        time.sleep(3)
        self.airflow.start("scheduler")
        self.finish("crawl_songs", run_id, 600)  # raises unless the run ends success
        tries = {t["task_id"]: t["try_number"] for t in self.api.task_instances("crawl_songs", run_id)}
        self.run_dag("label_songs", week_end - timedelta(days=4))
        self.timings["fault 2 crawl+label"] = round(time.monotonic() - started, 1)
        self.record("scheduler SIGKILL mid-run", survived=True, killed_processes=killed, crawl_tries=tries)

    def _has_task(self, dag_id: str, run_id: str, task_id: str) -> bool:
        return any(t["task_id"] == task_id for t in self.api.task_instances(dag_id, run_id))

    def _wait_any_running(self, dag_id: str, run_id: str, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(t["state"] == "running" for t in self.api.task_instances(dag_id, run_id)):
                return
            time.sleep(0.5)
        raise ClusterFailed(f"no task of {dag_id} {run_id} running after {timeout} s")

    def faults_2_to_4(self) -> None:
        """Fault 4 spends most of its time in two retry delays of 60 s, so faults 2 and 3 run
        meanwhile (other weeks, and no Slack posts that would take its 500s): its run also
        outlives the scheduler's SIGKILL and the broker's restart."""
        slack = self.slack_failing()
        self.scheduler_killed()
        self.redis_restarted()
        slack()

    def redis_restarted(self) -> None:
        """Fault 3: restart Redis while mapped generate shards run (one on the gpu worker, the
        others queued in Redis); the run must finish with every image once."""
        from sleeve_airflow import demo_data

        week_end = WEEK_END + timedelta(weeks=1)
        started = time.monotonic()
        demo_data.seed_requests(self.warehouse, self.settings, week_end - timedelta(days=7), week_end)
        run_id = self.trigger("batch_generate", (week_end + timedelta(days=1)).replace(hour=2), {"shard_size": 5})
        running = self.api.wait_task("batch_generate", run_id, "generate", {"running"}, 300)
        shards = [t for t in self.api.task_instances("batch_generate", run_id) if t["task_id"] == "generate"]
        say(f"fault 3: restarting Redis with {len(shards)} generate shards mapped, {len(running)} running")
        self.redis.restart()
        self.finish("batch_generate", run_id, 900)
        # Every request of the week done, with exactly its images (none lost with the broker).
        requests = self.warehouse.query(
            "SELECT r.request_id, r.num_images, r.status, COUNT(i.image_id) AS images FROM generation_requests r "
            "LEFT JOIN images i ON i.request_id = r.request_id WHERE r.kind = 'demo' AND r.created_at >= @start "
            "AND r.created_at < @end GROUP BY r.request_id, r.num_images, r.status",
            {"start": week_end - timedelta(days=7), "end": week_end})
        short = [r["request_id"] for r in requests if r["status"] != "done" or r["images"] != r["num_images"]]
        self.timings["fault 3 batch_generate"] = round(time.monotonic() - started, 1)
        self.record("Redis restart during mapped batch_generate", survived=len(shards) >= 2 and requests and not short,
                    shards=len(shards), requests=len(requests), images=sum(r["images"] for r in requests),
                    requests_incomplete=short)

    def slack_failing(self):
        """Fault 4: Slack answers 500 to chat.postMessage until two tries of deliver have failed
        (the sender itself retries 3 times per try); the third try posts, once. Returns the
        function that waits for it and records the result."""
        week_end = WEEK_END - timedelta(weeks=5)  # a week nothing else reports
        started = time.monotonic()
        per_try = 4  # one call + the sender's 3 retries on a 5xx
        self.slack.fail_next("chat.postMessage", 500, times=2 * per_try)
        calls_before = len(self.slack.calls("chat.postMessage"))
        run_id = self.trigger("weekly_report", week_end)
        self.in_flight.add(run_id)
        say(f"fault 4: Slack answers 500 to the next {2 * per_try} chat.postMessage calls")

        def finish() -> None:
            self.finish("weekly_report", run_id, 600)
            self.in_flight.discard(run_id)
            tries = {t["task_id"]: t["try_number"] for t in self.api.task_instances("weekly_report", run_id)}
            calls = len(self.slack.calls("chat.postMessage")) - calls_before
            posts = self.posts_for(week_end - timedelta(days=7), week_end)
            self.timings["fault 4 weekly_report"] = round(time.monotonic() - started, 1)
            self.record("Slack 500 twice, then success", survived=tries["deliver"] == 3 and len(posts) == 1,
                        deliver_tries=tries["deliver"], post_calls=calls, posts=len(posts))

        return finish

    def posts_for(self, week_start, week_end) -> list[dict]:
        """Top-level Slack messages of the weekly report of this week."""
        from sleeve.report_render import title

        head = title({"week_start": week_start.to_date_string(), "week_end": week_end.to_date_string()})
        return [m for m in self.slack.messages.values() if not m.get("thread_ts")
                and (m["text"] or "").startswith(head)]


def _stop_on_sigterm(signum, frame):
    raise SystemExit(f"stopped by signal {signum}")  # unwinds through the finally that stops the cluster


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    signal.signal(signal.SIGHUP, _stop_on_sigterm)
    home = Path(os.environ.get("SLEEVE_HOME", REPO / ".sleeve")).resolve()
    report_path = home / "cluster-report.json"
    try:
        prerequisites(install=True)
    except MissingPrerequisite as exc:
        if os.environ.get("CI", "").lower() == "true":
            print(f"test-cluster FAILED: {exc}", file=sys.stderr)
            return 1
        print(f"test-cluster SKIPPED: {exc}")
        return 0
    from slack_server import SlackServer

    started = time.monotonic()
    with SlackServer(token=SLACK_TOKEN) as slack:
        scenario = Scenario(home, slack)
        error = None
        try:
            scenario.start()
            say(f"cluster up in {time.monotonic() - started:.0f} s")
            scenario.weekly_cycle()
            backfill_runs = scenario.backfill()
            scenario.faults_2_to_4()
        except (Exception, SystemExit) as exc:
            error = f"{type(exc).__name__}: {exc}"
            backfill_runs = 0
        finally:
            scenario.stop()
        report = {"runs": len(scenario.runs), "backfill_runs": backfill_runs, "faults": scenario.faults,
                  "seconds": round(time.monotonic() - started, 1), "timings": scenario.timings}
        if error:
            report["error"] = error
    home.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    ok = not error and len(scenario.faults) == 4 and all(f["survived"] and f["duplicates"] == 0
                                                         for f in scenario.faults)
    print(json.dumps({k: v for k, v in report.items() if k != "timings"}, indent=2))
    print(f"test-cluster {'passed' if ok else 'FAILED'} in {report['seconds']:.0f} s; report: {report_path}")
    if error:
        print(f"error: {error}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
