"""The first task of every DAG run checks, before any work, that what the run needs is configured
(:func:`sleeve.preflight.check_ready`, with Airflow Connections). A problem fails the task in one
line that names the setting and the fix; the DAGs' retry policy (``dag_defaults``) does not retry
it, since retrying cannot fix configuration."""

from __future__ import annotations

import logging

from sleeve.preflight import NotReady, check_ready
from sleeve.settings import Settings, SettingsError, get_settings

log = logging.getLogger(__name__)


def airflow_connection(conn_id: str):
    """The Airflow Connection ``conn_id``, or None when it is not defined."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None


def preflight(*needs: str) -> Settings:
    """Check the settings and credentials for ``needs`` (see :mod:`sleeve.preflight`); returns
    the settings. Raises :class:`~sleeve.preflight.NotReady` / ``SettingsError`` with one line."""
    try:
        return check_ready(get_settings(), needs, connection=airflow_connection)
    except SettingsError as exc:
        log.error("Sleeve is not ready: %s", exc)
        raise type(exc)(str(exc)) from None  # the one line, without the chain behind it


__all__ = ["NotReady", "airflow_connection", "preflight"]
