import datetime as dt
import json

from sleeve.stages import record_stage

START = dt.datetime(2026, 11, 9, 3, tzinfo=dt.UTC)
END = START + dt.timedelta(days=7)


def test_record_stage_upserts_one_row_and_keeps_columns_not_given(warehouse):
    began = START + dt.timedelta(days=7, minutes=1)
    record_stage(warehouse, "crawl_songs", "crawl:sample", (START, END), run_id="r1", status="running",
                 started_at=began)
    record_stage(warehouse, "crawl_songs", "crawl:sample", (START, END), status="done", stats={"new": 2, "errors": 0})
    rows = warehouse.query("SELECT run_id, status, stats, started_at, interval_end FROM stage_runs")
    assert len(rows) == 1
    row = rows[0]
    assert (row["run_id"], row["status"], row["started_at"], row["interval_end"]) == ("r1", "done", began, END)
    assert row["stats"] == '{"errors": 0, "new": 2}' and json.loads(row["stats"]) == {"new": 2, "errors": 0}
