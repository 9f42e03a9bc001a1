"""SLEEVE_WAREHOUSE=bigquery through the real google-cloud-bigquery client against bqemulator
(DuckDB + SQLGlot behind BigQuery's REST API) on 127.0.0.1 (see tests/bqemu.py).

What this proves: the client calls Sleeve makes, the REST protocol, the query-parameter types,
and that the DDL, queries and MERGE statements parse and run as BigQuery receives them. What
it cannot: BigQuery's own engine (the emulator runs them on DuckDB); its numerics are not
trusted (it answered APPROX_QUANTILES wrongly), and it keeps no partitioning metadata.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlglot
from sqlglot import exp

from tests import bqemu

PROJECT = "sleeve-emu"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def bq_emulator():
    """The emulator for the whole session; when its environment cannot be built (no package
    index, no wheel for this platform) every test here skips and says why."""
    try:
        bqemu.ensure_venv()
    except (subprocess.CalledProcessError, OSError, StopIteration) as exc:
        pytest.skip(f"bqemulator could not be installed into .venv-bqemu ({exc}); "
                    "`python -m tests.bqemu` shows pip's error")
    with bqemu.emulator(PROJECT) as url:
        yield url


@pytest.fixture
def bq(bq_emulator, monkeypatch):
    """A fresh dataset (not created beforehand: migrate must create it), migrated."""
    from sleeve.warehouse.bigquery_backend import BigQueryWarehouse

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    warehouse = BigQueryWarehouse(PROJECT, f"t_{uuid.uuid4().hex[:10]}")
    applied = warehouse.migrate()
    assert applied and applied == sorted(applied)
    bqemu.sync_added_columns(warehouse)
    return warehouse


def test_emulator_needs_the_added_columns_synced(bq_emulator, monkeypatch):
    """The one emulator gap the fixture works around (tests/bqemu.py): after the migrations,
    the columns added by ALTER TABLE are in the data but not in the table metadata. When a
    new bqemulator fixes that, this fails: drop sync_added_columns then."""
    from sleeve.warehouse.bigquery_backend import BigQueryWarehouse

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    warehouse = BigQueryWarehouse(PROJECT, f"t_{uuid.uuid4().hex[:10]}")
    warehouse.migrate()
    added = {f"{t}.{c}" for t, c, _ in bqemu.added_columns()}
    assert "covers.updated_at" in added and len(added) >= 10
    assert set(bqemu.sync_added_columns(warehouse)) == added
    assert bqemu.sync_added_columns(warehouse) == []
    assert "updated_at" in warehouse.columns("covers")
    with pytest.raises(Exception, match="no_such"):  # noqa: B017 - the emulator's error: the column is not there
        warehouse.query("SELECT no_such FROM covers LIMIT 0")


def test_migrations_create_the_dataset_every_table_and_rerun_is_noop(bq):
    from sleeve.warehouse.base import KEYS

    assert set(KEYS) <= set(bq.tables())
    assert bq.migrate() == []
    versions = [r["version"] for r in bq.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == sorted(set(versions))


def _partition_columns() -> dict[str, str]:
    """table -> the column its migration partitions by (``PARTITION BY DATE(col)`` or ``col``)."""
    from sleeve.warehouse.base import migrations

    out = {}
    for _, _, statements in migrations():
        for statement in statements:
            tree = sqlglot.parse_one(statement, read="bigquery")
            prop = tree.find(exp.PartitionedByProperty)
            if isinstance(tree, exp.Create) and prop is not None:
                out[tree.find(exp.Table).name] = next(prop.find_all(exp.Column)).name
    return out


def test_partition_columns_have_partitionable_types_in_the_live_schema(bq):
    """BigQuery partitions by day only on a DATE/TIMESTAMP/DATETIME column; the emulator keeps
    no partitioning metadata, so the live schema it built from our DDL is checked instead."""
    partitioned = _partition_columns()
    assert {"songs", "images", "reviews", "reports"} <= set(partitioned) or len(partitioned) >= 10
    for table, column in partitioned.items():
        types = {f.name: f.field_type for f in bq.client.get_table(f"{PROJECT}.{bq.dataset}.{table}").schema}
        assert types.get(column) in ("DATE", "TIMESTAMP", "DATETIME"), (table, column, types.get(column))


def test_partition_check_rejects_a_string_partition_column(bq):
    """The check above must be able to fail: a table partitioned by a STRING column."""
    bq.execute("CREATE TABLE IF NOT EXISTS bad_part (k STRING, at STRING)")
    types = {f.name: f.field_type for f in bq.client.get_table(f"{PROJECT}.{bq.dataset}.bad_part").schema}
    assert types["at"] not in ("DATE", "TIMESTAMP", "DATETIME")


def test_every_parameter_type_round_trips(bq):
    """Every type Sleeve's columns use (no BYTES column exists: the emulator answers a BYTES
    parameter as its base64 STRING, so it is left out)."""
    when = dt.datetime(2026, 11, 9, 3, 4, 5, 123456, tzinfo=dt.UTC)
    params = {"i": 42, "f": 0.25, "b": True, "s": "노래 'quoted'", "d": dt.date(2026, 11, 9), "t": when,
              "n": decimal.Decimal("1.50"), "ids": ["a", "b"], "days": [dt.date(2026, 1, 1)]}
    row = bq.query("SELECT @i AS i, @f AS f, @b AS b, @s AS s, @d AS d, @t AS t, @n AS n, "
                   "@ids AS ids, @days AS days", params)[0]
    assert row == params


def test_parameters_are_data_never_sql(bq):
    bq.upsert("users", [{"user_id": "u1", "email_masked": "a***@example.com"}])
    hostile = "u1' OR '1'='1"
    assert bq.query("SELECT user_id FROM users WHERE user_id = @u", {"u": hostile}) == []
    assert bq.query("SELECT user_id FROM users WHERE user_id IN UNNEST(@ids)", {"ids": ["u1", hostile]}) == [
        {"user_id": "u1"}]


def test_merge_upserts_insert_update_and_leave_nothing_behind(bq):
    at = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)
    song = {"song_id": "s1", "source": "sample", "source_id": "1", "title": "첫 곡", "release_date": dt.date(2020, 1, 2),
            "first_seen_at": at, "updated_at": at}
    assert bq.upsert("songs", [song, {**song, "song_id": "s2", "source_id": "2", "title": None}]) == 2
    assert bq.upsert("songs", [{**song, "title": "renamed", "updated_at": at + dt.timedelta(hours=1)}]) == 1
    rows = bq.query("SELECT song_id, title, release_date, first_seen_at, updated_at FROM songs ORDER BY song_id")
    assert rows == [
        {"song_id": "s1", "title": "renamed", "release_date": dt.date(2020, 1, 2), "first_seen_at": at,
         "updated_at": at + dt.timedelta(hours=1)},
        {"song_id": "s2", "title": None, "release_date": dt.date(2020, 1, 2), "first_seen_at": at, "updated_at": at}]
    # A second identical upsert changes nothing, and the MERGE left no table behind.
    bq.upsert("songs", [{**song, "title": "renamed", "updated_at": at + dt.timedelta(hours=1)}])
    assert bq.count("songs") == 2
    assert not [t for t in bq.client.list_tables(f"{PROJECT}.{bq.dataset}") if t.table_id.startswith("_stage")]


def test_merge_upserts_more_rows_than_one_batch(bq, monkeypatch):
    from sleeve.warehouse import bigquery_backend

    monkeypatch.setattr(bigquery_backend, "MERGE_BATCH", 7)
    rows = [{"user_id": f"u{i:03d}", "email_masked": f"{i}***@example.com", "is_demo": i % 2 == 0}
            for i in range(23)]
    assert bq.upsert("users", rows) == 23
    assert bq.count("users") == 23
    assert bq.query("SELECT COUNT(*) AS n FROM users WHERE is_demo")[0]["n"] == 12


@pytest.mark.parametrize("rows, match", [
    ([{"user_id": "u1", "no_such_column": 1}], "no column"),
    ([{"email_masked": "x"}], "missing key"),
])
def test_bad_upserts_fail_clearly_before_reaching_bigquery(bq, rows, match):
    from sleeve.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match=match):
        bq.upsert("users", rows)
    assert bq.count("users") == 0


def test_a_wrongly_typed_value_is_refused_and_writes_nothing(bq):
    """BigQuery (and the client) reject a value that does not fit the column's type; the
    whole MERGE is one statement, so no part of the batch lands."""
    good = {"user_id": "u1", "email_masked": "a***@example.com", "created_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)}
    with pytest.raises(Exception):  # noqa: B017 - the client's or the server's error, either is a refusal
        bq.upsert("users", [good, {**good, "user_id": "u2", "created_at": "not a timestamp"}])
    assert bq.count("users") == 0


def test_the_demo_cycle_runs_on_the_bigquery_warehouse(bq_emulator, airflow_db, tiny_model, tmp_path, monkeypatch):
    """`make demo`'s weekly cycle (every DAG through dag.test) with SLEEVE_WAREHOUSE=bigquery:
    all warehouse work goes through the client to the emulator."""
    dataset = f"demo_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "SLEEVE_HOME": str(tmp_path / "home"), "SLEEVE_BASE_MODEL": str(tiny_model),
           "SLEEVE_WAREHOUSE": "bigquery", "SLEEVE_BQ_PROJECT": PROJECT, "SLEEVE_BQ_DATASET": dataset,
           "BIGQUERY_EMULATOR_HOST": bq_emulator}
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bq_emulator)
    from sleeve.warehouse.bigquery_backend import BigQueryWarehouse

    warehouse = BigQueryWarehouse(PROJECT, dataset)
    warehouse.migrate()  # here, to sync the metadata (see above); the demo's own migrate has nothing left
    bqemu.sync_added_columns(warehouse)
    done = subprocess.run([sys.executable, "-m", "sleeve_airflow.demo"], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=1500)
    log = tmp_path / "home" / "demo.log"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + (log.read_text()[-5000:] if log.exists() else "")
    counts = {t: warehouse.count(t) for t in ("songs", "labels", "prompts", "images", "reviews", "model_versions",
                                              "training_runs", "reports")}
    assert not (tmp_path / "home" / "warehouse.duckdb").exists(), "the demo fell back to DuckDB"
    assert all(counts.values()), counts
    assert counts["reports"] == 1
    timing = json.loads((tmp_path / "home" / "demo_timing.json").read_text())
    print(f"demo cycle on the emulator: {timing['total_s']} s")
