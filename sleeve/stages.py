"""Run bookkeeping shared by every stage: one ``stage_runs`` row per (DAG, stage, data
interval), which the weekly report reads for its data and health sections."""

from __future__ import annotations

import json
from datetime import datetime

from sleeve.warehouse import Warehouse


def record_stage(warehouse: Warehouse, dag_id: str, stage: str, interval: tuple[datetime, datetime],
                 **columns) -> None:
    """Upsert the stage's row for ``interval``. ``stats`` (a dict of counters) is stored as
    sorted JSON; the other columns given (run_id, status, started_at, finished_at) are written as
    they are, and columns not given keep their stored values."""
    if isinstance(columns.get("stats"), dict):
        columns["stats"] = json.dumps(columns["stats"], sort_keys=True)
    warehouse.upsert("stage_runs", [{"dag_id": dag_id, "stage": stage, "interval_start": interval[0],
                                     "interval_end": interval[1], **columns}])


def recorded_stats(warehouse: Warehouse, dag_id: str, stage: str, interval_start: datetime) -> dict | None:
    """The stats of the stage's successful row for the interval starting at ``interval_start``."""
    rows = warehouse.query(
        "SELECT stats FROM stage_runs WHERE dag_id = @dag_id AND stage = @stage AND interval_start = @start "
        "AND status = 'success'", {"dag_id": dag_id, "stage": stage, "start": interval_start})
    return json.loads(rows[0]["stats"]) if rows else None
