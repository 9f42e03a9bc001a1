"""LLMHook: the ``sleeve_llm`` Connection -> an OpenAI-compatible chat client and a labeller.

Connection ``sleeve_llm``: host = base URL (``https://api.openai.com/v1``), password = API key,
extra ``{"model": "gpt-4o-mini", "concurrency": 4}``. Without the connection the hook reads
``SLEEVE_LLM_BASE_URL`` / ``SLEEVE_LLM_MODEL`` / ``SLEEVE_LLM_API_KEY``. The offline labeller
(``SLEEVE_LABELLER=offline``, the default) needs neither.
"""

from __future__ import annotations

import os
from functools import cached_property

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from sleeve.settings import Settings, get_settings


class LLMHook(BaseHook):
    conn_name_attr = "llm_conn_id"
    default_conn_name = "sleeve_llm"
    conn_type = "http"
    hook_name = "Sleeve LLM"

    def __init__(self, llm_conn_id: str = default_conn_name, settings: Settings | None = None):
        super().__init__()
        self.llm_conn_id = llm_conn_id
        self.settings = settings or get_settings()

    def endpoint(self) -> tuple[str, str, str | None, dict]:
        """(base_url, model, api_key, extra) from the connection, else from the environment."""
        try:
            conn = self.get_connection(self.llm_conn_id)
        except AirflowNotFoundException:
            conn = None
        if conn is not None and conn.host:
            extra = conn.extra_dejson
            host = conn.host if "://" in conn.host else f"https://{conn.host}"
            if conn.port and "://" not in conn.host:
                host = f"{host}:{conn.port}"
            return host, extra.get("model") or self.settings.llm_model, conn.password or None, extra
        base_url, model = self.settings.llm_base_url, self.settings.llm_model
        if not (base_url and model):
            raise ValueError(
                f"the LLM labeller needs an endpoint: define Airflow connection {self.llm_conn_id!r} (host = base URL, "
                "password = API key, extra {\"model\": ...}) or set SLEEVE_LLM_BASE_URL and SLEEVE_LLM_MODEL"
            )
        return base_url, model, os.environ.get("SLEEVE_LLM_API_KEY") or None, {}

    @cached_property
    def client(self):
        from inference.llm import ChatClient

        base_url, model, api_key, extra = self.endpoint()
        return ChatClient(base_url, model, api_key, concurrency=int(extra.get("concurrency", 4)),
                          max_retries=int(extra.get("max_retries", 4)))

    def get_conn(self):
        return self.client

    def labeller(self, kind: str | None = None, *, cache=None, corpus=()):
        """The labeller to use: ``kind`` (a DAG param) or ``SLEEVE_LABELLER``. The LLM labeller
        caches answers in ``cache`` (an object store) and falls back to the offline one."""
        from inference.labels import OfflineLabeller
        from inference.llm import LLMLabeller

        kind = (kind or self.settings.labeller).lower()
        offline = OfflineLabeller(corpus)
        if kind == "offline":
            return offline
        if kind == "llm":
            return LLMLabeller(self.client, cache=cache, fallback=offline)
        raise ValueError(f"unknown labeller {kind!r}; use 'offline' or 'llm'")
