"""The local cluster and docker-compose.yaml share one Airflow configuration (cluster/config.py):
the compose block is exactly what it renders, and the local environment holds the same
settings with loopback addresses."""

from __future__ import annotations

import pytest
import yaml

from cluster import config
from cluster.services import REDIS_ARGS

LOCAL_VALUES = {
    "auth_manager": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
    "postgres_password": "pw", "postgres_host": "127.0.0.1:5999", "redis_host": "127.0.0.1:6999",
    "visibility_timeout": "172800", "fernet_key": "k", "jwt_secret": "j", "api_secret_key": "a",
    "paused_at_creation": "true", "api_url": "http://127.0.0.1:8999", "scheduler_health_port": "8998",
    "dags": "/repo/dags", "plugins": "/repo/plugins", "sleeve_home": "/tmp/h", "pii_key": "p",
}


def test_compose_block_is_what_the_shared_source_renders():
    _, _, indent = config._block_span(config.COMPOSE.read_text())
    assert config.compose_block_in_file() == config.compose_block(indent), \
        "docker-compose.yaml drifted from cluster/config.py: run python -m cluster.config --write-compose"


def test_a_hand_edit_of_the_compose_block_is_caught(tmp_path):
    edited = tmp_path / "docker-compose.yaml"
    edited.write_text(config.COMPOSE.read_text().replace("WORKER_PREFETCH_MULTIPLIER: '1'",
                                                        "WORKER_PREFETCH_MULTIPLIER: '4'"))
    _, _, indent = config._block_span(edited.read_text())
    assert config.compose_block_in_file(edited) != config.compose_block(indent)
    assert config.write_compose(edited) and config.compose_block_in_file(edited) == config.compose_block(indent)


def test_compose_environment_loads_as_the_rendered_values():
    env = yaml.safe_load(config.COMPOSE.read_text())["x-airflow-common"]["environment"]
    rendered = config.render(config.SHARED, config.COMPOSE_VALUES)
    assert {k: str(v) for k, v in env.items() if k in rendered} == rendered
    assert set(rendered) <= set(env)


def test_local_cluster_gets_every_shared_setting_on_loopback():
    env = config.local_env(LOCAL_VALUES)
    assert set(env) == {s.name for s in config.SHARED} | {s.name for s in config.TEST_OVERRIDES}
    assert not [v for v in env.values() if "{" in v or "${" in v]
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@127.0.0.1:6999/0"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:5999/airflow")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8999/execution/"
    assert env["AIRFLOW__CELERY__TASK_ACKS_LATE"] == "true"


def test_test_overrides_never_replace_a_production_setting():
    """Overrides only add detection timeouts and the like; a shared setting changed for the
    test would make the test prove something the deployment does not run."""
    assert not {s.name for s in config.SHARED} & {s.name for s in config.TEST_OVERRIDES}
    assert all(s.why for s in config.TEST_OVERRIDES)


def test_render_names_a_missing_placeholder():
    with pytest.raises(KeyError, match="redis_host"):
        config.render(config.SHARED, {k: v for k, v in LOCAL_VALUES.items() if k != "redis_host"})


def test_compose_redis_runs_with_the_cluster_arguments():
    redis = yaml.safe_load(config.COMPOSE.read_text())["services"]["redis"]
    assert redis["command"] == ["redis-server", *REDIS_ARGS]
    assert any(v.endswith(":/data") for v in redis["volumes"]), "the append-only file needs a volume"


def test_cli_check_passes_and_fails(tmp_path, monkeypatch, capsys):
    assert config.main([]) == 0
    edited = tmp_path / "docker-compose.yaml"
    edited.write_text(config.COMPOSE.read_text().replace("AIRFLOW__CORE__LOAD_EXAMPLES: 'false'",
                                                        "AIRFLOW__CORE__LOAD_EXAMPLES: 'true'"))
    monkeypatch.setattr(config, "COMPOSE", edited)
    assert config.main([]) == 1
    assert "out of date" in capsys.readouterr().err
