"""The week's numbers for the weekly report, gathered from the warehouse.

``build_report(warehouse, week_start, week_end)`` reads what every stage recorded for the
half-open window [week_start, week_end) and returns a JSON-ready dict: activity and ratings,
the top-rated covers, what retraining did, data (crawl, labelling), and health (failures,
durations, GPU time). An empty week gives zeros and ``None`` means, never an error. No
personal data is read: no emails, no photos, no user ids (only a distinct-user count).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from datetime import datetime

from sleeve.warehouse import Warehouse

log = logging.getLogger(__name__)

RATINGS = (1, 2, 3, 4, 5)
CRAWL_KEYS = ("fetched", "new", "updated", "unchanged", "quarantined", "errors")
LABEL_KEYS = ("songs", "labelled", "skipped", "llm", "offline", "fallbacks", "prompt_tokens",
              "completion_tokens", "cache_hits")
GENERATE_KEYS = ("requests", "images", "failed", "skipped_existing", "gpu_seconds")
PERSONALIZE_KEYS = ("requests", "trained", "failed", "images", "gpu_seconds")
WINDOW = "created_at >= @start AND created_at < @end"


def _stats(raw) -> dict:
    """A stage_runs.stats / metrics JSON string as a dict; a malformed one counts as empty."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        log.warning("ignoring malformed JSON stats: %.80r", raw)
        return {}
    return value if isinstance(value, dict) else {}


def _json_list(raw) -> list:
    try:
        value = json.loads(raw) if raw else []
    except (TypeError, ValueError):
        return [str(raw)]
    return value if isinstance(value, list) else [value]


def _sum(rows: list[dict], keys: tuple[str, ...]) -> dict:
    totals = dict.fromkeys(keys, 0)
    for row in rows:
        for key in keys:
            value = row.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                totals[key] += value
    return totals


def _seconds(start, end) -> float | None:
    return (end - start).total_seconds() if start is not None and end is not None else None


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def ratings(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    """Distribution of valid ratings (1..5), their mean, and how many were out of range."""
    rows = warehouse.query(
        f"SELECT rating, COUNT(*) AS n FROM reviews WHERE {WINDOW} GROUP BY rating",
        {"start": start, "end": end},
    )
    distribution = dict.fromkeys(RATINGS, 0)
    invalid = 0
    for row in rows:
        if row["rating"] in distribution:
            distribution[row["rating"]] = row["n"]
        else:
            invalid += row["n"]
    count = sum(distribution.values())
    mean = sum(r * n for r, n in distribution.items()) / count if count else None
    return {"distribution": distribution, "count": count, "mean": mean, "invalid": invalid}


def activity(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    params = {"start": start, "end": end}
    requests = warehouse.query(f"SELECT COUNT(*) AS n FROM generation_requests WHERE {WINDOW}", params)[0]["n"]
    images = warehouse.query(f"SELECT COUNT(*) AS n FROM images WHERE {WINDOW}", params)[0]["n"]
    reviews = warehouse.query(f"SELECT COUNT(*) AS n FROM reviews WHERE {WINDOW}", params)[0]["n"]
    users = warehouse.query(
        "SELECT COUNT(DISTINCT user_id) AS n FROM ("
        f" SELECT user_id FROM generation_requests WHERE {WINDOW}"
        f" UNION ALL SELECT user_id FROM reviews WHERE {WINDOW}"
        ") AS active WHERE user_id IS NOT NULL",
        params,
    )[0]["n"]
    return {"requests": requests, "images": images, "reviews": reviews, "users": users}


def top_covers(warehouse: Warehouse, start: datetime, end: datetime, limit: int = 8) -> list[dict]:
    """The week's best-rated images (by mean of the week's valid ratings, then review count),
    with their song for the caption."""
    rows = warehouse.query(
        "SELECT r.image_id, AVG(r.rating) AS rating, COUNT(*) AS reviews,"
        " ANY_VALUE(i.thumb_uri) AS thumb_uri, ANY_VALUE(i.uri) AS uri,"
        " ANY_VALUE(i.model_version) AS model_version,"
        " ANY_VALUE(s.title) AS title, ANY_VALUE(s.artist) AS artist"
        " FROM reviews AS r"
        " JOIN images AS i ON i.image_id = r.image_id"
        " LEFT JOIN generation_requests AS g ON g.request_id = i.request_id"
        " LEFT JOIN prompts AS p ON p.prompt_id = i.prompt_id"
        " LEFT JOIN songs AS s ON s.song_id = COALESCE(g.song_id, p.song_id)"
        " WHERE r.created_at >= @start AND r.created_at < @end AND r.rating BETWEEN 1 AND 5"
        " GROUP BY r.image_id"
        " ORDER BY rating DESC, reviews DESC, r.image_id"
        " LIMIT @limit",
        {"start": start, "end": end, "limit": limit},
    )
    return [{**row, "rating": float(row["rating"]), "title": row["title"] or "(unknown song)"} for row in rows]


def model(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    """Retraining runs for the week, the production version now, and any rollback: a version
    that became production again this week while a newer one was retired this week."""
    runs = warehouse.query(
        "SELECT run_id, kind, status, reason, metrics, decision, decision_reasons, model_version, gpu_seconds,"
        " started_at, finished_at FROM training_runs"
        " WHERE interval_start >= @start AND interval_start < @end ORDER BY started_at, run_id",
        {"start": start, "end": end},
    )
    production = warehouse.query(
        "SELECT version, kind, base_model, metrics, training_run_id, created_at, updated_at FROM model_versions"
        " WHERE alias = 'production' AND COALESCE(kind, 'style') != 'dreambooth'"
        " ORDER BY updated_at DESC, created_at DESC LIMIT 1",
    )
    changed = warehouse.query(
        "SELECT version, alias, status, created_at FROM model_versions"
        " WHERE updated_at >= @start AND updated_at < @end AND COALESCE(kind, 'style') != 'dreambooth'",
        {"start": start, "end": end},
    )
    rollbacks = []
    for row in changed:
        if row["alias"] != "production":
            continue
        retired = [c["version"] for c in changed
                   if c["alias"] != "production" and c["created_at"] and row["created_at"]
                   and c["created_at"] > row["created_at"]]
        if retired:
            rollbacks.append({"restored": row["version"], "retired": sorted(retired)})
    prod = production[0] if production else None
    return {
        "canary": canary(warehouse, start, end),
        "runs": [{
            "run_id": r["run_id"], "kind": r["kind"], "status": r["status"], "reason": r["reason"],
            "metrics": _stats(r["metrics"]), "decision": r["decision"],
            "decision_reasons": _json_list(r["decision_reasons"]), "model_version": r["model_version"],
            "gpu_seconds": r["gpu_seconds"] or 0.0, "duration_s": _seconds(r["started_at"], r["finished_at"]),
        } for r in runs],
        "production": None if prod is None else {
            "version": prod["version"], "base_model": prod["base_model"], "metrics": _stats(prod["metrics"]),
            "since": _iso(prod["updated_at"] or prod["created_at"]),
        },
        "promoted": sorted(c["version"] for c in changed if c["alias"] == "production"),
        "rollbacks": rollbacks,
    }


def canary(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    """The users' verdict on the canary given for this week's ratings (both arms' means, the
    interval, the decision), and the canary serving now, if any."""
    rows = warehouse.query("SELECT * FROM canary_decisions WHERE interval_start >= @start AND interval_start < @end"
                           " ORDER BY decided_at, version", {"start": start, "end": end})
    serving = warehouse.query("SELECT version, canary_of, canary_started_at FROM model_versions"
                              " WHERE alias = 'canary' ORDER BY version")
    return {
        "decisions": [{"version": r["version"], "production_version": r["production_version"],
                       "decision": r["decision"], "reason": r["reason"], "evidence": _stats(r["evidence"])}
                      for r in rows],
        "serving": [{"version": r["version"], "against": r["canary_of"], "since": _iso(r["canary_started_at"])}
                    for r in serving],
    }


def _stage_rows(warehouse: Warehouse, start: datetime, end: datetime) -> list[dict]:
    return warehouse.query(
        "SELECT dag_id, stage, status, stats, started_at, finished_at FROM stage_runs"
        " WHERE interval_start >= @start AND interval_start < @end ORDER BY dag_id, stage, interval_start",
        {"start": start, "end": end},
    )


def data(stage_rows: list[dict]) -> dict:
    crawl: dict[str, list[dict]] = defaultdict(list)
    by_stage: dict[str, list[dict]] = defaultdict(list)
    for row in stage_rows:
        stats = _stats(row["stats"])
        if row["stage"].startswith("crawl:"):
            crawl[row["stage"].removeprefix("crawl:")].append(stats)
        else:
            by_stage[row["stage"]].append(stats)
    return {
        "crawl": {source: _sum(rows, CRAWL_KEYS) for source, rows in sorted(crawl.items())},
        "crawl_total": _sum([s for rows in crawl.values() for s in rows], CRAWL_KEYS),
        "label": _sum(by_stage["label"], LABEL_KEYS),
        "generate": _sum(by_stage["generate"], GENERATE_KEYS),
        "personalize": _sum(by_stage["personalize"], PERSONALIZE_KEYS),
    }


def health(warehouse: Warehouse, stage_rows: list[dict], training_runs: list[dict],
           start: datetime, end: datetime) -> dict:
    failures = warehouse.query(
        "SELECT dag_id, task_id, error, COUNT(*) AS tries, COUNT(DISTINCT run_id) AS runs FROM task_failures"
        " WHERE failed_at >= @start AND failed_at < @end GROUP BY dag_id, task_id, error"
        " ORDER BY dag_id, task_id, error",
        {"start": start, "end": end},
    )
    failed_runs = warehouse.query(
        "SELECT COUNT(DISTINCT CONCAT(dag_id, '/', run_id)) AS n FROM task_failures"
        " WHERE failed_at >= @start AND failed_at < @end",
        {"start": start, "end": end},
    )[0]["n"]
    stages: dict[tuple[str, str], dict] = {}
    gpu = defaultdict(float)
    for row in stage_rows:
        entry = stages.setdefault((row["dag_id"], row["stage"]),
                                  {"dag_id": row["dag_id"], "stage": row["stage"], "runs": 0, "failed": 0,
                                   "total_s": 0.0, "max_s": 0.0})
        entry["runs"] += 1
        entry["failed"] += row["status"] == "failed"
        seconds = _seconds(row["started_at"], row["finished_at"]) or 0.0
        entry["total_s"] += seconds
        entry["max_s"] = max(entry["max_s"], seconds)
        gpu_seconds = _stats(row["stats"]).get("gpu_seconds")
        if isinstance(gpu_seconds, (int, float)):
            gpu[row["stage"]] += gpu_seconds
    for run in training_runs:
        gpu[f"train:{run['kind'] or 'style'}"] += run["gpu_seconds"]
    return {
        "failures": failures,
        "failed_runs": failed_runs,
        "failed_stages": sum(e["failed"] for e in stages.values()),
        "stages": list(stages.values()),
        "gpu_seconds": dict(sorted(gpu.items())),
        "gpu_seconds_total": sum(gpu.values()),
    }


def build_report(warehouse: Warehouse, week_start: datetime, week_end: datetime, top: int = 8) -> dict:
    """Everything the weekly report says about [week_start, week_end), as a JSON-ready dict."""
    if week_end <= week_start:
        raise ValueError(f"week_end {week_end} must be after week_start {week_start}")
    prev_start = week_start - (week_end - week_start)
    week = ratings(warehouse, week_start, week_end)
    previous = ratings(warehouse, prev_start, week_start)
    week["previous_mean"] = previous["mean"]
    week["change"] = (week["mean"] - previous["mean"]
                      if week["mean"] is not None and previous["mean"] is not None else None)
    stage_rows = _stage_rows(warehouse, week_start, week_end)
    counts = activity(warehouse, week_start, week_end)
    retrain = model(warehouse, week_start, week_end)
    return {
        "week_start": week_start.isoformat(),
        "week_end": week_end.isoformat(),
        "empty": not any(counts.values()) and not stage_rows and not retrain["runs"],
        "activity": counts,
        "ratings": week,
        "top_covers": top_covers(warehouse, week_start, week_end, top),
        "model": retrain,
        "data": data(stage_rows),
        "health": health(warehouse, stage_rows, retrain["runs"], week_start, week_end),
    }



def retraining_settled(warehouse: Warehouse, week_start: datetime) -> bool:
    """Whether the week's style training run has ended (trained, skipped or failed), so a report
    of that week can show the gate's decision."""
    rows = warehouse.query(
        "SELECT status FROM training_runs WHERE kind = 'style' AND interval_start = @start", {"start": week_start})
    return any(r["status"] in ("trained", "skipped", "failed") for r in rows)
