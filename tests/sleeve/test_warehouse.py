import datetime as dt
import re
from importlib import resources

import pytest
import sqlglot

from sleeve.warehouse import KEYS, WarehouseError
from sleeve.warehouse.base import merge_sql, migrations
from sleeve.warehouse.bigquery_backend import query_parameters

UTC = dt.UTC


def test_migrations_create_every_table_and_rerun_is_noop(warehouse):
    assert warehouse.migrate() == []  # the fixture already applied them
    for table in KEYS:
        assert warehouse.count(table) == 0
    versions = [r["version"] for r in warehouse.query("SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _, _ in migrations()]


def test_upsert_is_idempotent_and_updates(warehouse):
    rows = [
        {"song_id": "s1", "source": "sample", "source_id": "1", "title": "Rain", "first_seen_at": dt.datetime(2026, 1, 1, tzinfo=UTC)},
        {"song_id": "s2", "source": "sample", "source_id": "2", "title": "밤편지", "release_date": dt.date(2017, 3, 24)},
    ]
    assert warehouse.upsert("songs", rows) == 2
    assert warehouse.upsert("songs", rows) == 2
    assert warehouse.count("songs") == 2
    warehouse.upsert("songs", [{"song_id": "s1", "source": "sample", "source_id": "1", "title": "Rain (remaster)"}])
    got = warehouse.query("SELECT title, first_seen_at FROM songs WHERE song_id = @id", {"id": "s1"})
    assert got == [{"title": "Rain (remaster)", "first_seen_at": dt.datetime(2026, 1, 1, tzinfo=UTC)}]


def test_upsert_dedupes_source_rows_last_wins(warehouse):
    warehouse.upsert("reviews", [{"review_id": "r", "image_id": "i", "rating": 2},
                                 {"review_id": "r", "image_id": "i", "rating": 5}])
    assert warehouse.query("SELECT rating FROM reviews") == [{"rating": 5}]


def test_parameters_are_never_formatted_into_sql(warehouse):
    evil = "x'); DROP TABLE songs; --"
    warehouse.upsert("songs", [{"song_id": evil, "source": "s", "source_id": evil, "title": evil}])
    assert warehouse.query("SELECT title FROM songs WHERE song_id = @id", {"id": evil}) == [{"title": evil}]
    assert warehouse.query("SELECT COUNT(*) AS n FROM songs WHERE song_id IN UNNEST(@ids)", {"ids": [evil, "y"]}) == [{"n": 1}]


@pytest.mark.parametrize("table, rows, match", [
    ("nope", [{"a": 1}], "no natural key"),
    ("songs", [{"song_id": "a", "colour": "red"}], "no column"),
    ("songs", [{"title": "no key"}], "missing key"),
])
def test_bad_upserts_fail_clearly(warehouse, table, rows, match):
    with pytest.raises(WarehouseError, match=match):
        warehouse.upsert(table, rows)


def test_every_statement_is_valid_bigquery_and_duckdb():
    texts = [s for _, _, stmts in migrations() for s in stmts]
    texts.append(merge_sql("songs", "_stage_songs", ["song_id", "title"], ("song_id",)))
    for text in texts:
        assert sqlglot.parse_one(text, read="bigquery") is not None
        assert sqlglot.transpile(text, read="bigquery", write="duckdb")


def test_time_keyed_tables_are_partitioned_in_bigquery():
    text = "".join(f.read_text("utf-8") for f in resources.files("sleeve.warehouse").joinpath("migrations").iterdir()
                   if f.name.endswith(".sql"))
    for table in ("songs", "covers", "generation_requests", "images", "reviews", "training_runs"):
        create = re.search(rf"CREATE TABLE IF NOT EXISTS {table} \((.*?)\)\s*(PARTITION BY [^;]+)?;", text, re.S)
        assert create and create.group(2), f"{table} is not partitioned"


def test_bigquery_parameters_are_typed():
    params = {p.name: p for p in query_parameters({
        "s": "x", "i": 3, "f": 1.5, "b": True, "t": dt.datetime(2026, 1, 1, tzinfo=UTC), "d": dt.date(2026, 1, 1),
        "ids": ["a", "b"], "empty": [],
    })}
    assert params["s"].type_ == "STRING" and params["i"].type_ == "INT64" and params["f"].type_ == "FLOAT64"
    assert params["b"].type_ == "BOOL" and params["t"].type_ == "TIMESTAMP" and params["d"].type_ == "DATE"
    assert params["ids"].array_type == "STRING" and params["ids"].values == ["a", "b"]
    assert params["empty"].array_type == "STRING"


def test_bigquery_backend_needs_project_and_dataset():
    from sleeve.warehouse.bigquery_backend import BigQueryWarehouse

    with pytest.raises(WarehouseError, match="project and a dataset"):
        BigQueryWarehouse("", "d")


def test_tables_lists_the_schema(warehouse):
    assert {"songs", "images", "schema_migrations"} <= set(warehouse.tables())


def test_upsert_stages_every_column_type_and_many_rows(warehouse):
    """The rows are staged as one typed list per column: every type round-trips, NULLs stay
    NULL, an int lands in a FLOAT64 column, and thousands of rows go in one upsert."""
    when = dt.datetime(2026, 1, 5, 3, 30, tzinfo=UTC)
    rows = [{"run_id": f"r{i}", "kind": "style", "status": None if i % 2 else "trained", "gpu_seconds": i if i % 3 else 1.5,
             "interval_start": when, "config": '{"a": "밤편지 \\u0000"}'} for i in range(3000)]
    assert warehouse.upsert("training_runs", rows) == 3000
    got = warehouse.query("SELECT run_id, status, gpu_seconds, interval_start, config, finished_at FROM training_runs "
                          "WHERE run_id IN UNNEST(@ids) ORDER BY run_id", {"ids": ["r0", "r1", "r3"]})
    assert got == [
        {"run_id": "r0", "status": "trained", "gpu_seconds": 1.5, "interval_start": when, "config": rows[0]["config"],
         "finished_at": None},
        {"run_id": "r1", "status": None, "gpu_seconds": 1.0, "interval_start": when, "config": rows[0]["config"],
         "finished_at": None},
        {"run_id": "r3", "status": None, "gpu_seconds": 1.5, "interval_start": when, "config": rows[0]["config"],
         "finished_at": None}]
    warehouse.upsert("songs", [{"song_id": "s", "source": "x", "source_id": "1", "release_date": dt.date(2017, 3, 24)}])
    warehouse.upsert("labels", [{"song_id": "s", "labeller_version": "offline-1", "cache_hit": False}])
    assert warehouse.query("SELECT release_date FROM songs") == [{"release_date": dt.date(2017, 3, 24)}]
    assert warehouse.query("SELECT cache_hit FROM labels") == [{"cache_hit": False}]


def test_a_bad_value_fails_the_whole_upsert_and_leaves_nothing(warehouse):
    rows = [{"run_id": "ok", "gpu_seconds": 1.0}, {"run_id": "bad", "gpu_seconds": "not a number"}]
    with pytest.raises(Exception, match="not a number"):
        warehouse.upsert("training_runs", rows)
    assert warehouse.count("training_runs") == 0
    assert warehouse.upsert("training_runs", rows[:1]) == 1  # the connection and staging table were cleaned up


def test_a_column_added_by_a_statement_is_seen_by_the_next_upsert(warehouse):
    warehouse.upsert("songs", [{"song_id": "a", "source": "x", "source_id": "1"}])  # caches the columns
    warehouse.execute("ALTER TABLE songs ADD COLUMN IF NOT EXISTS mood STRING")
    warehouse.upsert("songs", [{"song_id": "a", "source": "x", "source_id": "1", "mood": "calm"}])
    assert warehouse.query("SELECT mood FROM songs") == [{"mood": "calm"}]
