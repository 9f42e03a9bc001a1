"""The warehouse interface, shared by the DuckDB (default) and BigQuery backends.

SQL is written once, in BigQuery dialect with named ``@parameters``. BigQuery runs it as is;
the DuckDB backend transpiles the same text with sqlglot. No value is ever formatted into SQL:
only identifiers from :data:`KEYS` / the live table schema are, after validation.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from importlib import resources

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class WarehouseError(RuntimeError):
    pass


def ident(name: str) -> str:
    if not _IDENT.match(name):
        raise WarehouseError(f"invalid SQL identifier {name!r}")
    return name


def _migration_files() -> list[tuple[int, str, str]]:
    found = []
    for entry in resources.files("sleeve.warehouse").joinpath("migrations").iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise WarehouseError(f"two migrations share a version number: {sorted(versions)}")
    return sorted(found)


def migrations() -> list[tuple[int, str, list[str]]]:
    """(version, name, statements) for every migrations/NNNN_name.sql, in order."""
    out = []
    for version, name, text in _migration_files():
        code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
        out.append((version, name, [s.strip() for s in code.split(";") if s.strip()]))
    return out


def natural_keys() -> dict[str, tuple[str, ...]]:
    """Natural keys for upserts, declared beside each table in the migrations as
    ``-- @key table: col1, col2`` (a later declaration replaces an earlier one)."""
    keys = {}
    for _, _, text in _migration_files():
        for table, cols in re.findall(r"^--\s*@key\s+(\w+)\s*:\s*([\w, ]+)$", text, re.M):
            keys[ident(table)] = tuple(ident(c.strip()) for c in cols.split(",") if c.strip())
    return keys


KEYS: dict[str, tuple[str, ...]] = natural_keys()


def merge_sql(table: str, staging: str, columns: list[str], key: tuple[str, ...]) -> str:
    """MERGE staged rows into ``table`` on its natural key (BigQuery dialect)."""
    cols = [ident(c) for c in columns]
    on = " AND ".join(f"t.{ident(k)} = s.{k}" for k in key)
    updates = ", ".join(f"{c} = s.{c}" for c in cols if c not in key)
    insert_cols = ", ".join(cols)
    insert_vals = ", ".join(f"s.{c}" for c in cols)
    matched = f" WHEN MATCHED THEN UPDATE SET {updates}" if updates else ""
    return (
        f"MERGE INTO {ident(table)} AS t USING {staging} AS s ON {on}{matched}"
        f" WHEN NOT MATCHED THEN INSERT ({insert_cols}) VALUES ({insert_vals})"
    )


def dedupe_rows(rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """Last row wins per key (a MERGE source must match each target row at most once)."""
    by_key: dict[tuple, dict] = {}
    for row in rows:
        missing = [k for k in key if row.get(k) is None]
        if missing:
            raise WarehouseError(f"row is missing key column(s) {missing}")
        by_key[tuple(row[k] for k in key)] = row
    return list(by_key.values())


class Warehouse(ABC):
    """query / execute / upsert / migrate: the few verbs every stage needs."""

    @abstractmethod
    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        """Run a SELECT (BigQuery dialect, ``@name`` parameters) and return rows as dicts."""

    @abstractmethod
    def execute(self, sql: str, params: dict | None = None) -> None: ...

    @abstractmethod
    def tables(self) -> list[str]:
        """Names of the tables in the warehouse, sorted."""

    @abstractmethod
    def columns(self, table: str) -> list[str]:
        """The table's column names, from the live schema."""

    @abstractmethod
    def _merge(self, table: str, rows: list[dict], columns: list[str], key: tuple[str, ...]) -> None:
        """Stage ``rows`` and MERGE them into ``table`` in one statement."""

    def upsert(self, table: str, rows: list[dict]) -> int:
        """Insert or update ``rows`` by the table's natural key. Idempotent; returns row count."""
        if table not in KEYS:
            raise WarehouseError(f"no natural key declared for table {table!r}; add it to KEYS")
        if not rows:
            return 0
        key = KEYS[table]
        rows = dedupe_rows(rows, key)
        known = set(self.columns(table))
        columns = sorted({c for row in rows for c in row})
        unknown = [c for c in columns if c not in known]
        if unknown:
            raise WarehouseError(f"table {table} has no column(s) {unknown}")
        self._merge(table, [{c: row.get(c) for c in columns} for row in rows], columns, key)
        return len(rows)

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied now. Safe to re-run."""
        self.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version INT64 NOT NULL, name STRING, applied_at TIMESTAMP)"
        )
        done = {r["version"] for r in self.query("SELECT version FROM schema_migrations")}
        applied = []
        for version, name, statements in migrations():
            if version in done:
                continue
            for statement in statements:
                self.execute(statement)
            self.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (@v, @n, CURRENT_TIMESTAMP())",
                {"v": version, "n": name},
            )
            applied.append(version)
        return applied

    def count(self, table: str) -> int:
        return self.query(f"SELECT COUNT(*) AS n FROM {ident(table)}")[0]["n"]
