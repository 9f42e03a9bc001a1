from __future__ import annotations

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


class DuckDBWarehouse(Warehouse):
    """The embedded default: one DuckDB file. A connection is opened per call so that several
    Airflow task processes can share the file; a held lock is waited for, not failed on."""

    def __init__(self, path: str | Path, lock_timeout_s: float = 120.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock_timeout_s = lock_timeout_s

    def _connect(self) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(self.path))
                con.execute("SET TimeZone = 'UTC'")
                return con
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)

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
