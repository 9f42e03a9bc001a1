"""sleeve.preflight.check_ready: each need's missing piece is named in one line, with the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

from sleeve.preflight import NotReady, check_ready, reporting_settings
from sleeve.settings import SettingsError, load_settings


@pytest.fixture
def home(tmp_path):
    """A SLEEVE_HOME as `make setup` leaves it (a warehouse file, a tiny-model folder)."""
    (tmp_path / "warehouse.duckdb").write_bytes(b"")
    (tmp_path / "models" / "tiny-sdxl").mkdir(parents=True)
    (tmp_path / "models" / "tiny-sdxl" / "model_index.json").write_text("{}")
    return tmp_path


def ready(home, needs, connection=None, **env):
    env = {"SLEEVE_HOME": str(home), "SLEEVE_PII_KEY": "test-pii-key", **env}  # outside the demo it is required
    return check_ready(load_settings(env), needs, env=env, connection=connection)


def conn(conn_type="slack", password="", host="", extra=None):
    return SimpleNamespace(conn_type=conn_type, password=password, host=host, extra_dejson=extra or {})


def test_the_embedded_defaults_are_ready(home):
    assert ready(home, ("warehouse", "store", "notifier", "labeller", "gpu", "base_model")).home == home.resolve()


@pytest.mark.parametrize("env, connections, needs, words", [
    ({"SLEEVE_NOTIFIER": "slack"}, {}, "notifier", ["SLEEVE_NOTIFIER=slack", "SLEEVE_SLACK_TOKEN", "sleeve_slack"]),
    ({"SLEEVE_NOTIFIER": "slack", "SLEEVE_SLACK_TOKEN": "xoxb-1"}, {}, "notifier", ["SLEEVE_SLACK_CHANNEL"]),
    ({"SLEEVE_NOTIFIER": "slack", "SLEEVE_SLACK_WEBHOOK": "hooks.slack.com/x"}, {}, "notifier", ["not a URL"]),
    ({"SLEEVE_NOTIFIER": "slack"}, {"sleeve_slack": conn(password="")}, "notifier", ["no password", "xoxb"]),
    ({"SLEEVE_NOTIFIER": "slack"}, {"sleeve_slack": conn(password="xoxb-1")}, "notifier", ["extra.channel"]),
    ({"SLEEVE_LABELLER": "llm"}, {}, "labeller", ["SLEEVE_LLM_BASE_URL", "sleeve_llm"]),
    ({"SLEEVE_LABELLER": "llm"}, {"sleeve_llm": conn("http", host="https://llm")}, "labeller", ["model"]),
    ({"SLEEVE_BASE_MODEL": "/nowhere/sdxl"}, {}, "base_model", ["SLEEVE_BASE_MODEL=/nowhere/sdxl", "model_index"]),
    ({"SLEEVE_BASE_MODEL": "acme/unknown-sdxl", "HF_HUB_OFFLINE": "1"}, {}, "base_model", ["Hugging Face cache"]),
    ({"SLEEVE_GPU_EXECUTOR": "kubernetes", "SLEEVE_GPU_IMAGE": "img:1"}, {}, "gpu", ["cncf-kubernetes"]),
    ({"SLEEVE_STORE_URL": "gs://bucket/p", "GOOGLE_APPLICATION_CREDENTIALS": "/nowhere/key.json"}, {}, "store",
     ["GOOGLE_APPLICATION_CREDENTIALS=/nowhere/key.json"]),
])
def test_a_missing_piece_is_named_with_its_fix(home, env, connections, needs, words):
    with pytest.raises(NotReady) as err:
        ready(home, (needs,), connection=connections.get, **env)
    message = str(err.value)
    assert "\n" not in message and all(w in message for w in words), message


@pytest.mark.parametrize("env, connections", [
    ({"SLEEVE_NOTIFIER": "slack", "SLEEVE_SLACK_TOKEN": "xoxb-1", "SLEEVE_SLACK_CHANNEL": "C1"}, {}),
    ({"SLEEVE_NOTIFIER": "slack", "SLEEVE_SLACK_WEBHOOK": "https://hooks.slack.com/services/x"}, {}),
    ({"SLEEVE_NOTIFIER": "slack"}, {"sleeve_slack": conn(password="xoxb-1", extra={"channel": "C1"})}),
    ({"SLEEVE_NOTIFIER": "slack"}, {"sleeve_slack": conn("slackwebhook", password="https://hooks.slack.com/x")}),
    ({"SLEEVE_LABELLER": "llm"}, {"sleeve_llm": conn("http", host="https://llm", extra={"model": "m"})}),
    ({"SLEEVE_STORE_URL": "gs://bucket/p"}, {"sleeve_gcp": conn("google_cloud_platform")}),
])
def test_what_is_configured_passes(home, env, connections):
    ready(home, ("notifier", "labeller", "store"), connection=connections.get, **env)


def test_secrets_never_appear_in_the_message(home):
    with pytest.raises(NotReady) as err:
        ready(home, ("notifier",), SLEEVE_NOTIFIER="slack", SLEEVE_SLACK_WEBHOOK="not-a-url-secret-T0/B0/xyz")
    assert "secret" not in str(err.value)


def test_a_missing_warehouse_says_run_make_setup(tmp_path):
    with pytest.raises(NotReady, match=r"make setup"):
        ready(tmp_path, ("warehouse",))


def test_unknown_need_is_a_programming_error(home):
    with pytest.raises(ValueError, match="unknown need"):
        ready(home, ("gpus",))


def test_reporting_settings_keep_the_platform_when_a_stage_setting_is_bad(tmp_path):
    env = {"SLEEVE_HOME": str(tmp_path), "SLEEVE_CRAWL_SOURCE": "musicbrainz", "SLEEVE_NOTIFIER": "slack",
           "SLEEVE_SLACK_CHANNEL": "C1"}
    with pytest.raises(SettingsError):
        load_settings(env)
    settings, problem = reporting_settings(env)
    assert settings.notifier == "slack" and settings.slack_channel == "C1" and "SLEEVE_CRAWL_CONTACT" in problem
    settings, problem = reporting_settings({**env, "SLEEVE_WAREHOUSE": "postgres"})  # the warehouse itself is bad
    assert settings.notifier == "slack" and settings.warehouse == "duckdb" and problem
    settings, problem = reporting_settings({"SLEEVE_HOME": str(tmp_path)})
    assert problem is None


def test_a_gpu_job_with_bad_settings_exits_2_in_one_line(sleeve_env, tmp_path, monkeypatch):
    """Each GPU job checks its settings before loading any model; the launcher fails the task
    with that line and without retrying (tests/plugins/test_gpu.py)."""
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"images": []}))
    monkeypatch.setenv("SLEEVE_TORCH_THREADS", "many")
    out = subprocess.run([sys.executable, "-m", "inference.generate_job", "--manifest", manifest.as_uri(),
                          "--output", (tmp_path / "out").as_uri()], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "configuration error: SLEEVE_TORCH_THREADS='many' is not an integer; set SLEEVE_TORCH_THREADS to a whole "
        "number like 1"]


def test_a_missing_pii_key_is_still_alerted_where_alerts_go(tmp_path, monkeypatch):
    monkeypatch.delenv("SLEEVE_PII_KEY", raising=False)
    env = {"SLEEVE_HOME": str(tmp_path), "SLEEVE_NOTIFIER": "slack", "SLEEVE_SLACK_CHANNEL": "C1"}
    settings, problem = reporting_settings(env)
    assert settings.notifier == "slack" and "SLEEVE_PII_KEY" in problem


def test_a_bigquery_emulator_needs_no_credentials(home, monkeypatch):
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("HOME", str(home))  # no gcloud application-default credentials to find
    bq = {"SLEEVE_WAREHOUSE": "bigquery", "SLEEVE_BQ_PROJECT": "p", "SLEEVE_BQ_DATASET": "d"}
    with pytest.raises(NotReady, match="Google credentials"):
        ready(home, ("warehouse",), **bq)
    ready(home, ("warehouse",), BIGQUERY_EMULATOR_HOST="http://127.0.0.1:9050", **bq)
