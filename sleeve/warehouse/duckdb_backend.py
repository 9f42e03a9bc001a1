from __future__ import annotations

import fcntl
import logging
import time
from functools import lru_cache
from pathlib import Path

import duckdb
import sqlglot

from sleeve.warehouse.base import Warehouse, WarehouseError, ident, merge_sql

# sqlglot warns that DuckDB has no PARTITION BY / CLUSTER BY; dropping them is intended.
logging.getLogger("sqlglot").setLevel(logging.ERROR)


@lru_cache(maxsize=512)
def to_duckdb(sql: str) -> str:
    """Transpile one BigQuery-dialect statement to DuckDB (cached: the same texts recur)."""
    statements = sqlglot.transpile(sql, read="bigquery", write="duckdb")
    if len(statements) != 1:
        raise WarehouseError("pass one SQL statement at a time")
    return statements[0]


MAX_POLL_S = 0.25  # how often a waiting process retries the file lock


def waiting_path(path: Path) -> Path:
    """The side file a process holds a shared lock on while it waits for the database's lock,
    so a process that keeps the database open (the web service) can see it and let go."""
    return path.with_name(path.name + ".waiting")


def others_waiting(path: Path) -> bool:
    """True while another process waits for the database's lock (see :func:`waiting_path`)."""
    try:
        with open(waiting_path(path), "a+b") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except OSError:
        return False


class _Waiting:
    """Held (a shared lock on the side file) from the first refused connect until connected."""

    def __init__(self, path: Path):
        self.file = open(waiting_path(path), "a+b")
        try:
            fcntl.flock(self.file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # a holder is probing this instant; the next retry announces again

    def close(self) -> None:
        self.file.close()


class DuckDBWarehouse(Warehouse):
    """The embedded default: one DuckDB file. A connection is opened per call so that several
    Airflow task processes can share the file; a held lock is waited for (up to
    ``lock_timeout_s``, then DuckDB's IOException), and the wait is announced so a holder that
    keeps the file open can yield it."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_timeout_s = lock_timeout_s

    def _connect(self, timeout_s: float | None = None) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + (self.lock_timeout_s if timeout_s is None else timeout_s)
        delay, waiting = 0.05, None
        try:
            while True:
                try:
                    con = duckdb.connect(str(self.path))
                    con.execute("SET TimeZone = 'UTC'")
                    return con
                except duckdb.IOException as exc:
                    if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                        raise
                waiting = waiting or _Waiting(self.path)
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, MAX_POLL_S)
        finally:
            if waiting is not None:
                waiting.close()

    def query(self, sql, params=None):
        with self._connect() as con:
            cur = con.execute(to_duckdb(sql), params or {})
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def execute(self, sql, params=None):
        with self._connect() as con:
            con.execute(to_duckdb(sql), params or {})

    def tables(self):
        with self._connect() as con:
            return sorted(r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                                     "WHERE table_schema = 'main'").fetchall())

    def columns(self, table):
        # Backend-specific catalogue query, so it is written in DuckDB's own dialect.
        with self._connect() as con:
            rows = con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = $t ORDER BY ordinal_position",
                {"t": ident(table)},
            ).fetchall()
        if not rows:
            raise WarehouseError(f"table {table!r} does not exist; run the migrations (sleeve migrate)")
        return [r[0] for r in rows]

    def _merge(self, table, rows, columns, key):
        staging = f"_stage_{table}"
        placeholders = ", ".join(f"${c}" for c in columns)
        with self._connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"CREATE TEMP TABLE {staging} AS SELECT {', '.join(columns)} FROM {table} LIMIT 0")
                con.executemany(f"INSERT INTO {staging} ({', '.join(columns)}) VALUES ({placeholders})", rows)
                con.execute(to_duckdb(merge_sql(table, staging, columns, key)))
                con.execute(f"DROP TABLE {staging}")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
