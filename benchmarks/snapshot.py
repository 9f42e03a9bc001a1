"""`make bench` part: the weekly snapshot at catalogue scale (10k and 100k crawled covers).

The catalogue is synthetic but lives where the real one does: ``songs``, ``prompts`` (with
caption variants) and ``covers`` rows in a DuckDB warehouse in a temporary folder, covers with
their perceptual hashes stored (as the crawler writes them), 1 % of them new this week without
a hash (their PNG bytes are in the store and are read once), some planted near-duplicates,
200 generated images reviewed this week, and four earlier promoted weeks whose held-out images
(200 generated images each) form the reference set. Each round times :func:`training.snapshot.build_snapshot` end to end
(queries, checks, split, reference, manifest written); between rounds the new covers' hashes and
the manifest are removed again, so every round does the same work.

Baseline: what the snapshot did before, written competently: every cover's bytes read, decoded
and hashed every week, and each hash compared with every kept one (``int`` XOR + popcount, not
``ImageHash`` objects), then the same split and manifest. It runs at 10k only: it is quadratic.

The near-duplicate search alone is measured too, on the catalogue's stored hashes at both sizes:
:func:`sleeve.phash.near_duplicates` (banded index) against a full scan in numpy, each hash
against the array of kept ones (vectorised XOR + ``bitwise_count``), which a numpy user writes
when the hashes are already stored. Both must give the same answer.
"""

from __future__ import annotations

import io
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

SIZES = (10_000, 100_000)
ROUNDS = 3
NEW_SHARE = 0.01
GENERATED = 200
WEEK_START = datetime(2026, 3, 2, 3, tzinfo=UTC)
WEEK_END = WEEK_START + timedelta(days=7)


def _png(seed: int, tweak: bool = False) -> bytes:
    """A random 8x8 pattern at 64 px; ``tweak`` nudges one pixel (other bytes, same picture)."""
    import numpy as np
    from PIL import Image

    small = np.random.default_rng(seed).integers(0, 250, (8, 8, 3), dtype=np.uint8)
    if tweak:
        small[0, 0, 0] += 3
    buf = io.BytesIO()
    Image.fromarray(small).resize((64, 64), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def snapshot(warehouse, store, start: datetime, end: datetime) -> dict:
    """The snapshot this benchmark times: with the crawled covers (``include_covers``, off by
    default), which is what grows with the catalogue."""
    from training.snapshot import SnapshotConfig, build_snapshot

    return build_snapshot(warehouse, store, start, end, SnapshotConfig(include_covers=True))


def build_catalogue(root: Path, n: int, *, all_files: bool, generated: int = GENERATED) -> tuple:
    """A migrated warehouse and a store with ``n`` covers; returns (warehouse, store, new song
    ids, the earlier weeks' manifest keys). With ``all_files`` every cover has its bytes in the
    store (the baseline reads them all) and its row the hash of those bytes."""
    import duckdb

    from sleeve.ids import sha256_bytes
    from sleeve.phash import phash_hex
    from sleeve.store import open_store
    from sleeve.warehouse.duckdb_backend import DuckDBWarehouse
    from training.dataset import decode_image
    from training.snapshot import held_out_key

    warehouse, store = DuckDBWarehouse(root / "warehouse.duckdb"), open_store(f"file://{root / 'store'}")
    warehouse.migrate()
    every_new = round(1 / NEW_SHARE)
    created = WEEK_START - timedelta(days=30)
    with duckdb.connect(str(warehouse.path)) as con:
        con.execute("INSERT INTO songs (song_id, source, source_id, album_id) SELECT 's' || i, 'sample', 's' || i, "
                    "CASE WHEN i % 3 = 0 THEN 'al' || (i // 3) END FROM range(?) t(i)", [n])
        con.execute("INSERT INTO prompts (prompt_id, song_id, positive, captions, created_at) SELECT 'p' || i, "
                    "'s' || i, 'album cover art ' || i, '[\"cover ' || i || '\", \"art ' || i || '\"]', ? "
                    "FROM range(?) t(i)", [created, n])
        # hashes as the crawler stores them; every 50th cover a near-duplicate (1-3 bits) of the one before
        con.execute("INSERT INTO covers (song_id, sha256, uri, width, height, phash, created_at) "
                    "SELECT 's' || i, sha256('c' || i), ? || '/covers/' || i || '.png', 64, 64, "
                    "printf('%016x', CASE WHEN i % 50 = 1 THEN xor(hash(i - 1), (1::UBIGINT << (i % 60)) "
                    "| (1::UBIGINT << ((i + 7) % 60))) ELSE hash(i) END), ? FROM range(?) t(i)",
                    [store.url, created, n])
    new, covers = [], []
    for i in range(n):
        if i % every_new == 0 or all_files:
            data = _png(i - 1, tweak=True) if i % 50 == 1 else _png(i)
            store.put_bytes(f"covers/{i}.png", data)
            if i % every_new == 0:
                new.append(f"s{i}")
                covers.append({"song_id": f"s{i}", "sha256": sha256_bytes(data), "phash": None, "width": None,
                               "height": None})
            elif all_files:  # the baseline reads these bytes: the row matches them
                covers.append({"song_id": f"s{i}", "sha256": sha256_bytes(data),
                               "phash": phash_hex(decode_image(data)), "width": 64, "height": 64})
    warehouse.upsert("covers", covers)
    images, reviews = [], []
    for w in range(5):  # this week and the four before: GENERATED reviewed images each
        day = WEEK_START - timedelta(days=7 * w - 2)
        for k in range(generated):
            name = f"w{w}g{k}"
            data = _png(10_000_000 + 1000 * w + k)
            store.put_bytes(f"images/{name}.png", data)
            images.append({"image_id": name, "request_id": f"w{w}r{k // 4}", "image_index": k % 4,
                           "uri": store.uri(f"images/{name}.png"), "sha256": sha256_bytes(data),
                           "prompt_id": f"p{k}", "model_version": "base", "adapters": "[]", "width": 64,
                           "height": 64, "created_at": day})
            reviews.append({"review_id": f"rv-{name}", "image_id": name, "user_id": f"u{k % 7}", "rating": 5,
                            "created_at": day})
    warehouse.upsert("images", images)
    warehouse.upsert("reviews", reviews)
    # four earlier promoted weeks (their snapshots built once, untimed) give the reference set
    earlier_keys = set()
    for w in range(1, 5):
        start = WEEK_START - timedelta(days=7 * w)
        earlier = snapshot(warehouse, store, start, start + timedelta(days=7))
        warehouse.upsert("training_runs", [{"run_id": f"run-{w}", "kind": "style", "status": "trained",
                                            "decision": "promote", "interval_start": start,
                                            "manifest_uri": earlier["uri"]}])
        key = earlier["uri"].removeprefix(store.url + "/")
        earlier_keys |= {key, held_out_key(key)}
    _reset(warehouse, store, new, earlier_keys)
    return warehouse, store, new, earlier_keys


def _reset(warehouse, store, new: list[str], keep: set[str]) -> None:
    """Undo a round: the new covers and the week's images lose their hashes again; the week's
    manifest is deleted (the earlier weeks' stay)."""
    warehouse.execute("UPDATE covers SET phash = NULL, width = NULL, height = NULL WHERE song_id IN UNNEST(@ids)",
                      {"ids": new})
    warehouse.execute("UPDATE images SET phash = NULL WHERE image_id LIKE 'w0g%'")
    for key in set(store.list("training/snapshots/")) - keep:
        store.delete(key)


def quadratic_snapshot(warehouse, store) -> dict:
    """The old algorithm: read and hash every candidate, compare with every kept hash."""
    from sleeve.ids import content_hash, sha256_bytes
    from sleeve.phash import parse_phash, phash_hex
    from sleeve.store import write_json
    from training.dataset import decode_image, read_image_bytes
    from training.snapshot import SnapshotConfig, assign_splits, select_candidates

    config = SnapshotConfig(reference_weeks=0, include_covers=True)  # the same candidates as snapshot()
    rows, _, _ = select_candidates(warehouse, store, WEEK_START, WEEK_END, config)
    items, dropped, digests, kept = [], [], set(), []
    for row in rows:
        try:
            data = read_image_bytes(row["uri"], store)
            image = decode_image(data)
        except (ValueError, OSError, KeyError) as exc:
            dropped.append({"ref": row["ref"], "reason": f"unreadable: {exc}"})
            continue
        digest = sha256_bytes(data)
        if min(image.size) < config.min_side or digest in digests:
            dropped.append({"ref": row["ref"], "reason": "small or duplicate"})
            continue
        value = parse_phash(phash_hex(image))
        if any((value ^ other).bit_count() <= config.phash_distance for other in kept):
            dropped.append({"ref": row["ref"], "reason": "near-duplicate"})
            continue
        digests.add(digest)
        kept.append(value)
        items.append({k: v for k, v in row.items() if not k.startswith("_")} | {"sha256": digest})
    manifest = {"items": assign_splits(items, config), "dropped": dropped}
    write_json(store, f"training/snapshots/{content_hash(manifest)}.json", manifest)
    return {"examples": len(items), "dropped": len(dropped)}


def numpy_full_scan(values: list[int], max_distance: int) -> list[int | None]:
    """The stock near-duplicate search: each hash against every kept one, vectorised."""
    import numpy as np

    hashes = np.array(values, dtype=np.uint64)
    kept, kept_at = np.empty_like(hashes), np.empty(len(values), dtype=np.int64)
    count, twins = 0, []
    for j, value in enumerate(hashes):
        near = np.flatnonzero(np.bitwise_count(kept[:count] ^ value) <= max_distance)
        if near.size:
            twins.append(int(kept_at[near[0]]))
        else:
            twins.append(None)
            kept[count], kept_at[count] = value, j
            count += 1
    return twins


def _stored_hashes(warehouse) -> list[int]:
    from sleeve.phash import parse_phash

    rows = warehouse.query("SELECT phash FROM covers WHERE phash IS NOT NULL ORDER BY song_id")
    return [parse_phash(r["phash"]) for r in rows]


def _rounds(fn, reset) -> tuple[list[float], object]:
    times, out = [], None
    for _ in range(ROUNDS):
        reset()
        started = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - started)
    return times, out


DESCRIPTIONS = {
    "snapshot_seconds_100k": ("build_snapshot end to end on 100k crawled covers (1 % new this week) + 200 reviewed "
                              "images, 4 earlier weeks as reference; only the week's new images are read"),
    "snapshot_seconds_10k": "snapshot_seconds_100k measured on 10k covers",
    "snapshot_speedup_vs_quadratic_10k": ("the old way at 10k (every cover read, hashed and compared with every "
                                          "kept hash, same split and manifest) / Sleeve, same rounds"),
    "near_duplicates_speedup_vs_numpy_scan_100k": ("near-duplicate search on the stored hashes: a vectorised numpy "
                                                   "full scan / the banded index, same answer checked"),
}


def _seconds(times: list[float]) -> list[float]:
    return [round(t, 3) for t in times]


def run() -> dict:
    from sleeve.phash import near_duplicates
    from training.snapshot import SnapshotConfig

    values, sleeve_at = {}, {}
    bits = SnapshotConfig().phash_distance
    for n in SIZES:
        label = f"{n // 1000}k"
        with tempfile.TemporaryDirectory(prefix="sleeve-bench-snapshot-") as tmp:
            warehouse, store, new, keep = build_catalogue(Path(tmp), n, all_files=n == SIZES[0])
            times, snap = _rounds(lambda w=warehouse, s=store: snapshot(w, s, WEEK_START, WEEK_END),
                                  lambda w=warehouse, s=store, ids=new, k=keep: _reset(w, s, ids, k))
            sleeve_at[n] = times
            hashes = _stored_hashes(warehouse)
            index_times, twins = _rounds(lambda h=hashes: near_duplicates(h, bits), lambda: None)
            scan_times, scan_twins = _rounds(lambda h=hashes: numpy_full_scan(h, bits), lambda: None)
            if twins != scan_twins:
                raise AssertionError("the banded index and the full scan found different near-duplicates")
            counts = snap["counts"]
            values |= {f"snapshot_seconds_{label}": _seconds(times),
                       f"near_duplicates_index_seconds_{label}": _seconds(index_times),
                       f"baseline_numpy_full_scan_seconds_{label}": _seconds(scan_times),
                       f"near_duplicates_speedup_vs_numpy_scan_{label}": [
                           round(s / max(i, 1e-9), 2) for s, i in zip(scan_times, index_times, strict=True)],
                       f"snapshot_images_hashed_now_{label}": snap["hashed_now"],
                       f"snapshot_reference_images_{label}": counts["reference"]}
            if n == SIZES[0]:
                base_times, base = _rounds(lambda w=warehouse, s=store: quadratic_snapshot(w, s),
                                           lambda w=warehouse, s=store, ids=new, k=keep: _reset(w, s, ids, k))
                if base["examples"] != counts["examples"]:
                    raise AssertionError(f"the baseline kept {base['examples']} images, the snapshot "
                                         f"{counts['examples']}: they must do the same work")
                values |= {f"baseline_quadratic_seconds_{label}": _seconds(base_times),
                           f"snapshot_speedup_vs_quadratic_{label}": [
                               round(b / o, 2) for b, o in zip(base_times, times, strict=True)]}
    small, large = SIZES
    values[f"snapshot_growth_{large // 1000}k_over_{small // 1000}k"] = round(
        statistics.median(sleeve_at[large]) / statistics.median(sleeve_at[small]), 2)
    return values


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
