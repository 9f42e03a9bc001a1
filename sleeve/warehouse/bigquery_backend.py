from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
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


def _json_row(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items()}


class BigQueryWarehouse(Warehouse):
    """Production backend through google-cloud-bigquery. Unqualified table names resolve to the
    configured dataset (``default_dataset``); upserts stage rows with a load job (no DML quota
    for inserts) and MERGE them with the same SQL text the DuckDB backend runs."""

    def __init__(self, project: str, dataset: str, location: str = "US", client=None):
        if not project or not dataset:
            raise WarehouseError("BigQuery warehouse needs a project and a dataset")
        self.project, self.dataset, self.location = project, dataset, location
        if client is not None:
            self.__dict__["client"] = client

    @cached_property
    def client(self):
        from google.cloud import bigquery

        return bigquery.Client(project=self.project, location=self.location)

    def _job_config(self, params):
        from google.cloud import bigquery

        return bigquery.QueryJobConfig(
            default_dataset=f"{self.project}.{self.dataset}", query_parameters=query_parameters(params)
        )

    def query(self, sql, params=None):
        result = self.client.query(sql, job_config=self._job_config(params)).result()
        return [dict(row.items()) for row in result]

    def execute(self, sql, params=None):
        self.client.query(sql, job_config=self._job_config(params)).result()

    def tables(self):
        return sorted(t.table_id for t in self.client.list_tables(f"{self.project}.{self.dataset}")
                      if not t.table_id.startswith("_stage_"))

    def columns(self, table):
        return [f.name for f in self.client.get_table(f"{self.project}.{self.dataset}.{ident(table)}").schema]

    def _merge(self, table, rows, columns, key):
        from google.cloud import bigquery

        target = self.client.get_table(f"{self.project}.{self.dataset}.{ident(table)}")
        schema = [f for f in target.schema if f.name in columns]
        staging = f"_stage_{table}_{uuid.uuid4().hex[:12]}"
        staging_ref = f"{self.project}.{self.dataset}.{staging}"
        load = bigquery.LoadJobConfig(schema=schema, write_disposition="WRITE_TRUNCATE")
        payload = [json.loads(json.dumps(_json_row(r), default=str)) for r in rows]
        try:
            self.client.load_table_from_json(payload, staging_ref, job_config=load).result()
            self.execute(merge_sql(table, staging, columns, key))
        finally:
            self.client.delete_table(staging_ref, not_found_ok=True)
