from __future__ import annotations

from functools import cached_property

from sleeve.store.base import ObjectStore, StoreError, check_key


class GCSStore(ObjectStore):
    """A GCS bucket (optionally under a prefix) through google-cloud-storage.

    ``client`` is the Airflow hook's (credentials from its connection); without one, the
    client uses Application Default Credentials, as GPU jobs do: they run as subprocesses or
    pods without Airflow connections. ``STORAGE_EMULATOR_HOST`` points a client at an emulator.
    Immutable objects use the create-only precondition ``if_generation_match=0``.
    """

    def __init__(self, bucket: str, prefix: str = "", client=None):
        if not bucket:
            raise StoreError("GCS store needs a bucket name")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{bucket}" + (f"/{self.prefix}" if self.prefix else "")
        self._client = client

    @property
    def client(self):
        if self._client is None:  # built on first use: opening a store needs no credentials yet
            from google.cloud import storage

            self._client = storage.Client()
        return self._client

    @cached_property
    def bucket(self):
        return self.client.bucket(self.bucket_name)

    def _name(self, key: str) -> str:
        key = check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key, data, *, content_type=None, create_only=False):
        from google.api_core.exceptions import PreconditionFailed

        blob = self.bucket.blob(self._name(key))
        try:
            # A single-request upload is atomic on GCS: the object appears whole or not at all.
            blob.upload_from_string(data, content_type=content_type or "application/octet-stream",
                                    if_generation_match=0 if create_only else None)
        except PreconditionFailed:
            return False
        return True

    def get_bytes(self, key):
        from google.api_core.exceptions import NotFound

        try:
            return self.bucket.blob(self._name(key)).download_as_bytes()
        except NotFound:
            raise StoreError(f"no object at {self.uri(key)}") from None

    def exists(self, key):
        return self.bucket.blob(self._name(key)).exists()

    def list(self, prefix=""):
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        cut = len(self.prefix) + 1 if self.prefix else 0
        return sorted(b.name[cut:] for b in self.client.list_blobs(self.bucket_name, prefix=full or None))

    def delete(self, key):
        from google.api_core.exceptions import NotFound

        try:
            self.bucket.blob(self._name(key)).delete()
            return True
        except NotFound:
            return False
