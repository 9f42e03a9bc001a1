from __future__ import annotations

import datetime as dt
import decimal
import os
from functools import cached_property

from sleeve.warehouse.base import Warehouse, WarehouseError, ident, merge_sql


def _scalar_type(value) -> str:
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "BOOL"
    if isinstance(value, int):
        return "INT64"
    if isinstance(value, float):
        return "FLOAT64"
    if isinstance(value, decimal.Decimal):
        return "NUMERIC"
    if isinstance(value, dt.datetime):
        return "TIMESTAMP"
    if isinstance(value, dt.date):
        return "DATE"
    if isinstance(value, bytes):
        return "BYTES"
    return "STRING"


def query_parameters(params: dict | None) -> list:
    """Typed BigQuery query parameters for a ``{name: value}`` dict (lists become arrays)."""
    from google.cloud import bigquery

    out = []
    for name, value in (params or {}).items():
        if isinstance(value, list | tuple):
            element = _scalar_type(value[0]) if value else "STRING"
            out.append(bigquery.ArrayQueryParameter(name, element, list(value)))
        else:
            out.append(bigquery.ScalarQueryParameter(name, _scalar_type(value), value))
    return out


# Rows per MERGE statement: its parameters stay far below BigQuery's 10 MB request limit.
MERGE_BATCH = 500
# Legacy SQL type names in table schemas -> the GoogleSQL names query parameters take.
_STANDARD_TYPES = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL", "RECORD": "STRUCT"}


def bigquery_client(project: str, location: str, credentials=None):
    """A ``google.cloud.bigquery.Client``. With ``BIGQUERY_EMULATOR_HOST`` set (the client's own
    switch to a local emulator) and no credentials given it talks to the emulator anonymously,
    as google-cloud-storage does with ``STORAGE_EMULATOR_HOST``."""
    from google.cloud import bigquery

    if credentials is None and os.environ.get("BIGQUERY_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        credentials = AnonymousCredentials()
    return bigquery.Client(project=project, credentials=credentials, location=location)


class BigQueryWarehouse(Warehouse):
    """Production backend through google-cloud-bigquery. Unqualified table names resolve to the
    configured dataset (``default_dataset``); upserts MERGE rows passed as one typed array
    parameter, with the same MERGE text the DuckDB backend runs."""

    def __init__(self, project: str, dataset: str, location: str = "US", client=None):
        if not project or not dataset:
            raise WarehouseError("BigQuery warehouse needs a project and a dataset")
        self.project, self.dataset, self.location = project, dataset, location
        if client is not None:
            self.__dict__["client"] = client

    @cached_property
    def client(self):
        return bigquery_client(self.project, self.location)

    def _job_config(self, params):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            default_dataset=f"{self.project}.{self.dataset}", query_parameters=query_parameters(params)
        )

    def migrate(self):
        """Create the dataset when it does not exist yet (in the configured location), then
        apply the migrations."""
        from google.cloud import bigquery

        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        dataset.location = self.location
        self.client.create_dataset(dataset, exists_ok=True)
        return super().migrate()

    def query(self, sql, params=None):
        result = self.client.query(sql, job_config=self._job_config(params)).result()
        return [dict(row.items()) for row in result]

    def execute(self, sql, params=None):
        self.client.query(sql, job_config=self._job_config(params)).result()

    def tables(self):
        # _stage_* tables are leftovers of the load-job upserts of earlier versions.
        return sorted(t.table_id for t in self.client.list_tables(f"{self.project}.{self.dataset}")
                      if not t.table_id.startswith("_stage_"))

    def columns(self, table):
        return [f.name for f in self.client.get_table(f"{self.project}.{self.dataset}.{ident(table)}").schema]

    def _merge(self, table, rows, columns, key):
        """One MERGE per batch with the rows as a typed ``ARRAY<STRUCT>`` parameter: no staging
        table and no load job, so nothing is left behind when a task dies mid-upsert."""
        from google.cloud import bigquery

        types = {f.name: _STANDARD_TYPES.get(f.field_type, f.field_type)
                 for f in self.client.get_table(f"{self.project}.{self.dataset}.{ident(table)}").schema}
        sql = merge_sql(table, "UNNEST(@rows)", columns, key)
        for start in range(0, len(rows), MERGE_BATCH):
            structs = [bigquery.StructQueryParameter(None, *[
                bigquery.ScalarQueryParameter(c, types[c], row[c]) for c in columns]) for row in rows[start:start + MERGE_BATCH]]
            config = bigquery.QueryJobConfig(default_dataset=f"{self.project}.{self.dataset}",
                                             query_parameters=[bigquery.ArrayQueryParameter("rows", "STRUCT", structs)])
            self.client.query(sql, job_config=config).result()
