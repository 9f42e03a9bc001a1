"""Airflow configuration for the local, single-machine set-up (`make demo-ui`, `make airflow`).

The Makefile points ``[database] sql_alchemy_connect_args`` here when Airflow's metadata DB is
the default SQLite file: with several processes (scheduler, DAG processor, API server and a CLI
command such as ``airflow backfill create``) writing to one SQLite file, a writer that finds it
locked waits up to this long instead of failing at once with "database is locked".
"""

SQLITE_CONNECT_ARGS = {"timeout": 60}
