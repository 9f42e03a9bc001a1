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


def open_store(url: str, *, client=None) -> ObjectStore:
    """The store rooted at ``url``: ``file:///abs/dir`` or ``gs://bucket[/prefix]``. ``client``
    lets the Airflow hook hand in a google-cloud-storage client built from its connection's
    credentials; without one a GCS store uses Application Default Credentials."""
    if url.startswith("file://"):
        from sleeve.store.local import LocalStore

        return LocalStore(url.removeprefix("file://"))
    if url.startswith("gs://"):
        from sleeve.store.gcs import GCSStore

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        return GCSStore(bucket, prefix, client=client)
    raise StoreError(f"unsupported store URL {url!r}: use file:///abs/dir or gs://bucket/prefix")


def open_uri(uri: str, store: ObjectStore | None = None) -> tuple[ObjectStore, str]:
    """Split a full object URI into the store that holds it and the key inside that store.

    With ``store`` (the configured one) a URI inside it resolves to it, and a gs URI elsewhere
    to a store opened with the same client, so it is read with the connection's credentials (a
    local store has no GCS client: that is an error). Without ``store`` (GPU jobs and CLIs,
    which run without Airflow connections) a gs URI is rooted at its bucket with Application
    Default Credentials. A file URI outside the store is rooted at its parent directory.
    """
    if store is not None and uri.startswith(store.url.rstrip("/") + "/"):
        return store, uri[len(store.url.rstrip("/")) + 1:]
    if uri.startswith("file://"):
        path = uri.removeprefix("file://")
        parent, _, name = path.rpartition("/")
        return open_store(f"file://{parent or '/'}"), name
    if uri.startswith("gs://"):
        from sleeve.store.gcs import GCSStore

        bucket, _, key = uri.removeprefix("gs://").partition("/")
        if store is None:
            return open_store(f"gs://{bucket}"), key
        if not isinstance(store, GCSStore):
            raise StoreError(f"{uri} is outside the configured store {store.url}, which cannot reach GCS")
        return open_store(f"gs://{bucket}", client=store.client), key
    raise StoreError(f"unsupported object URI {uri!r}")


def read_json(store: ObjectStore, key: str) -> object:
    return json.loads(store.get_bytes(key))


def write_json(store: ObjectStore, key: str, obj: object, *, create_only: bool = False) -> bool:
    data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return store.put_bytes(key, data, content_type="application/json", create_only=create_only)
