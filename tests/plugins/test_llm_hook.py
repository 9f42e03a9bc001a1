from __future__ import annotations

import json

import pytest
from sleeve_airflow.llm import LLMHook

from inference.labels import OfflineLabeller, Song
from inference.llm import LLMLabeller
from sleeve.settings import get_settings
from tests.inference.llm_server import FakeLLM


@pytest.fixture
def fake_llm():
    with FakeLLM() as server:
        yield server


def _connection(monkeypatch, **conn):
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_LLM", json.dumps({"conn_type": "http", **conn}))


def test_offline_is_the_default_and_needs_no_endpoint():
    labeller = LLMHook().labeller()
    assert isinstance(labeller, OfflineLabeller) and labeller.version == "offline-1"


def test_connection_gives_base_url_key_and_model(monkeypatch, fake_llm, tmp_path):
    _connection(monkeypatch, host=fake_llm.base_url, password="sk-conn",
                extra={"model": "conn-model", "concurrency": 2})
    hook = LLMHook()
    client = hook.get_conn()
    assert client.url == f"{fake_llm.base_url}/chat/completions" and client.model == "conn-model"
    assert client.concurrency == 2
    labeller = hook.labeller("llm")
    assert isinstance(labeller, LLMLabeller) and labeller.version == "llm-conn-model-l1"
    (result,) = labeller.label_batch([Song("s1", title="Blue", lyrics="ocean waves")])
    assert result.labeller == "llm" and result.model == "conn-model"
    assert fake_llm.requests[0]["headers"]["Authorization"] == "Bearer sk-conn"


def test_environment_is_used_without_a_connection(monkeypatch, fake_llm):
    monkeypatch.delenv("AIRFLOW_CONN_SLEEVE_LLM", raising=False)
    monkeypatch.setenv("SLEEVE_LABELLER", "llm")
    monkeypatch.setenv("SLEEVE_LLM_BASE_URL", fake_llm.base_url)
    monkeypatch.setenv("SLEEVE_LLM_MODEL", "env-model")
    monkeypatch.setenv("SLEEVE_LLM_API_KEY", "sk-env")
    get_settings.cache_clear()
    labeller = LLMHook().labeller()  # SLEEVE_LABELLER=llm
    assert isinstance(labeller, LLMLabeller) and labeller.client.model == "env-model"
    labeller.label_batch([Song("s1", title="x")])
    assert fake_llm.requests[0]["headers"]["Authorization"] == "Bearer sk-env"


def test_llm_without_an_endpoint_says_how_to_configure_it(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SLEEVE_LLM", raising=False)
    with pytest.raises(ValueError, match="sleeve_llm.*SLEEVE_LLM_BASE_URL"):
        LLMHook().labeller("llm")
    with pytest.raises(ValueError, match="unknown labeller 'gpt'"):
        LLMHook().labeller("gpt")
