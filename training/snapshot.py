"""The weekly training snapshot: what the model learns from, frozen as an immutable manifest.

    build_snapshot(warehouse, store, start, end, SnapshotConfig()) -> dict

Selects, for the data interval ``[start, end)``:
- generated images that got a valid review in the interval and whose valid reviews up to
  ``end`` pass the filter: mean rating >= ``min_rating`` over at least ``min_reviews`` distinct
  reviewers (a review is valid with a rating of 1..5 stars and a user; legacy duplicates of one
  user on one image count as that user's mean); caption = the image's prompt;
- crawled covers known by ``end`` whose song has a prompt with training captions.

Personal images never enter: an image is left out when its lineage shows a personal adapter
(the ``images.adapters`` column written at record time; for older rows the shard manifest that
made it; else the registry entry of its model version), when its request is a personalisation
or pins a DreamBooth version. An image whose lineage cannot be established is dropped with that
reason: the snapshot fails closed.

Images are checked: exact duplicates (sha256) and near-duplicates (perceptual hash within
``phash_distance`` bits, found through :func:`sleeve.phash.near_duplicates`) are dropped,
unreadable or too small ones are dropped with the reason. Perceptual hashes and sizes are
stored on the ``covers`` / ``images`` rows: the crawler can fill them when it fetches a cover;
otherwise the first snapshot that meets an image reads its bytes once and writes them back, and
later snapshots never read them again.

The kept items are split into ``train`` and held-out ``val`` by *group*, so related images
never straddle the split: a song's images (its covers and every image generated from its
prompts) form one group, or the whole album when the song has an album id; a generated image
without a song is grouped by its request. A group's side is a pure function of its key
(``val_fraction``, default 25 %): week after week the same group lands on the same side, so no
model ever trained on an image held out in another week. With at least ``min_examples`` items
in two or more groups, at least one group is held out and at least one is trained on.

The snapshot also carries a *reference* set, evidence that does not come from this week's
reviews: the held-out items and held-out preference pairs of the last ``reference_weeks`` earlier
snapshots whose challenger passed the gate (a kept week may be the one with bad data) and was
not retired as a canary (its users said no: that week's data may be the bad one), minus any
image or group in this snapshot. The gate requires the challenger not to be worse on the
images and not to have moved away from what those weeks' users preferred.

With ``replay`` (off by default: it keeps a challenger good on the reference whatever this
week taught it, so the reference no longer sees a bad week) the train split also holds the images of those same trusted weeks
(reviewed in their intervals, passing today's filter, on the train side of the split): a
week's few liked images would otherwise be learnt for many epochs and forgotten the next week.
An image last reviewed in an untrusted week (kept by the gate, retired as a canary, or older
than ``reference_weeks``) is not replayed, so a week with bad reviews is never learnt later.

The manifest is written once at ``training/snapshots/<content hash>.json`` (the same selection
always gives the same URI) and carries counts, including held-out counts per source. Fewer
than ``min_examples`` usable images means ``skip_reason`` is set: the DAG skips training.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

from sleeve.ids import content_hash, sha256_bytes
from sleeve.phash import near_duplicates, parse_phash, phash_hex
from sleeve.reviews import PER_USER_RATINGS_SQL
from sleeve.store import ObjectStore, open_uri, read_json
from sleeve.warehouse import Warehouse
from training.dataset import decode_image, read_image_bytes
from training.preference import build_pairs

SNAPSHOT_PREFIX = "training/snapshots"
TRAIN, VAL = "train", "val"
SOURCES = ("generated", "cover")
SPLIT_METHOD = "group-sha256-threshold-v2"
BASE_VERSION = "base"
OBJECTIVES = ("sft", "dpo", "sft+dpo")


@dataclass(frozen=True)
class SnapshotConfig:
    min_rating: float = 4.0
    min_reviews: int = 1  # distinct reviewers
    include_covers: bool = False  # crawled covers carry no user signal: they pull the LoRA back to the catalogue
    min_examples: int = 4
    phash_distance: int = 4  # Hamming distance (of 64 bits) at or below which images are near-duplicates
    min_side: int = 32  # smaller images are dropped as too small
    val_fraction: float = 0.25  # share of groups held out for the gate's validation loss
    reference_weeks: int = 4  # earlier promoted weeks whose held-out items form the reference set
    replay: bool = False  # those weeks' train-side images are trained on again (masks a bad week: see README)
    min_rating_gap: float = 1.0  # preference pairs: ratings within one request at least this far apart
    objective: str = "sft"  # sft | dpo | sft+dpo: what the snapshot must hold enough of to train
    min_pairs: int = 4  # dpo: fewer train pairs means skip

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {'|'.join(OBJECTIVES)} (got {self.objective!r})")
        if self.min_rating_gap <= 0:
            raise ValueError(f"min_rating_gap must be > 0 (got {self.min_rating_gap}); ties carry no preference")
        if not 0 <= self.val_fraction <= 0.5:
            raise ValueError(f"val_fraction must be between 0 and 0.5 (got {self.val_fraction}); "
                             "use e.g. 0.25 to hold out 25 % of the snapshot for validation")
        if self.reference_weeks < 0:
            raise ValueError(f"reference_weeks must be >= 0 (got {self.reference_weeks}); 0 turns the reference off")

    @classmethod
    def from_dict(cls, values: dict) -> SnapshotConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


GENERATED_SQL = f"""
WITH valid AS ({PER_USER_RATINGS_SQL})
SELECT i.image_id, i.request_id, i.uri, i.sha256, i.phash, i.width, i.height, i.model_version, i.adapters,
       i.manifest_uri, p.positive AS caption, p.song_id, s.source AS song_source, s.album_id,
       g.kind AS request_kind, g.model_version AS request_model_version,
       AVG(v.rating) AS mean_rating, COUNT(*) AS reviewers, MAX(v.last_at) AS reviewed_at
FROM images AS i
JOIN valid AS v ON v.image_id = i.image_id
LEFT JOIN prompts AS p ON p.prompt_id = i.prompt_id
LEFT JOIN songs AS s ON s.song_id = p.song_id
LEFT JOIN generation_requests AS g ON g.request_id = i.request_id
WHERE i.image_id IN (SELECT image_id FROM valid WHERE last_at >= @since)
GROUP BY i.image_id, i.request_id, i.uri, i.sha256, i.phash, i.width, i.height, i.model_version, i.adapters,
         i.manifest_uri, p.positive, p.song_id, s.source, s.album_id, g.kind, g.model_version
HAVING COUNT(*) >= @min_reviews AND AVG(v.rating) >= @min_rating
ORDER BY i.image_id
"""

COVERS_SQL = """
SELECT c.song_id, c.uri, c.sha256, c.phash, c.width, c.height, s.source AS song_source, s.album_id,
       p.captions, p.positive
FROM covers AS c
JOIN prompts AS p ON p.song_id = c.song_id
LEFT JOIN songs AS s ON s.song_id = c.song_id
WHERE c.created_at < @end AND p.created_at < @end AND p.captions IS NOT NULL
ORDER BY c.song_id, p.created_at DESC, p.prompt_id
"""

REFERENCE_SQL = """
SELECT interval_start, interval_end, manifest_uri FROM training_runs
WHERE kind = 'style' AND status = 'trained' AND decision = 'promote' AND manifest_uri IS NOT NULL
  AND interval_start < @start
  AND NOT EXISTS (SELECT 1 FROM model_versions AS v WHERE v.version = training_runs.model_version
                  AND v.alias = 'retired')
ORDER BY interval_start DESC
LIMIT @weeks
"""


def song_group(song_id: str, source: str | None, album_id: str | None) -> str:
    """The split group of a song's images: its album when known, else the song."""
    return f"album:{source}:{album_id}" if album_id else f"song:{song_id}"


def row_group(row: dict) -> str:
    """The split group of a generated image row: its song's, else its request's."""
    return song_group(row["song_id"], row["song_source"], row["album_id"]) if row["song_id"] \
        else f"request:{row['request_id']}"


def split_of_groups(items: list[dict], val_fraction: float):
    """``group -> split`` consistent with ``items``' split; other groups by their score."""
    sides = {i["group"]: i["split"] for i in items}
    return lambda group: sides.get(group) or (VAL if _split_score(group) < val_fraction else TRAIN)


class Lineage:
    """Which generated images were made with a personal adapter. Reads the registry once and
    each legacy shard manifest at most once."""

    def __init__(self, warehouse: Warehouse, store: ObjectStore):
        rows = warehouse.query("SELECT version, kind, user_id, adapter_uri FROM model_versions")
        self.store, self.users_area = store, store.url.rstrip("/") + "/users/"  # personal data (sleeve.keys)
        self.kinds = {r["version"]: r["kind"] for r in rows}
        self.personal_uris = {r["adapter_uri"].rstrip("/") for r in rows
                              if r["adapter_uri"] and (r["kind"] == "dreambooth" or r["user_id"])}
        self.manifests: dict[str, list | None] = {}

    def personal(self, row: dict) -> str | None:
        """Why ``row`` (a GENERATED_SQL row) is personal, "" when it is not, None when unknown."""
        if row["request_kind"] == "personalize":
            return "personalisation request"
        for version in (row["request_model_version"], row["model_version"]):
            if self.kinds.get(version) == "dreambooth":
                return f"DreamBooth version {version}"
        adapters = self._adapters(row)
        if adapters is None:
            return None
        for adapter in adapters:
            uri = str(adapter.get("uri") or "").rstrip("/")
            if adapter.get("kind") == "dreambooth" or adapter.get("user_id") or uri in self.personal_uris \
                    or uri.startswith(self.users_area):
                return f"personal adapter {adapter.get('version') or uri}"
        return ""

    def _adapters(self, row: dict) -> list | None:
        if row["adapters"] is not None:
            try:
                adapters = json.loads(row["adapters"])
            except json.JSONDecodeError:
                return None
            return adapters if isinstance(adapters, list) else None
        if row["manifest_uri"]:  # rows recorded before the adapters column: the shard manifest
            uri = row["manifest_uri"]
            if uri not in self.manifests:
                try:
                    self.manifests[uri] = list(read_json(*open_uri(uri, self.store)).get("model", {})
                                               .get("adapters") or [])
                except (OSError, ValueError, KeyError):
                    self.manifests[uri] = None
            return self.manifests[uri]
        if row["model_version"] == BASE_VERSION:
            return []
        if self.kinds.get(row["model_version"]) == "style":  # one registered style adapter
            return []
        return None


def _replayed_week(reviewed_at, trusted: list[dict]) -> str | None:
    """The trusted week (its interval start) an image was last reviewed in, else None."""
    for week in trusted:
        if week["interval_start"] <= reviewed_at < week["interval_end"]:
            return str(week["interval_start"])
    return None


def select_candidates(warehouse: Warehouse, store: ObjectStore, start: datetime, end: datetime,
                      config: SnapshotConfig, trusted: list[dict] = ()) -> tuple[list[dict], list[dict], int]:
    """(rows worth checking in a stable order: generated images first, then covers; rows
    dropped for unknown lineage; number of personal images left out). ``trusted``: the earlier
    weeks (``earlier_snapshots``) whose images are replayed; each replayed row has ``replay``."""
    rows, unknown, personal = [], [], 0
    lineage = Lineage(warehouse, store)
    trusted = [w for w in trusted if w.get("interval_end")] if config.replay else []
    since = min([start] + [w["interval_start"] for w in trusted])
    for row in warehouse.query(GENERATED_SQL, {"since": since, "end": end, "min_rating": float(config.min_rating),
                                               "min_reviews": int(config.min_reviews)}):
        replay = None
        if row["reviewed_at"] < start:
            replay = _replayed_week(row["reviewed_at"], trusted)
            if replay is None:  # last reviewed in a week the gate did not trust
                continue
        why = lineage.personal(row)
        if why:
            personal += 1
            continue
        if why is None:
            unknown.append({"ref": row["image_id"], "uri": row["uri"],
                            "reason": "lineage unknown: no adapters recorded and no readable shard manifest"})
            continue
        group = row_group(row)
        rows.append({"source": "generated", "ref": row["image_id"], "uri": row["uri"], "sha256": row["sha256"],
                     "caption": row["caption"] or "", "rating": round(float(row["mean_rating"]), 4),
                     "reviews": int(row["reviewers"]), "model_version": row["model_version"], "group": group,
                     **({"replay": replay} if replay else {}),
                     "_phash": row["phash"], "_size": (row["width"], row["height"])})
    if config.include_covers:
        seen = set()
        for row in warehouse.query(COVERS_SQL, {"end": end}):
            if row["song_id"] in seen:  # newest prompt per song wins
                continue
            seen.add(row["song_id"])
            caption = _pick_caption(row["captions"], row["positive"], row["sha256"])
            if caption:
                rows.append({"source": "cover", "ref": row["song_id"], "uri": row["uri"], "sha256": row["sha256"],
                             "caption": caption, "rating": None,
                             "group": song_group(row["song_id"], row["song_source"], row["album_id"]),
                             "_phash": row["phash"], "_size": (row["width"], row["height"])})
    return rows, unknown, personal


def _pick_caption(captions_json: str | None, positive: str | None, seed: str) -> str:
    """One caption variant per cover, chosen by its hash so the choice is stable."""
    try:
        variants = [c for c in json.loads(captions_json or "[]") if isinstance(c, str) and c.strip()]
    except json.JSONDecodeError:
        variants = []
    if not variants:
        return positive or ""
    return variants[int(sha256_bytes((seed or "").encode())[:8], 16) % len(variants)]


def _split_score(group: str) -> float:
    """Where a group falls in [0, 1): a pure function of its key."""
    return int(sha256_bytes(f"{SPLIT_METHOD}:{group}".encode())[:15], 16) / 16**15


def assign_splits(items: list[dict], config: SnapshotConfig) -> list[dict]:
    """Each item with ``split`` = train | val, decided per ``group``; items stay in their order."""
    scores = {g: _split_score(g) for g in dict.fromkeys(i["group"] for i in items)}
    val = {g for g, score in scores.items() if score < config.val_fraction}
    by_score = sorted(scores, key=lambda g: (scores[g], g))
    if config.val_fraction > 0 and len(items) >= config.min_examples and len(scores) >= 2 and not val:
        val = {by_score[0]}  # too few groups for the fraction to catch one: hold out the lowest score
    if val and len(val) == len(scores):  # never hold out everything
        val.discard(by_score[-1])
    return [{**item, "split": VAL if item["group"] in val else TRAIN} for item in items]


def split_items(manifest: dict, split: str) -> list[dict]:
    """The manifest's items of one split. Manifests written before the split hold no ``val``
    items: all their items count as ``train``."""
    if split not in (TRAIN, VAL):
        raise ValueError(f"unknown split {split!r}; expected {TRAIN!r} or {VAL!r}")
    return [i for i in manifest.get("items", []) if i.get("split", TRAIN) == split]


def reference_items(manifest: dict) -> list[dict]:
    """The manifest's reference items (earlier weeks' held-out images); none in older manifests."""
    return list((manifest.get("reference") or {}).get("items") or [])


def reference_pairs(manifest: dict) -> list[dict]:
    """The manifest's reference pairs (earlier weeks' held-out preference pairs); none in older manifests."""
    return list((manifest.get("reference") or {}).get("pairs") or [])


def held_out_pairs(manifest: dict) -> list[dict]:
    """The manifest's preference pairs in held-out groups."""
    return [p for p in manifest.get("pairs") or [] if p.get("split", TRAIN) == VAL]


def earlier_snapshots(warehouse: Warehouse, start: datetime, weeks: int) -> list[dict]:
    """The last ``weeks`` promoted weekly runs before ``start``: {interval_start, manifest_uri}."""
    if weeks <= 0:
        return []
    return warehouse.query(REFERENCE_SQL, {"start": start, "weeks": int(weeks)})


def held_out_key(manifest_key: str) -> str:
    """Beside each manifest: its held-out generated items, all a later reference needs."""
    return manifest_key.removesuffix(".json") + ".held-out.json"


def build_reference(store: ObjectStore, earlier: list[dict], items: list[dict]) -> dict:
    """The held-out generated images and preference pairs of ``earlier`` snapshots (newest first),
    each once, without the images of this snapshot and without any group it trains on (a
    group's side never changes for a fixed ``val_fraction``; this guards against a changed one).
    Held-out covers are not taken: they stay in the catalogue and are in this week's held-out set.
    The pairs let the gate see a challenger that learnt the reverse of what users preferred
    before: it can still be good on the earlier weeks' liked images."""
    this_week = {i["sha256"] for i in items}
    taken = set(this_week)
    groups = {i["group"] for i in items if i["split"] == TRAIN}
    weeks, out, pairs, seen = [], [], [], set()
    for run in earlier:
        uri, week = run["manifest_uri"], str(run["interval_start"])
        try:
            src, key = open_uri(uri, store)
            held = read_json(src, held_out_key(key)) if src.exists(held_out_key(key)) else {}
            # snapshots written before the held-out file (or before it held the pairs)
            manifest = read_json(src, key) if "pairs" not in held else {}
            held_out = held["items"] if "items" in held else split_items(manifest, VAL)
            week_pairs = held["pairs"] if "pairs" in held else held_out_pairs(manifest)
        except (OSError, ValueError, KeyError) as exc:
            weeks.append({"interval_start": week, "manifest_uri": uri, "items": 0, "pairs": 0,
                          "note": f"unreadable: {exc}"})
            continue
        added = 0
        for item in held_out:
            if item.get("source") != "generated" or item["sha256"] in taken or item.get("group") in groups:
                continue
            taken.add(item["sha256"])
            out.append({k: item.get(k) for k in ("source", "ref", "uri", "sha256", "caption", "group")} | {"week": week})
            added += 1
        added_pairs = 0
        for pair in week_pairs:
            sides = (pair["preferred"]["sha256"], pair["dispreferred"]["sha256"])
            if sides in seen or pair.get("group") in groups or not this_week.isdisjoint(sides):
                continue
            seen.add(sides)
            pairs.append({**pair, "week": week})
            added_pairs += 1
        weeks.append({"interval_start": week, "manifest_uri": uri, "items": added, "pairs": added_pairs})
    return {"weeks": weeks, "items": out, "pairs": pairs}


def _check(rows: list[dict], store: ObjectStore, config: SnapshotConfig) -> tuple[list, list, dict]:
    """Dedupe and size-check ``rows``; read an image only when its hash or size is not stored.
    Returns (kept items, dropped, hashes to store: {"generated": [...], "cover": [...]})."""
    survivors, values, dropped, fills = [], [], [], {"generated": [], "cover": []}
    digests = set()
    for row in rows:
        phash, size = row.pop("_phash"), row.pop("_size")
        value = _parsed(phash)
        if value is None or None in size:
            try:
                data = read_image_bytes(row["uri"], store)
                image = decode_image(data)
            except (ValueError, OSError, KeyError) as exc:  # missing object or undecodable bytes
                dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": f"unreadable: {exc}"})
                continue
            digest = sha256_bytes(data)
            if row["sha256"] and digest != row["sha256"]:
                dropped.append({"ref": row["ref"], "uri": row["uri"],
                                "reason": f"content changed: sha256 {digest} is not the recorded {row['sha256']}"})
                continue
            row["sha256"], phash, size = digest, phash_hex(image), image.size
            value = parse_phash(phash)
            fills[row["source"]].append({"ref": row["ref"], "phash": phash, "width": size[0], "height": size[1]})
        if min(size) < config.min_side:
            dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": f"too small: {tuple(size)}"})
            continue
        if row["sha256"] in digests:
            dropped.append({"ref": row["ref"], "uri": row["uri"], "reason": "duplicate (same content hash)"})
            continue
        digests.add(row["sha256"])
        survivors.append({**row, "phash": phash})
        values.append(value)
    items = []
    for item, twin in zip(survivors, near_duplicates(values, config.phash_distance), strict=True):
        if twin is None:
            items.append(item)
        else:
            dropped.append({"ref": item["ref"], "uri": item["uri"],
                            "reason": f"near-duplicate (phash {item['phash']} within {config.phash_distance} bits "
                                      f"of {survivors[twin]['ref']})"})
    return items, dropped, fills


def _parsed(phash: str | None) -> int | None:
    try:
        return parse_phash(phash) if phash else None
    except ValueError:
        return None


def _store_hashes(warehouse: Warehouse, fills: dict) -> None:
    """Write the hashes and sizes computed now back to their rows, so no later snapshot reads
    those bytes again (a pure function of the bytes: re-runs write the same values)."""
    warehouse.upsert("images", [{"image_id": f["ref"], "phash": f["phash"], "width": f["width"],
                                 "height": f["height"]} for f in fills["generated"]])
    warehouse.upsert("covers", [{"song_id": f["ref"], "phash": f["phash"], "width": f["width"],
                                 "height": f["height"]} for f in fills["cover"]])


def _put_json(store: ObjectStore, key: str, obj: dict) -> None:
    data = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")
    store.put_bytes(key, data, content_type="application/json", create_only=True)


def build_snapshot(warehouse: Warehouse, store: ObjectStore, start: datetime, end: datetime,
                   config: SnapshotConfig | None = None) -> dict:
    """Select, check, split and write the manifest; returns ``{"uri", "counts", "skip_reason", ...}``."""
    config = config or SnapshotConfig()
    earlier = earlier_snapshots(warehouse, start, config.reference_weeks)
    candidates, unknown, personal = select_candidates(warehouse, store, start, end, config, earlier)
    items, dropped, fills = _check(candidates, store, config)
    _store_hashes(warehouse, fills)
    dropped = unknown + dropped
    # An earlier week's held-out image stays evidence (the reference), never training data.
    items = [i for i in assign_splits(items, config) if not (i.get("replay") and i["split"] == VAL)]
    prefs = build_pairs(warehouse, store, start, end, min_rating_gap=config.min_rating_gap, group_of=row_group,
                        split_of=split_of_groups(items, config.val_fraction))
    reference = build_reference(store, earlier, items)
    val = [i for i in items if i["split"] == VAL]
    split = {"method": SPLIT_METHOD, "val_fraction": config.val_fraction,
             TRAIN: len(items) - len(val), VAL: len(val),
             "val_by_source": {s: sum(i["source"] == s for i in val) for s in SOURCES},
             "groups": {TRAIN: len({i["group"] for i in items if i["split"] == TRAIN}),
                        VAL: len({i["group"] for i in val})}}
    counts = {
        "candidates": len(candidates) + len(unknown), "examples": len(items),
        "generated": sum(i["source"] == "generated" for i in items), "covers": sum(i["source"] == "cover" for i in items),
        "train": split[TRAIN], "val": split[VAL],
        "val_generated": split["val_by_source"]["generated"], "val_covers": split["val_by_source"]["cover"],
        "reference": len(reference["items"]), "reference_pairs": len(reference["pairs"]),
        "reference_weeks": sum(w["items"] > 0 or w["pairs"] > 0 for w in reference["weeks"]),
        "replayed": sum(bool(i.get("replay")) for i in items),
        "dropped": len(dropped), "duplicates": sum("duplicate" in d["reason"] for d in dropped),
        "unreadable": sum(d["reason"].startswith("unreadable") for d in dropped),
        "lineage_unknown": len(unknown), "personal_excluded": personal,
        "pairs": prefs["counts"]["pairs"], "train_pairs": prefs["counts"]["train_pairs"],
        "pairs_personal_requests_excluded": prefs["counts"]["personal_requests"],
    }
    skip_reason = None
    if config.objective == "dpo" and counts["train_pairs"] < config.min_pairs:
        skip_reason = (f"snapshot has {counts['train_pairs']} train preference pair(s), fewer than "
                       f"min_pairs={config.min_pairs} ({prefs['counts']['requests']} rated requests)")
    elif config.objective != "dpo" and len(items) < config.min_examples:
        skip_reason = (f"snapshot has {len(items)} usable image(s), fewer than min_examples={config.min_examples} "
                       f"({counts['candidates']} candidates, {counts['dropped']} dropped)")
    manifest = {"kind": "style-snapshot", "interval": [start.isoformat(), end.isoformat()], "filter": asdict(config),
                "split": split, "items": items, "pairs": prefs["pairs"],
                "pair_counts": prefs["counts"], "reference": reference, "dropped": dropped, "counts": counts,
                "skip_reason": skip_reason}
    digest = content_hash(manifest)
    key = f"{SNAPSHOT_PREFIX}/{digest}.json"
    if not store.exists(key):  # compact JSON: a catalogue-sized manifest is tens of MB
        held_out = [i for i in val if i["source"] == "generated"]
        _put_json(store, held_out_key(key), {"manifest": store.uri(key), "items": held_out,
                                             "pairs": held_out_pairs(manifest)})
        _put_json(store, key, {**manifest, "sha256": digest})
    return {"uri": store.uri(key), "sha256": digest, "counts": counts, "split": split, "skip_reason": skip_reason,
            "dropped": dropped, "hashed_now": len(fills["generated"]) + len(fills["cover"])}
