"""Preference pairs for Diffusion-DPO, from the ratings users give the covers of one request.

    build_pairs(warehouse, store, start, end, config, split_of) -> {"pairs": [...], "counts": {...}}

A request renders several covers of one prompt and its user rates them: within a request,
every two rated images whose mean valid ratings differ by at least ``min_rating_gap`` form a
pair (preferred, dispreferred) with the request's prompt; ties and smaller gaps are dropped.
A request counts when one of its images got a valid review in ``[start, end)``; ratings are
the means over valid reviews up to ``end`` (a reviewer's legacy duplicates count once, as in
the snapshot).

Personal data never enters: a request is left out whole when it is a personalisation, or when
any of its images was made with a personal adapter or has a lineage that cannot be established
(fail closed), with the same :class:`training.snapshot.Lineage` rules as the style snapshot.

Each pair carries its request's split group and ``split`` (``split_of(group)``), so a group held
out for the gate never trains, whether through its liked images or through its pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from itertools import combinations

from sleeve.reviews import PER_USER_RATINGS_SQL
from sleeve.store import ObjectStore
from sleeve.warehouse import Warehouse

PAIRS_SQL = f"""
WITH per_user AS ({PER_USER_RATINGS_SQL}), rated AS (
  SELECT image_id, AVG(rating) AS rating, COUNT(*) AS reviewers, MAX(last_at) AS last_at
  FROM per_user GROUP BY image_id
), requests AS (
  SELECT DISTINCT i.request_id FROM images AS i JOIN rated AS r ON r.image_id = i.image_id
  WHERE r.last_at >= @start AND i.request_id IS NOT NULL
)
SELECT i.image_id, i.request_id, i.uri, i.sha256, i.model_version, i.adapters, i.manifest_uri,
       r.rating AS mean_rating, r.reviewers,
       COALESCE(rp.positive, ip.positive) AS caption, COALESCE(rp.song_id, ip.song_id) AS song_id,
       s.source AS song_source, s.album_id, g.kind AS request_kind, g.model_version AS request_model_version
FROM images AS i
JOIN rated AS r ON r.image_id = i.image_id
JOIN requests AS q ON q.request_id = i.request_id
LEFT JOIN generation_requests AS g ON g.request_id = i.request_id
LEFT JOIN prompts AS rp ON rp.prompt_id = g.prompt_id
LEFT JOIN prompts AS ip ON ip.prompt_id = i.prompt_id
LEFT JOIN songs AS s ON s.song_id = COALESCE(rp.song_id, ip.song_id)
ORDER BY i.request_id, i.image_id
"""


def _image(row: dict) -> dict:
    return {"ref": row["image_id"], "uri": row["uri"], "sha256": row["sha256"] or "",
            "rating": round(float(row["mean_rating"]), 4), "reviews": int(row["reviewers"])}


def request_pairs(rows: list[dict], min_rating_gap: float) -> list[tuple[dict, dict]]:
    """(preferred, dispreferred) for every two of one request's rated images at least
    ``min_rating_gap`` apart; equal ratings never pair. Order is stable (by image id)."""
    if min_rating_gap <= 0:
        raise ValueError(f"min_rating_gap must be > 0 (got {min_rating_gap}); ties carry no preference")
    out = []
    for a, b in combinations(sorted(rows, key=lambda r: r["image_id"]), 2):
        gap = float(a["mean_rating"]) - float(b["mean_rating"])
        if abs(gap) + 1e-9 >= min_rating_gap:
            out.append((a, b) if gap > 0 else (b, a))
    return out


def build_pairs(warehouse: Warehouse, store: ObjectStore, start: datetime, end: datetime, *,
                min_rating_gap: float, split_of: Callable[[str], str], group_of: Callable[[dict], str]) -> dict:
    """The interval's preference pairs and their counts (see the module docstring).
    ``group_of(row)`` is the snapshot's split group of a row (song / album / request)."""
    from training.snapshot import Lineage

    lineage = Lineage(warehouse, store)
    by_request: dict[str, list[dict]] = {}
    for row in warehouse.query(PAIRS_SQL, {"start": start, "end": end}):
        by_request.setdefault(row["request_id"], []).append(row)
    pairs, counts = [], {"requests": len(by_request), "personal_requests": 0, "lineage_unknown_requests": 0,
                         "ties_or_close": 0}
    for request_id, rows in sorted(by_request.items()):
        verdicts = [lineage.personal(r) for r in rows]
        if any(verdicts):
            counts["personal_requests"] += 1
            continue
        if any(v is None for v in verdicts):
            counts["lineage_unknown_requests"] += 1
            continue
        found = request_pairs(rows, min_rating_gap)
        counts["ties_or_close"] += len(rows) * (len(rows) - 1) // 2 - len(found)
        group = group_of(rows[0])
        split = split_of(group)
        for preferred, dispreferred in found:
            pairs.append({"request_id": request_id, "caption": preferred["caption"] or "", "group": group,
                          "split": split, "gap": round(float(preferred["mean_rating"]) -
                                                       float(dispreferred["mean_rating"]), 4),
                          "preferred": _image(preferred), "dispreferred": _image(dispreferred)})
    counts["pairs"] = len(pairs)
    counts["train_pairs"] = sum(p["split"] == "train" for p in pairs)
    return {"pairs": pairs, "counts": counts}
