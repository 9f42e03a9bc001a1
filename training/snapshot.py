"""The weekly training snapshot: what the model learns from, frozen as an immutable manifest.

    build_snapshot(warehouse, store, start, end, SnapshotConfig()) -> dict

Selects, for the data interval ``[start, end)``:
- generated images that got a review in the interval and whose reviews up to ``end`` pass the
  filter (default mean rating >= 4 of 5 with at least 1 review); caption = the image's prompt;
- crawled covers known by ``end`` whose song has a prompt with training captions.

Images are read and checked: exact duplicates (sha256 of the bytes) and near-duplicates
(perceptual hash within ``phash_distance`` bits) are dropped, unreadable ones are dropped with
the reason. The kept items are split into ``train`` and held-out ``val`` by a hash of each
image's bytes (``val_fraction``, default 15 %): the same image always lands on the same side,
week after week, so the champion never trained on this week's held-out images either (unless
the at-least-one rule below moved one). With at least ``min_examples`` (and two) items, at
least one is held out and at least one is trained on. Every item carries its ``split``; the manifest's
``split`` block and ``counts`` record the sizes. The trainer reads only ``train`` items, the
evaluation's validation loss only ``val`` items (see :func:`split_items`).

The manifest is written once at ``training/snapshots/<content hash>.json`` (the same selection
always gives the same URI) and carries counts. Fewer than ``min_examples`` usable images means
``skip_reason`` is set: the DAG skips training, it does not crash.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from sleeve.ids import content_hash, sha256_bytes
from sleeve.store import ObjectStore, write_json
from sleeve.warehouse import Warehouse
from training.dataset import decode_image, read_image_bytes

SNAPSHOT_PREFIX = "training/snapshots"
TRAIN, VAL = "train", "val"
SPLIT_METHOD = "sha256-threshold-v1"


@dataclass(frozen=True)
class SnapshotConfig:
    min_rating: float = 4.0
    min_reviews: int = 1
    include_covers: bool = True
    min_examples: int = 4
    phash_distance: int = 4  # Hamming distance (of 64 bits) at or below which images are near-duplicates
    min_side: int = 32  # smaller images are dropped as too small
    val_fraction: float = 0.15  # share of kept images held out for the gate's validation loss

    def __post_init__(self):
        if not 0 <= self.val_fraction <= 0.5:
            raise ValueError(f"val_fraction must be between 0 and 0.5 (got {self.val_fraction}); "
                             "use e.g. 0.15 to hold out 15 % of the snapshot for validation")

    @classmethod
    def from_dict(cls, values: dict) -> SnapshotConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


GENERATED_SQL = """
SELECT i.image_id, i.uri, i.sha256, i.prompt_id, i.model_version, p.positive AS caption,
       AVG(r.rating) AS mean_rating, COUNT(*) AS reviews
FROM images AS i
JOIN reviews AS r ON r.image_id = i.image_id
LEFT JOIN prompts AS p ON p.prompt_id = i.prompt_id
LEFT JOIN generation_requests AS g ON g.request_id = i.request_id
LEFT JOIN model_versions AS m ON m.version = i.model_version
WHERE r.created_at < @end
  AND i.image_id IN (SELECT image_id FROM reviews WHERE created_at >= @start AND created_at < @end)
  -- Personalised covers show a user's face: they never train the shared style model.
  AND (g.kind IS NULL OR g.kind != 'personalize')
  AND (m.kind IS NULL OR m.kind != 'dreambooth')
GROUP BY i.image_id, i.uri, i.sha256, i.prompt_id, i.model_version, p.positive
HAVING COUNT(*) >= @min_reviews AND AVG(r.rating) >= @min_rating
ORDER BY i.image_id
"""

COVERS_SQL = """
SELECT c.song_id, c.uri, c.sha256, p.captions, p.positive, p.created_at AS prompt_created_at
FROM covers AS c
JOIN prompts AS p ON p.song_id = c.song_id
WHERE c.created_at < @end AND p.created_at < @end AND p.captions IS NOT NULL
ORDER BY c.song_id, p.created_at DESC, p.prompt_id
"""


def select_candidates(warehouse: Warehouse, start: datetime, end: datetime, config: SnapshotConfig) -> list[dict]:
    """Rows worth reading, in a stable order: generated images first, then covers."""
    rows = []
    for row in warehouse.query(GENERATED_SQL, {"start": start, "end": end, "min_rating": float(config.min_rating),
                                               "min_reviews": int(config.min_reviews)}):
        rows.append({"source": "generated", "ref": row["image_id"], "uri": row["uri"], "sha256": row["sha256"],
                     "caption": row["caption"] or "", "rating": round(float(row["mean_rating"]), 4),
                     "reviews": int(row["reviews"]), "model_version": row["model_version"]})
    if config.include_covers:
        seen = set()
        for row in warehouse.query(COVERS_SQL, {"end": end}):
            if row["song_id"] in seen:  # newest prompt per song wins
                continue
            seen.add(row["song_id"])
            caption = _pick_caption(row["captions"], row["positive"], row["sha256"])
            if caption:
                rows.append({"source": "cover", "ref": row["song_id"], "uri": row["uri"], "sha256": row["sha256"],
                             "caption": caption, "rating": None})
    return rows


def _pick_caption(captions_json: str | None, positive: str | None, seed: str) -> str:
    """One caption variant per cover, chosen by its hash so the choice is stable."""
    try:
        variants = [c for c in json.loads(captions_json or "[]") if isinstance(c, str) and c.strip()]
    except json.JSONDecodeError:
        variants = []
    if not variants:
        return positive or ""
    return variants[int(sha256_bytes((seed or "").encode())[:8], 16) % len(variants)]


def _split_score(sha256: str) -> float:
    """Where an image falls in [0, 1): a pure function of its content hash."""
    return int(sha256_bytes(f"{SPLIT_METHOD}:{sha256}".encode())[:15], 16) / 16**15


def assign_splits(items: list[dict], config: SnapshotConfig) -> list[dict]:
    """Each item with ``split`` = train | val; items stay in their order."""
    scores = [_split_score(i["sha256"]) for i in items]
    val = {n for n, score in enumerate(scores) if score < config.val_fraction}
    by_score = sorted(range(len(items)), key=lambda n: (scores[n], items[n]["sha256"]))
    if config.val_fraction > 0 and len(items) >= config.min_examples:
        if not val:  # too few items for the fraction to catch one: hold out the lowest score
            val = {by_score[0]}
        if len(val) == len(items):  # never hold out everything
            val.discard(by_score[-1])
    return [{**item, "split": VAL if n in val else TRAIN} for n, item in enumerate(items)]


def split_items(manifest: dict, split: str) -> list[dict]:
    """The manifest's items of one split. Manifests written before the split hold no ``val``
    items: all their items count as ``train``."""
    if split not in (TRAIN, VAL):
        raise ValueError(f"unknown split {split!r}; expected {TRAIN!r} or {VAL!r}")
    return [i for i in manifest.get("items", []) if i.get("split", TRAIN) == split]


def build_snapshot(warehouse: Warehouse, store: ObjectStore, start: datetime, end: datetime,
                   config: SnapshotConfig | None = None) -> dict:
    """Select, read, dedupe and write the manifest; returns ``{"uri", "counts", "skip_reason", ...}``."""
    import imagehash

    config = config or SnapshotConfig()
    candidates = select_candidates(warehouse, start, end, config)
    items, dropped, hashes, phashes = [], [], set(), []
    for row in candidates:
        try:
            data = read_image_bytes(row["uri"], store)
            image = decode_image(data)
        except (ValueError, OSError, KeyError) as exc:  # missing object or undecodable bytes
            dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": f"unreadable: {exc}"})
            continue
        digest = sha256_bytes(data)
        if min(image.size) < config.min_side:
            dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": f"too small: {image.size}"})
            continue
        if digest in hashes:
            dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": "duplicate (same content hash)"})
            continue
        phash = imagehash.phash(image)
        near = next((h for h in phashes if h - phash <= config.phash_distance), None)
        if near is not None:
            dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": f"near-duplicate (phash {phash})"})
            continue
        hashes.add(digest)
        phashes.append(phash)
        items.append({**row, "sha256": digest, "phash": str(phash)})
    items = assign_splits(items, config)
    split = {"method": SPLIT_METHOD, "val_fraction": config.val_fraction,
             TRAIN: sum(i["split"] == TRAIN for i in items), VAL: sum(i["split"] == VAL for i in items)}
    counts = {
        "candidates": len(candidates), "examples": len(items),
        "generated": sum(i["source"] == "generated" for i in items), "covers": sum(i["source"] == "cover" for i in items),
        "train": split[TRAIN], "val": split[VAL], "dropped": len(dropped),
        "duplicates": sum("duplicate" in d["reason"] for d in dropped),
        "unreadable": sum(d["reason"].startswith("unreadable") for d in dropped),
    }
    skip_reason = None
    if len(items) < config.min_examples:
        skip_reason = (f"snapshot has {len(items)} usable image(s), fewer than min_examples={config.min_examples} "
                       f"({counts['candidates']} candidates, {counts['dropped']} dropped)")
    manifest = {"kind": "style-snapshot", "interval": [start.isoformat(), end.isoformat()], "filter": asdict(config),
                "split": split, "items": items, "dropped": dropped, "counts": counts, "skip_reason": skip_reason}
    digest = content_hash(manifest)
    key = f"{SNAPSHOT_PREFIX}/{digest}.json"
    write_json(store, key, {**manifest, "sha256": digest}, create_only=True)
    return {"uri": store.uri(key), "sha256": digest, "counts": counts, "split": split, "skip_reason": skip_reason,
            "dropped": dropped}
