"""`make demo-ui` / `make airflow` configure Airflow for a small machine (Makefile exports)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = ("AIRFLOW__CORE__PARALLELISM", "AIRFLOW__API__WORKERS", "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES",
         "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS")


def make_env(**env) -> dict:
    """The environment a recipe of this Makefile runs with."""
    base = {k: v for k, v in os.environ.items() if k not in NAMES and k != "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"}
    show = "show: ; @" + " && ".join(f"echo {n}=$${n}" for n in NAMES)
    out = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), f"--eval={show}", "show"],
                         capture_output=True, text=True, check=True, env={**base, **env})
    return dict(line.split("=", 1) for line in out.stdout.splitlines())


def test_standalone_is_sized_for_a_small_machine():
    env = make_env()
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4" and env["AIRFLOW__API__WORKERS"] == "1"
    assert env["AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES"] == "1"
    # Airflow itself reads them: the SQLite busy timeout reaches the engine's connect args.
    code = ("from airflow.configuration import conf; print(conf.getint('core', 'parallelism'), "
            "conf.getimport('database', 'sql_alchemy_connect_args'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    assert out.stdout.split("\n")[-2].startswith("4 {'timeout': 60")


def test_an_operator_setting_wins_and_postgres_gets_no_sqlite_args():
    env = make_env(AIRFLOW__CORE__PARALLELISM="16", AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql://x/y")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "16" and env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS"] == ""
