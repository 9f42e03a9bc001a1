"""The week's numbers for the weekly report, gathered from the warehouse.

``build_report(warehouse, week_start, week_end)`` reads what every stage recorded for the
half-open window [week_start, week_end) and returns a JSON-ready dict: activity and ratings (with
the week before and the trend of the last weeks), the best covers, what retraining decided and
which model was in production, data (crawl, labelling) and health (failures, stage outcomes, GPU
time). An empty week gives zeros and ``None`` means, never an error.

A report is a function of its week: it reads only what a re-run of a stage leaves as it was
(rows keyed by the data interval, reviews, images, the registry's promotion dates), never the
wall clock, never a re-run's own bookkeeping (its durations, "already existed" counts, the GPU
seconds of a generation re-run that skipped everything), so re-running it gives the same text.

No personal data is read: no emails, no photos, no user ids (only a distinct-user count), and
personalised covers (a user's face) never reach the top covers.
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
GENERATE_KEYS = ("requests", "images", "failed")
PERSONALIZE_KEYS = ("requests", "trained", "failed", "images", "gpu_seconds")
# Stages whose recorded GPU seconds a re-run keeps (a batch_generate re-run overwrites its own
# with the seconds it took to skip what was stored, so generation time is left out).
STABLE_GPU_STAGES = ("personalize",)
TREND_WEEKS = 8
WINDOW = "created_at >= @start AND created_at < @end"
NOT_PERSONAL = "COALESCE(kind, '') != 'personalize'"
NOT_PRODUCT_SHOT = "image_id NOT IN (SELECT shot_id FROM product_shots)"  # shots have their own section


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


def _iso(value) -> str | None:
    return value.isoformat() if value is not None else None


def _count(warehouse: Warehouse, sql: str, params: dict) -> int:
    return warehouse.query(sql, params)[0]["n"]


def ratings(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    """Distribution of the covers' valid ratings (1..5), their mean, the share of 4 and 5 stars,
    and how many were out of range. Product shots share the reviews table and have their own
    section, so they are left out here."""
    rows = warehouse.query(
        f"SELECT rating, COUNT(*) AS n FROM reviews WHERE {WINDOW} AND {NOT_PRODUCT_SHOT} GROUP BY rating",
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
    share = (distribution[4] + distribution[5]) / count if count else None
    return {"distribution": distribution, "count": count, "mean": mean, "share_4plus": share, "invalid": invalid}


def activity(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    """Cover requests (users' and backfills'), personalisation requests (covers with a user's
    face, made by the personalize DAG), covers made, reviews and active users."""
    params = {"start": start, "end": end}
    requests = _count(warehouse, f"SELECT COUNT(*) AS n FROM generation_requests WHERE {WINDOW} AND {NOT_PERSONAL}",
                      params)
    personal = _count(warehouse, f"SELECT COUNT(*) AS n FROM personalization_requests WHERE {WINDOW}", params)
    images = _count(warehouse, f"SELECT COUNT(*) AS n FROM images WHERE {WINDOW}", params)
    personal_images = _count(
        warehouse, "SELECT COUNT(*) AS n FROM images AS i JOIN generation_requests AS g ON g.request_id = i.request_id"
        " WHERE i.created_at >= @start AND i.created_at < @end AND g.kind = 'personalize'", params)
    reviews = _count(warehouse, f"SELECT COUNT(*) AS n FROM reviews WHERE {WINDOW} AND {NOT_PRODUCT_SHOT}", params)
    users = _count(
        warehouse,
        "SELECT COUNT(DISTINCT user_id) AS n FROM ("
        f" SELECT user_id FROM generation_requests WHERE {WINDOW}"
        f" UNION ALL SELECT user_id FROM reviews WHERE {WINDOW}"
        ") AS active WHERE user_id IS NOT NULL",
        params,
    )
    return {"requests": requests, "personalization_requests": personal, "images": images,
            "personalized_images": personal_images, "reviews": reviews, "users": users}


def trend(warehouse: Warehouse, week_start: datetime, week_end: datetime, weeks: int = TREND_WEEKS) -> list[dict]:
    """Mean rating and share of 4-5 stars of the reviews of each of the last ``weeks`` weeks
    (oldest first, this one last), and the style version promoted from each week's retraining."""
    span = week_end - week_start
    promoted = {r["interval_start"]: r["model_version"] for r in warehouse.query(
        "SELECT interval_start, model_version FROM training_runs WHERE kind = 'style' AND decision = 'promote'"
        " AND interval_start >= @start AND interval_start < @end",
        {"start": week_start - span * (weeks - 1), "end": week_end})}
    out = []
    for back in range(weeks - 1, -1, -1):
        start = week_start - span * back
        r = ratings(warehouse, start, start + span)
        out.append({"week_start": start.isoformat(), "reviews": r["count"], "mean": r["mean"],
                    "share_4plus": r["share_4plus"], "promoted": promoted.get(start)})
    return out


def top_covers(warehouse: Warehouse, start: datetime, end: datetime, limit: int = 8,
               min_reviews: int = 2) -> list[dict]:
    """The week's best covers, one per request (its best image): by mean of the week's valid
    ratings, ties broken by review count; only images with at least ``min_reviews`` reviews
    rank. Personalised covers (a user's face) are never shown."""
    rows = warehouse.query(
        "SELECT * FROM ("
        " SELECT *, ROW_NUMBER() OVER (PARTITION BY request_id ORDER BY rating DESC, reviews DESC, image_id)"
        " AS rank_in_request FROM ("
        "  SELECT r.image_id, i.request_id, AVG(r.rating) AS rating, COUNT(*) AS reviews,"
        "  ANY_VALUE(i.thumb_uri) AS thumb_uri, ANY_VALUE(i.uri) AS uri,"
        "  ANY_VALUE(i.model_version) AS model_version,"
        "  ANY_VALUE(s.title) AS title, ANY_VALUE(s.artist) AS artist"
        "  FROM reviews AS r"
        "  JOIN images AS i ON i.image_id = r.image_id"
        "  LEFT JOIN generation_requests AS g ON g.request_id = i.request_id"
        "  LEFT JOIN prompts AS p ON p.prompt_id = i.prompt_id"
        "  LEFT JOIN songs AS s ON s.song_id = COALESCE(g.song_id, p.song_id)"
        "  LEFT JOIN model_versions AS m ON m.version = i.model_version"
        "  WHERE r.created_at >= @start AND r.created_at < @end AND r.rating BETWEEN 1 AND 5"
        "  AND COALESCE(g.kind, '') != 'personalize' AND COALESCE(m.kind, '') != 'dreambooth'"
        "  GROUP BY r.image_id, i.request_id"
        "  HAVING COUNT(*) >= @min_reviews"
        " ) AS per_image"
        ") AS ranked WHERE rank_in_request = 1"
        " ORDER BY rating DESC, reviews DESC, image_id"
        " LIMIT @limit",
        {"start": start, "end": end, "limit": limit, "min_reviews": min_reviews},
    )
    keep = ("image_id", "request_id", "thumb_uri", "uri", "model_version", "reviews")
    return [{**{k: row[k] for k in keep}, "rating": float(row["rating"]), "title": row["title"] or "(unknown song)",
             "artist": row["artist"] or ""} for row in rows]


def production_during(warehouse: Warehouse, end: datetime) -> dict | None:
    """The style version in production at the end of the week, by the registry's promotion
    dates (a version promoted when the week's retraining ended, at ``end``, serves the next week).
    A rollback re-dates the version it restores."""
    rows = warehouse.query(
        "SELECT version, base_model, COALESCE(promoted_at, created_at) AS since FROM model_versions"
        " WHERE COALESCE(kind, 'style') = 'style' AND COALESCE(promoted_at, created_at) < @end"
        " AND (promoted_at IS NOT NULL OR alias = 'production')"
        " ORDER BY since DESC, version DESC LIMIT 1",
        {"end": end},
    )
    return {"version": rows[0]["version"], "base_model": rows[0]["base_model"], "since": _iso(rows[0]["since"])} \
        if rows else None


def _snapshot_counts(store, manifest_uri: str | None) -> dict:
    """The snapshot manifest's counts (generated images, covers, train/val), if it can be read."""
    if store is None or not manifest_uri:
        return {}
    from sleeve.store import open_uri, read_json

    try:
        source, key = open_uri(manifest_uri, store)
        counts = read_json(source, key).get("counts", {})
    except Exception as exc:  # the report must not sink because a manifest moved
        log.warning("snapshot manifest %s unreadable (%s)", manifest_uri, type(exc).__name__)
        return {}
    return counts if isinstance(counts, dict) else {}


def model(warehouse: Warehouse, start: datetime, end: datetime, store=None) -> dict:
    """The week's style retraining run(s) and their gate decision, what they trained on, the
    version in production during the week, and rollbacks recorded in the week."""
    runs = warehouse.query(
        "SELECT run_id, kind, status, reason, metrics, decision, decision_reasons, model_version, gpu_seconds,"
        " manifest_uri FROM training_runs"
        " WHERE interval_start >= @start AND interval_start < @end ORDER BY interval_start, run_id",
        {"start": start, "end": end},
    )
    rolled_back = warehouse.query(
        "SELECT version, previous_version FROM model_versions WHERE status = 'rolled_back'"
        " AND updated_at >= @start AND updated_at < @end AND COALESCE(kind, 'style') = 'style' ORDER BY version",
        {"start": start, "end": end},
    )
    return {
        "canary": canary(warehouse, start, end),
        "runs": [{
            "run_id": r["run_id"], "kind": r["kind"] or "style", "status": r["status"], "reason": r["reason"],
            "metrics": _stats(r["metrics"]), "decision": r["decision"],
            "decision_reasons": _json_list(r["decision_reasons"]), "model_version": r["model_version"],
            "gpu_seconds": r["gpu_seconds"] or 0.0, "trained_on": _snapshot_counts(store, r["manifest_uri"]),
        } for r in runs],
        "production": production_during(warehouse, end),
        "rollbacks": [{"restored": r["previous_version"], "retired": r["version"]} for r in rolled_back],
    }


def canary(warehouse: Warehouse, start: datetime, end: datetime) -> dict:
    """The users' verdict on the canary given for this week's ratings (both arms' means, the
    interval, the decision), and the canary serving at the week's end (started by this week's
    retraining, decided later), if any."""
    rows = warehouse.query("SELECT * FROM canary_decisions WHERE interval_start >= @start AND interval_start < @end"
                           " ORDER BY decided_at, version", {"start": start, "end": end})
    # by dates, not the alias, so a later week's verdict does not change this week's report
    serving = warehouse.query("SELECT version, canary_of, canary_started_at FROM model_versions"
                              " WHERE canary_started_at IS NOT NULL AND canary_started_at <= @end"
                              " AND (decided_at IS NULL OR decided_at > @end) ORDER BY version", {"end": end})
    return {
        "decisions": [{"version": r["version"], "production_version": r["production_version"],
                       "decision": r["decision"], "reason": r["reason"], "evidence": _stats(r["evidence"])}
                      for r in rows],
        "serving": [{"version": r["version"], "against": r["canary_of"], "since": _iso(r["canary_started_at"])}
                    for r in serving],
    }


def _stage_rows(warehouse: Warehouse, start: datetime, end: datetime) -> list[dict]:
    return warehouse.query(
        "SELECT dag_id, stage, status, stats FROM stage_runs"
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
                                   "statuses": []})
        entry["runs"] += 1
        entry["failed"] += row["status"] == "failed"
        entry["statuses"] = sorted({*entry["statuses"], row["status"] or "unknown"})
        gpu_seconds = _stats(row["stats"]).get("gpu_seconds")
        if row["stage"] in STABLE_GPU_STAGES and isinstance(gpu_seconds, (int, float)):
            gpu[row["stage"]] += gpu_seconds
    for run in training_runs:
        if run["gpu_seconds"]:
            gpu[f"train:{run['kind']}"] += run["gpu_seconds"]
    return {
        "failures": failures,
        "failed_runs": failed_runs,
        "failed_stages": sum(e["failed"] for e in stages.values()),
        "stages": list(stages.values()),
        "gpu_seconds": dict(sorted(gpu.items())),
        "gpu_seconds_total": sum(gpu.values()),
    }


def product_shots(warehouse: Warehouse, start: datetime, end: datetime, limit: int = 8) -> dict:
    """The week's product shots: requests, shots, failures, their reviews, and the best-rated
    shots (by mean rating, then review count) captioned with the product name."""
    params = {"start": start, "end": end}
    requests = warehouse.query(
        "SELECT COUNT(*) AS n, COUNTIF(status = 'failed') AS failed FROM product_requests"
        f" WHERE {WINDOW}", params)[0]
    shots = warehouse.query(f"SELECT COUNT(*) AS n FROM product_shots WHERE {WINDOW}", params)[0]["n"]
    # GROUP BY 1, not s.shot_id: the BigQuery emulator the tests run cannot ORDER BY a query
    # grouped by a column it selects under another name (BigQuery and DuckDB can).
    rated = warehouse.query(
        "SELECT s.shot_id AS image_id, AVG(r.rating) AS rating, COUNT(*) AS reviews, ANY_VALUE(s.name) AS title,"
        " ANY_VALUE(s.thumb_uri) AS thumb_uri, ANY_VALUE(s.uri) AS uri FROM reviews AS r"
        " JOIN product_shots AS s ON s.shot_id = r.image_id"
        " WHERE r.created_at >= @start AND r.created_at < @end AND r.rating BETWEEN 1 AND 5"
        " GROUP BY 1 ORDER BY rating DESC, reviews DESC, image_id", params)
    count = sum(r["reviews"] for r in rated)
    return {"requests": requests["n"], "failed": requests["failed"] or 0, "shots": shots, "reviews": count,
            "mean_rating": sum(float(r["rating"]) * r["reviews"] for r in rated) / count if count else None,
            "top": [{**r, "rating": float(r["rating"]), "title": r["title"] or "(product)"} for r in rated[:limit]]}


def build_report(warehouse: Warehouse, week_start: datetime, week_end: datetime, top: int = 8, *,
                 min_reviews: int = 2, trend_weeks: int = TREND_WEEKS, store=None) -> dict:
    """Everything the weekly report says about [week_start, week_end), as a JSON-ready dict.
    ``store`` (optional) lets it read what the week's training snapshot held."""
    if week_end <= week_start:
        raise ValueError(f"week_end {week_end} must be after week_start {week_start}")
    prev_start = week_start - (week_end - week_start)
    week = ratings(warehouse, week_start, week_end)
    previous = ratings(warehouse, prev_start, week_start)
    week["previous_mean"] = previous["mean"]
    week["previous_count"] = previous["count"]
    week["change"] = (week["mean"] - previous["mean"]
                      if week["mean"] is not None and previous["mean"] is not None else None)
    stage_rows = _stage_rows(warehouse, week_start, week_end)
    counts = activity(warehouse, week_start, week_end)
    counts["previous_images"] = _count(warehouse, "SELECT COUNT(*) AS n FROM images WHERE " + WINDOW,
                                       {"start": prev_start, "end": week_start})
    retrain = model(warehouse, week_start, week_end, store)
    return {
        "week_start": week_start.isoformat(),
        "week_end": week_end.isoformat(),
        "empty": not any(v for k, v in counts.items() if k != "previous_images") and not stage_rows
                 and not retrain["runs"],
        "activity": counts,
        "ratings": week,
        "trend": trend(warehouse, week_start, week_end, trend_weeks),
        "top_covers": top_covers(warehouse, week_start, week_end, top, min_reviews),
        "top_min_reviews": min_reviews,
        "model": retrain,
        "data": data(stage_rows),
        "health": health(warehouse, stage_rows, retrain["runs"], week_start, week_end),
        "product_shots": product_shots(warehouse, week_start, week_end, top),
    }


def retraining_settled(warehouse: Warehouse, week_start: datetime) -> bool:
    """Whether the week's style training run has ended (trained, skipped or failed), so a report
    of that week can show the gate's decision."""
    rows = warehouse.query(
        "SELECT status FROM training_runs WHERE kind = 'style' AND interval_start = @start", {"start": week_start})
    return any(r["status"] in ("trained", "skipped", "failed") for r in rows)


def retraining_to_wait_for(*, paused: bool | None, active_runs: int, next_run: datetime | None,
                           week_start: datetime) -> str | None:
    """Why a report of the week starting ``week_start`` should keep waiting for that week's
    retraining, or None when there is nothing to wait for. The facts are about the retraining
    DAG: paused (None: no such DAG), its queued or running runs for that week, and the start of
    the next interval its schedule will run."""
    if paused is None:
        return None
    if active_runs:
        return f"{active_runs} retraining run(s) for this week are queued or running"
    if paused:
        return None
    if next_run is not None and next_run <= week_start:
        return f"the retraining of this week is scheduled (next interval starts {next_run.isoformat()})"
    return None
