"""Object store: a local directory (embedded default) or a GCS bucket, behind one interface.

Keys are relative, '/'-separated paths (``covers/ab/abcd….png``). A store is rooted at a URL
(``file:///abs/dir`` or ``gs://bucket/prefix``); ``store.uri(key)`` gives the full URI that
GPU jobs and warehouse rows carry, and :func:`open_uri` turns such a URI back into
``(store, key)`` anywhere the store is reachable.
"""

from __future__ import annotations

import json

from sleeve.store.base import ObjectStore, StoreError, check_key

__all__ = ["ObjectStore", "StoreError", "check_key", "open_store", "open_uri", "read_json", "write_json"]


def open_store(url: str) -> ObjectStore:
    """The store rooted at ``url``: ``file:///abs/dir`` or ``gs://bucket[/prefix]``."""
    if url.startswith("file://"):
        from sleeve.store.local import LocalStore

        return LocalStore(url.removeprefix("file://"))
    if url.startswith("gs://"):
        from sleeve.store.gcs import GCSStore

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        return GCSStore(bucket, prefix)
    raise StoreError(f"unsupported store URL {url!r}: use file:///abs/dir or gs://bucket/prefix")


def open_uri(uri: str, root_url: str | None = None) -> tuple[ObjectStore, str]:
    """Split a full object URI into the store that holds it and the key inside that store.

    With ``root_url`` the key is relative to that root (the configured store); otherwise a
    file URI is rooted at its parent directory and a gs URI at its bucket.
    """
    if root_url and uri.startswith(root_url.rstrip("/") + "/"):
        return open_store(root_url), uri[len(root_url.rstrip("/")) + 1:]
    if uri.startswith("file://"):
        path = uri.removeprefix("file://")
        parent, _, name = path.rpartition("/")
        return open_store(f"file://{parent or '/'}"), name
    if uri.startswith("gs://"):
        bucket, _, key = uri.removeprefix("gs://").partition("/")
        return open_store(f"gs://{bucket}"), key
    raise StoreError(f"unsupported object URI {uri!r}")


def read_json(store: ObjectStore, key: str) -> object:
    return json.loads(store.get_bytes(key))


def write_json(store: ObjectStore, key: str, obj: object, *, create_only: bool = False) -> bool:
    data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return store.put_bytes(key, data, content_type="application/json", create_only=create_only)
