"""Forget a user: remove their photos, adapters and images, and the rows that point at them.

    python -m training.privacy forget USER_ID

What goes: everything under the user's store prefix ``users/<user_id>/`` (normalised photos,
uploads, DreamBooth adapters, their training checkpoints and manifests, personalised covers,
and temporary files of writes killed there); the user's folders in the scratch root of the
machine this runs on (``SLEEVE_SCRATCH_DIR``: what a killed personalisation job left; on other
GPU workers the next job sweeps such folders); image objects of the user's
generation requests that no other row still references; and the warehouse rows that point at
them (images, their reviews, the user's generation requests, personalisation requests,
dreambooth model versions and their training runs), the reviews the user wrote and the user's
own row (masked and hashed email). What stays: one ``deletion_audit`` row
saying what was removed (counts only, no content). Re-running is safe: it deletes what is left
and audits again. A user id Sleeve has never seen (no row, no object, no earlier deletion) is an
error: nothing is deleted and no audit row claims a deletion.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from sleeve.ids import stable_id
from sleeve.keys import image_record_key, user_prefix
from sleeve.scratch import forget as forget_scratch
from sleeve.store import ObjectStore, StoreError, open_uri
from sleeve.warehouse import Warehouse

# Where a user id can appear; a user found in none of them (nor in the store) is unknown.
USER_TABLES = ("users", "generation_requests", "personalization_requests", "reviews", "model_versions",
               "deletion_audit")


class UnknownUser(LookupError):
    pass


def is_known(warehouse: Warehouse, store: ObjectStore, user_id: str) -> bool:
    """Whether ``user_id`` appears in any user table, in the store, or in an earlier deletion."""
    if store.list(user_prefix(user_id)):
        return True
    return any(warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE user_id = @u", {"u": user_id})[0]["n"]
               for table in USER_TABLES)


def _objects_outside_prefix(store: ObjectStore, uris: set[str], prefix: str) -> list[tuple[ObjectStore, str]]:
    out = []
    for uri in sorted(u for u in uris if u):
        try:
            src, key = open_uri(uri, store)
        except StoreError:
            continue
        if not (src.url == store.url and key.startswith(prefix)):
            out.append((src, key))
    return out


def forget_user(warehouse: Warehouse, store: ObjectStore, user_id: str, *, requested_by: str = "operator",
                now: datetime | None = None) -> dict:
    """Delete the user's personal data; returns (and audits) the counts removed. Raises
    :class:`UnknownUser` (deleting and auditing nothing) for a user id never seen."""
    prefix = user_prefix(user_id)
    if not is_known(warehouse, store, user_id):
        raise UnknownUser(f"no user {user_id!r} in the warehouse or the store (and none forgotten before): "
                          "nothing deleted, nothing audited; check the id (users.user_id)")
    now = now or datetime.now(UTC)  # an audit records when the deletion really happened
    p = {"user_id": user_id}
    requests = [r["request_id"] for r in warehouse.query(
        "SELECT request_id FROM generation_requests WHERE user_id = @user_id", p)]
    images = warehouse.query(
        "SELECT image_id, uri, thumb_uri FROM images WHERE request_id IN UNNEST(@ids)", {"ids": requests or [""]})
    image_ids = [r["image_id"] for r in images] or [""]
    versions = warehouse.query(
        "SELECT version, adapter_uri, training_run_id FROM model_versions WHERE user_id = @user_id AND kind = 'dreambooth'",
        p)
    version_ids = [v["version"] for v in versions] or [""]
    run_ids = [v["training_run_id"] for v in versions if v["training_run_id"]] or [""]

    # Objects first (rows are the index to them): the user's prefix, then image/adapter objects
    # stored elsewhere (content-addressed generator output) unless another row still uses them.
    objects = store.delete_prefix(prefix)
    image_uris = {u for r in images for u in (r["uri"], r["thumb_uri"])}
    shared = {r["u"] for r in warehouse.query(
        "SELECT uri AS u FROM images WHERE uri IN UNNEST(@uris) AND image_id NOT IN UNNEST(@ids) "
        "UNION ALL SELECT thumb_uri AS u FROM images WHERE thumb_uri IN UNNEST(@uris) AND image_id NOT IN UNNEST(@ids)",
        {"uris": sorted(u for u in image_uris if u) or [""], "ids": image_ids})}
    for src, key in _objects_outside_prefix(store, image_uris - shared, prefix):
        objects += int(src.delete(key))
    for image_id in image_ids:  # the generator's per-image resume records
        objects += int(bool(image_id) and store.delete(image_record_key(image_id)))
    for src, key in _objects_outside_prefix(store, {v["adapter_uri"] for v in versions}, prefix):
        # An adapter URI names a folder of artefacts (or, elsewhere, a single file).
        objects += src.delete_prefix(key.rstrip("/") + "/") + (src.exists(key) and src.delete(key))

    scratch_files = forget_scratch(user_id)
    objects += scratch_files

    deletes = {
        "reviews": ("image_id IN UNNEST(@ids) OR user_id = @user_id", {"ids": image_ids, **p}),
        "images": ("image_id IN UNNEST(@ids)", {"ids": image_ids}),
        "generation_requests": ("user_id = @user_id", p),
        "personalization_requests": ("user_id = @user_id", p),
        "training_runs": ("run_id IN UNNEST(@ids)", {"ids": run_ids}),
        "model_versions": ("version IN UNNEST(@ids)", {"ids": version_ids}),
        "users": ("user_id = @user_id", p),
    }
    rows = {}
    for table, (where, params) in deletes.items():
        rows[table] = warehouse.query(f"SELECT COUNT(*) AS n FROM {table} WHERE {where}", params)[0]["n"]
        warehouse.execute(f"DELETE FROM {table} WHERE {where}", params)
    audit = {
        "audit_id": stable_id("forget", user_id, now.isoformat()),
        "user_id": user_id,
        "requested_by": requested_by,
        "objects_deleted": objects,
        "rows_deleted": json.dumps(rows, sort_keys=True),
        "status": "done",
        "reason": None,
        "deleted_at": now,
    }
    warehouse.upsert("deletion_audit", [audit])
    return {"audit_id": audit["audit_id"], "objects_deleted": objects, "scratch_files_deleted": scratch_files,
            "rows_deleted": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.privacy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    forget = sub.add_parser("forget", help="delete a user's photos, adapters and images; audit it")
    forget.add_argument("user_id")
    forget.add_argument("--requested-by", default="cli")
    args = parser.parse_args(argv)

    from sleeve.settings import SettingsError, get_settings
    from sleeve.store import open_store
    from sleeve.warehouse import open_warehouse

    try:
        settings = get_settings()
        # A command line without Airflow connections: GCS and BigQuery use Application Default Credentials.
        summary = forget_user(open_warehouse(settings), open_store(settings.store_url), args.user_id,
                              requested_by=args.requested_by)
    except UnknownUser as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (SettingsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
