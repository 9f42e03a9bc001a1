"""Warehouse: DuckDB file (embedded default) or BigQuery, behind one interface."""

from __future__ import annotations

from sleeve.settings import Settings, get_settings
from sleeve.warehouse.base import KEYS, Warehouse, WarehouseError

__all__ = ["KEYS", "Warehouse", "WarehouseError", "open_warehouse"]


def open_warehouse(settings: Settings | None = None, *, client=None) -> Warehouse:
    """The configured warehouse. ``client`` lets the Airflow hook hand in a BigQuery client
    built from its connection's credentials."""
    settings = settings or get_settings()
    if settings.warehouse == "bigquery":
        from sleeve.warehouse.bigquery_backend import BigQueryWarehouse

        return BigQueryWarehouse(settings.bq_project, settings.bq_dataset, settings.bq_location, client=client)
    from sleeve.warehouse.duckdb_backend import DuckDBWarehouse

    return DuckDBWarehouse(settings.warehouse_path)
