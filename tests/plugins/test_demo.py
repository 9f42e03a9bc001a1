"""`make demo` / `python -m sleeve_airflow.demo` as an operator meets it: settings checked first,
set-up done when missing, runs dated like scheduled ones, the report's files listed."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pendulum

REPO = Path(__file__).resolve().parents[2]


def bare_env(home: Path, **extra) -> dict:
    """What a shell outside `make` has: no SLEEVE_*, AIRFLOW_* or HF_* settings."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("SLEEVE_", "AIRFLOW", "HF_"))}
    return {**keep, "HOME": str(home.parent), "SLEEVE_HOME": str(home), **extra}


def test_bad_settings_stop_the_demo_in_one_line_before_any_work(tmp_path):
    home = tmp_path / "home"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "sleeve_airflow.demo"], capture_output=True, text=True, cwd=tmp_path,
                         env=bare_env(home, SLEEVE_NOTIFIER="slack", SLEEVE_PII_KEY="a-secret"), timeout=300)
    elapsed = time.monotonic() - started
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("demo cannot start: SLEEVE_NOTIFIER=slack needs Slack credentials") and "SLEEVE_SLACK_TOKEN" in line
    assert not home.exists()  # nothing was set up or run
    assert elapsed < 60, f"{elapsed:.1f} s"  # no Airflow import, no set-up: well under a second when idle


def test_outside_make_the_demo_sets_up_what_it_needs(tmp_path):
    """The one-off set-up (warehouse, tiny model, Airflow DB and its gpu pool) under SLEEVE_HOME,
    with Airflow pointed at this checkout; then the demo's own checks pass."""
    home = tmp_path / "home"
    code = ("import os; from sleeve.settings import get_settings; from sleeve_airflow import demo; "
            "s = get_settings(); demo._airflow_environment(s.home); s.ensure_dirs(); demo._ensure_setup(s); "
            "from sleeve.preflight import check_ready; check_ready(s, ('warehouse', 'store', 'base_model')); "
            "print('AIRFLOW_HOME=' + os.environ['AIRFLOW_HOME']); print('DAGS=' + os.environ['AIRFLOW__CORE__DAGS_FOLDER'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env=bare_env(home), timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"AIRFLOW_HOME={home / 'airflow'}" in out.stdout and f"DAGS={REPO / 'dags'}" in out.stdout
    assert (home / ".ready").exists() and (home / "airflow" / "airflow.db").exists()
    pools = subprocess.run([sys.executable, "-m", "airflow", "pools", "get", "gpu"], capture_output=True, text=True,
                           env={**bare_env(home), "AIRFLOW_HOME": str(home / "airflow")}, timeout=300)
    assert pools.returncode == 0 and "gpu" in pools.stdout
    assert not (tmp_path / "airflow").exists()  # Airflow's default ~/airflow is never created


def test_demo_runs_are_dated_like_scheduled_runs(tmp_path, monkeypatch, airflow_db):
    from airflow.dag_processing.dagbag import DagBag
    from sleeve_airflow import demo

    from tests.report_support import make_report_env

    make_report_env(tmp_path, monkeypatch)
    logical = pendulum.datetime(2026, 1, 19, 3, tz="UTC")
    before = datetime.now(UTC)
    run = demo._run_dag(DagBag(dag_folder=str(REPO / "dags" / "weekly_report.py")), "weekly_report", logical)
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        stored = session.get(DagRun, run.id)
        assert stored.run_after == logical  # what the tasks date things by, as in a scheduled run
        assert before <= stored.start_date <= stored.end_date <= datetime.now(UTC)
        assert stored.end_date - stored.start_date < timedelta(minutes=10)  # not the weeks since the logical date


def test_the_summary_lists_every_file_of_the_report(tmp_path, monkeypatch, capsys):
    from sleeve_airflow import demo

    from sleeve.delivery import Outbox
    from tests.report_support import make_report_env

    env = make_report_env(tmp_path, monkeypatch)
    Outbox(env.settings.outbox_dir).write_report({
        "week_start": "2026-11-09", "week_end": "2026-11-16", "title": "t", "text": "x", "blocks": [],
        "markdown": "# r", "images": {"trend.png": b"1", "ratings.png": b"22", "top_covers.png": b"333"}})
    demo._print_summary(env.warehouse, env.settings, pendulum.datetime(2026, 11, 9, 3, tz="UTC"), 1.0, {})
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.split("Weekly report", 1)[1].splitlines()[1:] if line.strip()]
    assert listed == ["ratings.png", "report.blocks.json", "report.md", "top_covers.png", "trend.png"]
    assert str(env.settings.outbox_dir / "weekly_report" / "2026-11-09") in out
