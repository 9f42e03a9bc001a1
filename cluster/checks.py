"""What "nothing is duplicated" means after a fault, measured on the warehouse, the object
store and the Slack server. Each check returns the duplicates it found (empty: none)."""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

from sleeve.store import ObjectStore
from sleeve.warehouse import KEYS, Warehouse
from sleeve.warehouse.base import ident

# Content-addressed folders: the same bytes must never be stored under two keys there.
CONTENT_PREFIXES = ("images/", "covers/")


def duplicate_rows(warehouse: Warehouse) -> dict[str, int]:
    """table -> rows beyond the first for each natural key (an upsert never leaves any)."""
    found = {}
    present = set(warehouse.tables())
    for table, key in sorted(KEYS.items()):
        if table not in present:
            continue
        cols = ", ".join(ident(k) for k in key)
        rows = warehouse.query(f"SELECT COUNT(*) - 1 AS extra FROM {ident(table)} GROUP BY {cols} HAVING COUNT(*) > 1")
        if rows:
            found[table] = sum(r["extra"] for r in rows)
    return found


def duplicate_versions(warehouse: Warehouse) -> dict[str, int]:
    """Registry: one model version per training run (a retried train/conclude registers once)."""
    rows = warehouse.query("SELECT training_run_id, COUNT(*) AS n FROM model_versions "
                           "WHERE training_run_id IS NOT NULL GROUP BY training_run_id HAVING COUNT(*) > 1")
    return {r["training_run_id"]: r["n"] - 1 for r in rows}


def duplicate_objects(store: ObjectStore, prefixes=CONTENT_PREFIXES) -> dict[str, list[str]]:
    """sha256 -> keys, for identical bytes stored under more than one key."""
    by_digest: dict[str, list[str]] = defaultdict(list)
    for prefix in prefixes:
        for key in store.list(prefix):
            if key.endswith(".json"):
                continue  # records and manifests, not content
            by_digest[hashlib.sha256(store.get_bytes(key)).hexdigest()].append(key)
    return {d: keys for d, keys in by_digest.items() if len(keys) > 1}


def duplicate_posts(messages: list[dict]) -> dict[str, int]:
    """Top-level Slack messages per text header (one weekly report per week): extra posts."""
    heads = Counter((m["text"] or "").splitlines()[0] for m in messages if not m.get("thread_ts"))
    return {head: n - 1 for head, n in heads.items() if n > 1}


def count(found: dict) -> int:
    return sum(v if isinstance(v, int) else len(v) - 1 for v in found.values())


def all_duplicates(warehouse: Warehouse, store: ObjectStore, messages: list[dict]) -> dict[str, dict]:
    return {"rows": duplicate_rows(warehouse), "registry_versions": duplicate_versions(warehouse),
            "objects": duplicate_objects(store), "slack_posts": duplicate_posts(messages)}


def duplicate_files(files: list[dict]) -> dict[str, int]:
    """Slack files shared more than once under the same message with the same name."""
    shared = Counter((f.get("thread_ts"), f.get("name")) for f in files if f.get("shared"))
    return {f"{ts} {name}": n - 1 for (ts, name), n in shared.items() if n > 1}
