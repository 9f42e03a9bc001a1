"""`make demo`: one complete weekly cycle through the real DAGs, offline, no credentials.

crawl_songs -> label_songs -> (demo users + requests) -> batch_generate -> (demo reviews)
-> weekly_retrain -> personalize (one demo user) -> product_shots (+ reviews) -> weekly_report

Each DAG runs with ``dag.test()`` for a fixed demo week, so running the demo twice leaves the
same state; each run is dated as the scheduler would date it (``run_after`` = its logical date,
start = when it really started), so the UI shows ordinary runs. Airflow's task logs go to
$SLEEVE_HOME/demo.log; the terminal gets one line a step and, at the end, where everything is.

``make demo`` is the usual way in. Run directly (``python -m sleeve_airflow.demo`` from the
repository root, inside .venv), it sets the same Airflow environment the Makefile does and runs
the one-off set-up (``python -m sleeve.cli init``) when SLEEVE_HOME is not prepared yet. Settings
are checked first: a problem is one line on stderr and exit code 2, before any work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum

DEMO_WEEK_END = pendulum.datetime(2026, 11, 16, 3, tz="UTC")  # the Monday closing the demo week
REPO = Path(__file__).resolve().parents[2]


class DemoFailed(RuntimeError):
    pass


# What the Makefile exports, for a demo started without make (Airflow reads these on import).
AIRFLOW_ENV = {
    "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DIFFUSERS_VERBOSITY": "error",
    "TRANSFORMERS_VERBOSITY": "error",
}
DEMO_NEEDS = ("notifier", "labeller", "gpu")  # checked before the set-up; the rest after it
DEMO_REPORT_CONF = {"top_min_reviews": 1}  # each demo cover has one review (by the user who asked)


def _airflow_environment(home: Path) -> None:
    os.environ.setdefault("AIRFLOW_HOME", str(home / "airflow"))
    for name, value in AIRFLOW_ENV.items():
        os.environ.setdefault(name, value)


def _ensure_setup(settings) -> None:
    """The one-off set-up `make setup` does, when it has not been done for this SLEEVE_HOME."""
    airflow_db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
    uses_default_db = not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    if (settings.home / ".ready").exists() and (airflow_db.exists() or not uses_default_db):
        return
    from sleeve import cli

    print(f"SLEEVE_HOME {settings.home} is not set up yet: running `python -m sleeve.cli init` (once, ~1 min)")
    if cli.main(["init"]) != 0:
        raise DemoFailed("the set-up failed; run `make setup` to see why")
    (settings.home / ".ready").touch()


def _quiet_airflow_logs(log_path: Path) -> None:
    handler = logging.FileHandler(log_path, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(logging.INFO)


def _say(text: str, end: str = "\n") -> None:
    """Progress goes to the terminal even while Airflow's output is redirected to the log."""
    sys.__stdout__.write(text + end)
    sys.__stdout__.flush()


@contextlib.contextmanager
def _step(name: str, timings: dict):
    _say(f"-> {name} ...", end="")
    started = time.perf_counter()
    try:
        yield
    except Exception:
        _say(" FAILED")
        raise
    timings[name] = time.perf_counter() - started
    _say(f" done in {timings[name]:.1f} s")


def _run_dag(dagbag, dag_id: str, logical_date: datetime, conf: dict | None = None, log_path: Path | None = None):
    dag = dagbag.get_dag(dag_id)
    if dag is None:
        raise DemoFailed(f"DAG {dag_id} not found (import errors: {dagbag.import_errors})")
    started = datetime.now(UTC)
    # run_after = the logical date, as for a scheduled run: whatever a task dates by the run
    # (a promotion, say) is dated in the demo week, not by the wall clock of the demo.
    run = dag.test(logical_date=logical_date, run_after=logical_date, run_conf=conf or {})
    if run is None or str(run.state) != "success":
        raise DemoFailed(f"{dag_id} ended in state {getattr(run, 'state', None)}; see {log_path}")
    _date_like_a_scheduled_run(run, started)
    return run


def _date_like_a_scheduled_run(run, started: datetime) -> None:
    """dag.test() starts a run at its logical date, so the UI would show a run of days or weeks:
    give it the time it really started, as the scheduler would."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        stored = session.get(DagRun, run.id)
        stored.start_date = stored.queued_at = started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--week-end", default=DEMO_WEEK_END.to_iso8601_string(),
                        help="the Monday 03:00 UTC that closes the demo week (default: %(default)s)")
    args = parser.parse_args(argv)

    from sleeve.preflight import check_ready
    from sleeve.settings import get_settings

    settings = get_settings()
    _airflow_environment(settings.home)  # before anything imports Airflow
    check_ready(settings, DEMO_NEEDS, connection=_connection)  # a problem fails in the first second
    settings.ensure_dirs()
    _ensure_setup(settings)
    check_ready(settings, ("warehouse", "store", "base_model"))

    from sleeve.warehouse import open_warehouse

    warehouse = open_warehouse(settings)
    warehouse.migrate()
    log_path = settings.home / "demo.log"
    _quiet_airflow_logs(log_path)

    week_end = pendulum.parse(args.week_end)
    week_start = week_end - timedelta(days=7)
    print(f"Sleeve demo: week {week_start.to_date_string()} .. {week_end.to_date_string()} "
          f"(SLEEVE_HOME={settings.home}, logs: {log_path})")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    with (open(log_path, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log),
          warm_job_server(settings)):
        _weekly_cycle(warehouse, settings, week_start, week_end, timings, log_path)
    total = time.perf_counter() - started
    _print_summary(warehouse, settings, week_start, total, timings)
    return 0


@contextlib.contextmanager
def warm_job_server(settings):
    """The GPU jobs of the block run on a warm job server (:mod:`sleeve.jobserver`) started for
    it, unless one is configured already or jobs run in pods."""
    if settings.gpu_job_server or settings.gpu_executor == "kubernetes":
        yield settings.gpu_job_server
        return
    from sleeve.jobserver import running_server
    from sleeve.settings import get_settings

    with running_server(settings.home / "run" / "jobs.sock") as sock:
        os.environ["SLEEVE_GPU_JOB_SERVER"] = sock
        get_settings.cache_clear()
        try:
            yield sock
        finally:
            os.environ.pop("SLEEVE_GPU_JOB_SERVER", None)
            get_settings.cache_clear()


def _weekly_cycle(warehouse, settings, week_start, week_end, timings: dict, log_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from sleeve.store import open_store
    from sleeve_airflow import demo_data

    dagbag = DagBag(dag_folder=str(REPO / "dags"))
    if dagbag.import_errors:
        raise DemoFailed(f"DAG import errors: {dagbag.import_errors}")
    inside_week = week_start + timedelta(days=3)

    with _step("crawl_songs (sample catalogue over loopback HTTP)", timings):
        _run_dag(dagbag, "crawl_songs", week_end, log_path=log_path)
    with _step("label_songs (offline labeller, prompts)", timings):
        _run_dag(dagbag, "label_songs", inside_week, log_path=log_path)
    with _step("demo users and generation requests", timings):
        demo_data.seed_requests(warehouse, settings, week_start, week_end)
    with _step("batch_generate (tiny SDXL on CPU)", timings):
        # Daily at 02:00: the first run closing after the week renders everything requested in it.
        _run_dag(dagbag, "batch_generate", (week_end + timedelta(days=1)).replace(hour=2), log_path=log_path)
    with _step("demo reviews", timings):
        demo_data.seed_reviews(warehouse, week_start, week_end)
    with _step("weekly_retrain (snapshot, LoRA, evaluate, gate)", timings):
        _run_dag(dagbag, "weekly_retrain", week_end, log_path=log_path)
    with _step("personalize (DreamBooth LoRA for one demo user)", timings):
        request_id = demo_data.seed_personalization(warehouse, settings, open_store(settings.store_url), week_start)
        _run_dag(dagbag, "personalize", inside_week, conf={"request_ids": [request_id], "steps": 10},
                 log_path=log_path)
    with _step("product_shots (synthetic product photos, one Korean)", timings):
        from inference.product_samples import upload_samples

        products = upload_samples(open_store(settings.store_url), size=256, keys=("mug", "bottle"))
        _run_dag(dagbag, "product_shots", inside_week, conf={"products": products, "positions": ["centre", "left"],
                                                            "variants": 1}, log_path=log_path)
        demo_data.seed_product_reviews(warehouse, settings, week_start, week_end)
    with _step("weekly_report (outbox)", timings):
        _run_dag(dagbag, "weekly_report", week_end, conf=DEMO_REPORT_CONF, log_path=log_path)


def _print_summary(warehouse, settings, week_start, total: float, timings: dict) -> None:
    print(f"\nWeekly cycle finished in {total:.1f} s.\n\nWarehouse ({settings.warehouse_path}):")
    for table in warehouse.tables():
        print(f"  {table:<28} {warehouse.count(table):>6} rows")
    print(f"\nObject store: {settings.store_url}")
    if settings.store_dir.exists():
        for folder in sorted(p for p in settings.store_dir.iterdir() if p.is_dir()):
            n = sum(1 for f in folder.rglob("*") if f.is_file())
            print(f"  {folder.name + '/':<28} {n:>6} objects")
    folder = settings.outbox_dir / "weekly_report" / week_start.to_date_string()
    print(f"\nWeekly report ({'outbox' if settings.notifier == 'outbox' else 'outbox copy; sent to Slack'}): {folder}")
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        print(f"  {path.name:<28} {path.stat().st_size:>8} bytes")
    pending = [p for p in (settings.outbox_dir / "alerts").glob("*.json")
               if json.loads(p.read_text()).get("delivery", {}).get("status") == "pending"]
    if pending:
        print(f"  {len(pending)} failure alert(s) pending in {settings.outbox_dir / 'alerts'}")
    timing = {"total_s": round(total, 2), "steps": {k: round(v, 2) for k, v in timings.items()}}
    (settings.home / "demo_timing.json").write_text(json.dumps(timing, indent=2))


def _connection(conn_id: str):
    """An Airflow Connection (from AIRFLOW_CONN_* or the metadata DB), or None. Importing Airflow
    takes seconds, so a connection that is defined nowhere is answered without it: no
    environment variable and no row in the local SQLite metadata DB."""
    import sqlite3

    from sleeve_airflow.preflight import airflow_connection

    if f"AIRFLOW_CONN_{conn_id.upper()}" not in os.environ and not os.environ.get("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"):
        db = Path(os.environ["AIRFLOW_HOME"]) / "airflow.db"
        if not db.exists():
            return None
        try:
            with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as con:
                if con.execute("SELECT 1 FROM connection WHERE conn_id = ?", (conn_id,)).fetchone() is None:
                    return None
        except sqlite3.Error:
            pass  # let Airflow answer
    return airflow_connection(conn_id)


def run() -> int:
    """``main`` as a command: a settings problem is one line and exit code 2, a failed step exit 1."""
    from sleeve.settings import SettingsError

    try:
        return main()
    except SettingsError as exc:
        print(f"demo cannot start: {exc}", file=sys.stderr)
        return 2
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(run())
