"""Hooks: an Airflow Connection + a cached client + a few verbs (the provider style).

Each hook returns Sleeve's plain-Python backend for its concern. With no connection configured
the embedded default is used (DuckDB file, local store directory), so nothing needs
credentials on a laptop. In production the connection holds the secret (a service-account key
in its ``extra``), never the code or the environment of the image.

``sleeve_gcp`` is a ``google_cloud_platform`` connection read as the Google provider reads it
(the provider itself is not a dependency: it pulls in most of the Google Cloud SDK): extra
``keyfile_dict`` (the key JSON) or ``key_path`` (a key file), and ``project``, each also under
its older ``extra__google_cloud_platform__`` name. With neither key, Application Default
Credentials (workload identity, ``GOOGLE_APPLICATION_CREDENTIALS``) are used.
"""

from __future__ import annotations

import json
from functools import cached_property

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from sleeve.settings import Settings, get_settings


def gcp_credentials(conn_id: str):
    """``(credentials, project)`` from a ``google_cloud_platform`` connection; credentials are
    None for Application Default Credentials, and both are None when it is not defined."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:  # not defined: Application Default Credentials
        return None, None
    extra = conn.extra_dejson

    def field(name: str):
        return extra.get(name) or extra.get(f"extra__google_cloud_platform__{name}") or None

    from google.oauth2 import service_account

    if info := field("keyfile_dict"):
        info = json.loads(info) if isinstance(info, str) else info
        return service_account.Credentials.from_service_account_info(info), field("project")
    if path := field("key_path"):
        return service_account.Credentials.from_service_account_file(path), field("project")
    return None, field("project")


class WarehouseHook(BaseHook):
    """The configured warehouse: DuckDB (default) or BigQuery via connection ``sleeve_gcp``."""

    conn_name_attr = "gcp_conn_id"
    default_conn_name = "sleeve_gcp"
    conn_type = "google_cloud_platform"
    hook_name = "Sleeve warehouse"

    def __init__(self, gcp_conn_id: str = default_conn_name, settings: Settings | None = None):
        super().__init__()
        self.gcp_conn_id = gcp_conn_id
        self.settings = settings or get_settings()

    @cached_property
    def warehouse(self):
        from sleeve.warehouse import open_warehouse

        client = None
        if self.settings.warehouse == "bigquery":
            from sleeve.warehouse.bigquery_backend import bigquery_client

            credentials, project = gcp_credentials(self.gcp_conn_id)
            client = bigquery_client(project or self.settings.bq_project, self.settings.bq_location, credentials)
        return open_warehouse(self.settings, client=client)

    def get_conn(self):
        return self.warehouse


class ObjectStoreHook(BaseHook):
    """The configured object store: a local directory (default) or GCS via ``sleeve_gcp``."""

    conn_name_attr = "gcp_conn_id"
    default_conn_name = "sleeve_gcp"
    conn_type = "google_cloud_platform"
    hook_name = "Sleeve object store"

    def __init__(self, gcp_conn_id: str = default_conn_name, settings: Settings | None = None):
        super().__init__()
        self.gcp_conn_id = gcp_conn_id
        self.settings = settings or get_settings()

    @cached_property
    def store(self):
        from sleeve.store import open_store

        client = None
        if self.settings.store_url.startswith("gs://"):
            from google.cloud import storage

            credentials, project = gcp_credentials(self.gcp_conn_id)
            client = storage.Client(project=project, credentials=credentials)
        return open_store(self.settings.store_url, client=client)

    def get_conn(self):
        return self.store
