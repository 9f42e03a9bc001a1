"""The GPU-job launcher runs a real job (a fresh subprocess, or forked by the warm job server),
streams its lines and returns result.json."""

import json
import logging
from datetime import timedelta

import pytest

JOB = '''
import sys
from sleeve.jobs import output_location, run_job

def main(manifest, config, output_uri):
    import torch  # preloaded by the job server: computing after the fork must work

    torch.set_num_threads(1)
    print("torch", float((torch.ones(8, 8) @ torch.ones(8, 8)).sum()), flush=True)
    for i in range(3):
        print(f"step {i}", flush=True)
    if config.get("fail"):
        print("boom: out of memory", flush=True)
        sys.exit(3)
    store, prefix = output_location(output_uri)
    store.put_bytes(prefix + "artefact.txt", manifest["text"].encode())
    return {"items": len(manifest["text"]), "scale": config["scale"], "artefact": store.uri(prefix + "artefact.txt")}

if __name__ == "__main__":
    run_job(main)
'''


@pytest.fixture(scope="module")
def job_server(tmp_path_factory):
    from sleeve.jobserver import running_server

    with running_server(tmp_path_factory.mktemp("jobserver") / "jobs.sock", preload=("torch",)) as sock:
        yield sock


@pytest.fixture(params=["subprocess", "job server"])
def echo_job(request, tmp_path, monkeypatch, store):
    if request.param == "job server":
        monkeypatch.setenv("SLEEVE_GPU_JOB_SERVER", request.getfixturevalue("job_server"))
    (tmp_path / "echo_job_mod.py").write_text(JOB)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    from sleeve.store import write_json

    write_json(store, "jobs/in/manifest.json", {"text": "hello"})
    return store.uri("jobs/in/manifest.json"), store.uri("jobs/out")


def test_run_gpu_job_streams_and_returns_result(echo_job, store, caplog):
    from sleeve_airflow.gpu import run_gpu_job

    manifest_uri, output_uri = echo_job
    with caplog.at_level(logging.INFO, logger="sleeve_airflow.gpu"):
        result = run_gpu_job("echo_job_mod", manifest_uri=manifest_uri, config={"scale": 2}, output_uri=output_uri)
    assert result["items"] == 5 and result["scale"] == 2 and result["gpu_seconds"] >= 0
    assert store.get_bytes("jobs/out/artefact.txt") == b"hello"
    assert json.loads(store.get_bytes("jobs/out/result.json"))["items"] == 5
    lines = [r.getMessage() for r in caplog.records]
    assert "[echo_job_mod] step 0" in lines and "[echo_job_mod] step 2" in lines
    assert "[echo_job_mod] torch 512.0" in lines


def test_failed_job_raises_with_its_last_lines(echo_job):
    from sleeve_airflow.gpu import GpuJobError, run_gpu_job

    manifest_uri, output_uri = echo_job
    with pytest.raises(GpuJobError) as err:
        run_gpu_job("echo_job_mod", manifest_uri=manifest_uri, config={"fail": True}, output_uri=output_uri)
    assert "code 3" in str(err.value) and "boom: out of memory" in str(err.value)


def test_gpu_tasks_take_queue_and_pool_gpu_whatever_the_settings():
    """Fixed routing, read from no setting (DAG files build tasks at parse time): the pool bounds
    GPU work across all DAGs; local executors ignore the queue."""
    from sleeve_airflow.gpu import GPU_TASK

    assert GPU_TASK == {"execution_timeout": timedelta(hours=24), "queue": "gpu", "pool": "gpu", "pool_slots": 1}


def test_a_job_with_bad_settings_fails_the_task_in_one_line_without_retrying(echo_job, monkeypatch):
    from sleeve_airflow.dag_defaults import NO_RETRY_ON_CONFIGURATION
    from sleeve_airflow.gpu import run_gpu_job

    from sleeve.preflight import NotReady

    manifest_uri, output_uri = echo_job
    monkeypatch.setenv("SLEEVE_GPU_SLOTS", "0")
    with pytest.raises(NotReady) as err:
        run_gpu_job("echo_job_mod", manifest_uri=manifest_uri, config={"scale": 2}, output_uri=output_uri)
    assert str(err.value) == "GPU job echo_job_mod: configuration error: SLEEVE_GPU_SLOTS=0 must be at least 1"
    assert NO_RETRY_ON_CONFIGURATION.evaluate(err.value, 1, 3).action.value == "fail"


def test_pod_spec_requests_gpus_and_runs_the_job_contract():
    from sleeve_airflow.gpu import gpu_pod_spec

    spec = gpu_pod_spec("training.train_job", manifest_uri="gs://b/m.json", config={"steps": 5},
                        output_uri="gs://b/out", image="img:1", gpus=2)
    container = spec["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert container["args"][:2] == ["-m", "accelerate.commands.launch"]
    assert container["args"][-6:] == ["--manifest", "gs://b/m.json", "--config", '{"steps": 5}', "--output", "gs://b/out"]


def test_kubernetes_mode_needs_an_image(monkeypatch):
    from sleeve.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="SLEEVE_GPU_IMAGE"):
        load_settings({"SLEEVE_GPU_EXECUTOR": "kubernetes"})
