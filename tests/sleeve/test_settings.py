from pathlib import Path

import pytest

from sleeve.settings import Settings, SettingsError, load_settings


def test_defaults_work_offline(tmp_path):
    s = load_settings({"SLEEVE_HOME": str(tmp_path)})
    assert s.warehouse == "duckdb" and s.notifier == "outbox" and s.labeller == "offline"
    assert s.warehouse_path == tmp_path / "warehouse.duckdb"
    assert s.store_url == f"file://{tmp_path / 'store'}"
    assert s.base_model == str(tmp_path / "models" / "tiny-sdxl")
    assert s.gpu_executor == "local" and s.gpu_slots == 1


def test_embedded_defaults_are_the_dataclass_defaults(tmp_path):
    """Each default is written once, on the Settings field: an empty environment gives exactly those."""
    assert load_settings({"SLEEVE_HOME": str(tmp_path)}) == Settings(home=tmp_path.resolve())


@pytest.mark.parametrize(
    "env, names",
    [
        ({"SLEEVE_WAREHOUSE": "postgres"}, "SLEEVE_WAREHOUSE"),
        ({"SLEEVE_WAREHOUSE": "bigquery"}, "SLEEVE_BQ_PROJECT"),
        ({"SLEEVE_WAREHOUSE": "bigquery", "SLEEVE_BQ_PROJECT": "p"}, "SLEEVE_BQ_DATASET"),
        ({"SLEEVE_STORE_URL": "s3://bucket"}, "SLEEVE_STORE_URL"),
        ({"SLEEVE_STORE_URL": "gs://"}, "SLEEVE_STORE_URL"),
        ({"SLEEVE_STORE_URL": "file://relative/dir"}, "SLEEVE_STORE_URL"),
        ({"SLEEVE_NOTIFIER": "teams"}, "SLEEVE_NOTIFIER"),
        ({"SLEEVE_LABELLER": "gpt"}, "SLEEVE_LABELLER"),
        ({"SLEEVE_TORCH_THREADS": "-1"}, "SLEEVE_TORCH_THREADS"),
        ({"SLEEVE_GPU_JOB_SERVER": "run/jobs.sock"}, "SLEEVE_GPU_JOB_SERVER"),
        ({"SLEEVE_GPU_JOB_SERVER": "/run/jobs.sock", "SLEEVE_GPU_EXECUTOR": "kubernetes", "SLEEVE_GPU_IMAGE": "i"},
         "SLEEVE_GPU_JOB_SERVER"),
        ({"SLEEVE_LLM_BASE_URL": "ftp://x"}, "SLEEVE_LLM_BASE_URL"),
        ({"SLEEVE_GPU_EXECUTOR": "slurm"}, "SLEEVE_GPU_EXECUTOR"),
        ({"SLEEVE_GPU_SLOTS": "two"}, "SLEEVE_GPU_SLOTS"),
        ({"SLEEVE_GPU_SLOTS": "0"}, "SLEEVE_GPU_SLOTS"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path, env, names):
    with pytest.raises(SettingsError, match=names):
        load_settings({"SLEEVE_HOME": str(tmp_path), **env})


def test_production_settings(tmp_path):
    s = load_settings({
        "SLEEVE_HOME": str(tmp_path), "SLEEVE_WAREHOUSE": "BigQuery", "SLEEVE_BQ_PROJECT": "p",
        "SLEEVE_BQ_DATASET": "d", "SLEEVE_STORE_URL": "gs://bucket/sleeve/", "SLEEVE_NOTIFIER": "slack",
        "SLEEVE_SLACK_CHANNEL": "C1", "SLEEVE_LABELLER": "llm", "SLEEVE_LLM_BASE_URL": "https://llm/v1/",
        "SLEEVE_LLM_MODEL": "m", "SLEEVE_GPU_EXECUTOR": "celery", "SLEEVE_GPU_SLOTS": "4",
        "SLEEVE_PII_KEY": "a-long-random-production-secret",
    })
    assert (s.warehouse, s.store_url, s.llm_base_url, s.gpu_slots) == ("bigquery", "gs://bucket/sleeve",
                                                                        "https://llm/v1", 4)


def test_secrets_not_in_repr(tmp_path):
    s = load_settings({"SLEEVE_HOME": str(tmp_path), "SLEEVE_PII_KEY": "very-secret"})
    assert s.pii_key == "very-secret" and "very-secret" not in repr(s)


def test_connection_only_slack_and_llm_are_accepted(tmp_path):
    """The webhook/token and the LLM endpoint may live only in Airflow Connections; the hooks
    validate them at use (tests/plugins/test_notifier.py, test_llm_hook.py)."""
    s = load_settings({"SLEEVE_HOME": str(tmp_path), "SLEEVE_NOTIFIER": "slack", "SLEEVE_LABELLER": "llm",
                       "SLEEVE_PII_KEY": "k"})
    assert (s.notifier, s.labeller, s.llm_base_url) == ("slack", "llm", "")


OUTSIDE_THE_DEMO = [
    {"SLEEVE_WAREHOUSE": "bigquery", "SLEEVE_BQ_PROJECT": "p", "SLEEVE_BQ_DATASET": "d"},
    {"SLEEVE_STORE_URL": "gs://bucket/sleeve"},
    {"SLEEVE_STORE_URL": "file:///srv/sleeve-store"},
    {"SLEEVE_NOTIFIER": "slack"},
]


@pytest.mark.parametrize("env", OUTSIDE_THE_DEMO, ids=lambda e: ",".join(e))
def test_outside_the_demo_the_pii_key_must_be_a_secret(tmp_path, env):
    env = {"SLEEVE_HOME": str(tmp_path), **env}
    for key in ({}, {"SLEEVE_PII_KEY": ""}, {"SLEEVE_PII_KEY": Settings.pii_key}):  # missing, empty, the public one
        with pytest.raises(SettingsError, match="SLEEVE_PII_KEY") as err:
            load_settings({**env, **key})
        message = str(err.value)
        assert "\n" not in message and "set SLEEVE_PII_KEY" in message, message
    assert load_settings({**env, "SLEEVE_PII_KEY": "s3cret-s3cret"}).pii_key == "s3cret-s3cret"


def test_the_demo_and_gpu_jobs_need_no_pii_key(tmp_path):
    """The embedded defaults run on the demo key; a GPU job never sees an email, so it runs without one."""
    assert load_settings({"SLEEVE_HOME": str(tmp_path)}).pii_key == Settings.pii_key
    store_only = {"SLEEVE_HOME": str(tmp_path), "SLEEVE_STORE_URL": "gs://bucket/sleeve"}
    assert load_settings(store_only, gpu_job=True).store_url == "gs://bucket/sleeve"


def test_scratch_dir_setting(tmp_path):
    assert load_settings({"SLEEVE_HOME": str(tmp_path)}).scratch_dir == tmp_path / "scratch"
    assert load_settings({"SLEEVE_HOME": str(tmp_path), "SLEEVE_SCRATCH_DIR": "/mnt/nvme/sleeve"}).scratch_dir \
        == Path("/mnt/nvme/sleeve")
    with pytest.raises(SettingsError, match="SLEEVE_SCRATCH_DIR"):
        load_settings({"SLEEVE_HOME": str(tmp_path), "SLEEVE_SCRATCH_DIR": "relative/dir"})
