"""Checks made before the service starts, so a bad setting fails at once with one line.

``check()`` is the one call; the generic settings validation it starts with
(``sleeve.settings.load_settings``) may be replaced by the core start-up check without
touching the callers.
"""

from __future__ import annotations

import socket
from pathlib import Path

from sleeve.settings import Settings, SettingsError, load_settings


def check(env: dict | None = None) -> Settings:
    """The validated settings, or SettingsError naming the setting and the fix."""
    settings = load_settings(env)
    if settings.warehouse == "bigquery" and not settings.service_secret:
        raise SettingsError("SLEEVE_WAREHOUSE=bigquery runs the service for real users: set SLEEVE_SERVICE_SECRET "
                            "(the key that signs session cookies, e.g. `openssl rand -hex 32`)")
    if not settings.airflow_api_url and not _is_hub_id(settings.base_model) and not Path(settings.base_model).is_dir():
        raise SettingsError(f"SLEEVE_BASE_MODEL={settings.base_model} does not exist: the in-process worker renders "
                            "with it; run `make setup` (the tiny model) or set SLEEVE_BASE_MODEL")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((settings.service_host, settings.service_port))
        except OSError as exc:
            raise SettingsError(f"SLEEVE_SERVICE_PORT={settings.service_port} on SLEEVE_SERVICE_HOST="
                                f"{settings.service_host} cannot be used ({exc.strerror}); pick a free port") from None
    return settings


def _is_hub_id(name: str) -> bool:
    return not name.startswith(("/", ".", "~")) and name.count("/") == 1 and not Path(name).exists()
