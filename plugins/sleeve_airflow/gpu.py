"""The one way a DAG runs a GPU job, chosen by ``SLEEVE_GPU_EXECUTOR`` when the job runs.

Every GPU task carries ``queue="gpu"`` and takes a slot of the Airflow pool ``gpu`` (size it to
the GPUs: ``airflow pools set gpu <N> GPUs``; ``make setup`` and the compose ``airflow-init``
create it with ``SLEEVE_GPU_SLOTS`` slots), so GPU work never oversubscribes the GPUs, across
all DAGs. The routing is fixed, not read from settings: DAG files build tasks at parse time and
read no settings there. Local executors ignore the queue; under CeleryExecutor only the GPU
worker consumes it.

- ``local`` (default): ``python -m <module> ...`` as a subprocess of the task, or, with
  ``SLEEVE_GPU_JOB_SERVER`` set, forked by the warm job server (:mod:`sleeve.jobserver`).
- ``celery``: the same subprocess, on the Celery worker that serves queue ``gpu`` (the GPU box).
- ``kubernetes``: the task launches a pod from ``SLEEVE_GPU_IMAGE`` requesting
  ``nvidia.com/gpu`` through the cncf.kubernetes provider's KubernetesPodOperator (the provider
  is an optional dependency, imported only in this mode); the launcher is light, so under
  CeleryExecutor any worker may also serve queue ``gpu``.

Usage in a DAG::

    @task(**GPU_TASK)
    def train(...):
        result = run_gpu_job("training.train_job", manifest_uri=..., config={...}, output_uri=...)

Jobs follow :mod:`sleeve.jobs` (manifest + config in, artefacts + ``result.json`` out). A job
that exits with :data:`sleeve.jobs.NOT_READY_EXIT` found its settings wrong: the task fails in
that one line without retrying.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from datetime import timedelta

from sleeve.jobs import NOT_READY_EXIT, read_result
from sleeve.jobserver import submit
from sleeve.preflight import NotReady
from sleeve.settings import get_settings

log = logging.getLogger(__name__)

GPU_POOL = "gpu"
GPU_QUEUE = "gpu"
TAIL_LINES = 30
# The longest a GPU job may run. It must stay below Celery's visibility timeout (48 h in
# docker/docker-compose.yaml): a task still unacknowledged then is re-delivered and runs twice.
GPU_JOB_TIMEOUT = timedelta(hours=24)


class GpuJobError(RuntimeError):
    """A GPU job exited non-zero; the message carries its last lines of output."""


# Keyword arguments for ``@task(...)`` of a task that runs a GPU job (read no settings: parse time).
GPU_TASK = {"queue": GPU_QUEUE, "pool": GPU_POOL, "pool_slots": 1, "execution_timeout": GPU_JOB_TIMEOUT}


def job_command(module: str, *, manifest_uri: str, config: dict, output_uri: str, processes: int = 1) -> list[str]:
    """The job's argv; with ``processes > 1`` it runs under ``accelerate launch`` (one per GPU)."""
    args = ["--manifest", manifest_uri, "--config", json.dumps(config, sort_keys=True), "--output", output_uri]
    if processes > 1:
        return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                "-m", module, *args]
    return [sys.executable, "-m", module, *args]


def run_gpu_job(module: str, *, manifest_uri: str, config: dict, output_uri: str, processes: int = 1) -> dict:
    """Run a job to completion and return the result manifest it wrote at ``<output_uri>/result.json``."""
    if get_settings().gpu_executor == "kubernetes":
        _run_pod(module, manifest_uri=manifest_uri, config=config, output_uri=output_uri)
    else:
        _run_subprocess(job_command(module, manifest_uri=manifest_uri, config=config, output_uri=output_uri,
                                    processes=processes), module)
    from sleeve_airflow.hooks import ObjectStoreHook

    return read_result(output_uri, ObjectStoreHook().store)  # with the connection's credentials


def _run_subprocess(cmd: list[str], name: str) -> None:
    """Stream the job's output into the task log line by line; fail with its last lines. With
    ``SLEEVE_GPU_JOB_SERVER`` set, the warm job server (:mod:`sleeve.jobserver`) runs the same
    command line in a process it forks, without paying the library imports."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = get_settings().gpu_job_server
    log.info("GPU job %s starting%s", name, f" on the job server {server}" if server else "")
    output = submit(server, cmd[2:], env=env, cwd=os.getcwd()) if server else _popen(cmd, env)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    code = None
    for item in output:
        if isinstance(item, int):
            code = item
            break
        tail.append(item)
        log.info("[%s] %s", name, item)
    if code == NOT_READY_EXIT and tail:
        raise NotReady(f"GPU job {name}: {tail[-1]}")
    if code != 0:
        raise GpuJobError(f"GPU job {name} exited with code {code}; last lines:\n" + "\n".join(tail))


def _popen(cmd: list[str], env: dict) -> Iterator[str | int]:
    """The job as a fresh subprocess: its output lines, then its exit code."""
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                          env=env) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            yield line.rstrip("\n")
        yield proc.wait()


def gpu_pod_spec(module: str, *, manifest_uri: str, config: dict, output_uri: str, image: str,
                 namespace: str = "default", gpus: int = 1) -> dict:
    """A Kubernetes Pod manifest (plain dict) that runs the job on ``gpus`` NVIDIA GPUs."""
    args = job_command(module, manifest_uri=manifest_uri, config=config, output_uri=output_uri, processes=gpus)
    env = [{"name": k, "value": os.environ[k]} for k in ("SLEEVE_STORE_URL", "SLEEVE_BASE_MODEL")
           if os.environ.get(k)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "labels": {"app": "sleeve-gpu-job", "job": module.replace(".", "-")}},
        "spec": {
            "restartPolicy": "Never",
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{
                "name": "base",  # KubernetesPodOperator reads logs from the container named "base"
                "image": image,
                "command": ["python"],
                "args": args[1:],
                "env": env,
                "resources": {"limits": {"nvidia.com/gpu": str(gpus)}, "requests": {"nvidia.com/gpu": str(gpus)}},
            }],
        },
    }


def _run_pod(module: str, *, manifest_uri: str, config: dict, output_uri: str) -> None:
    try:
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    except ImportError as exc:
        raise GpuJobError(
            "SLEEVE_GPU_EXECUTOR=kubernetes needs apache-airflow-providers-cncf-kubernetes installed in the "
            "Airflow image; install it or set SLEEVE_GPU_EXECUTOR=local/celery"
        ) from exc
    from airflow.sdk import get_current_context

    settings = get_settings()
    spec = gpu_pod_spec(module, manifest_uri=manifest_uri, config=config, output_uri=output_uri,
                        image=settings.gpu_image, namespace=settings.k8s_namespace, gpus=1)
    container = spec["spec"]["containers"][0]
    context = get_current_context()
    KubernetesPodOperator(
        task_id=f"{context['ti'].task_id}_pod",
        namespace=settings.k8s_namespace,
        image=settings.gpu_image,
        cmds=container["command"],
        arguments=container["args"],
        pod_template_dict=spec,
        get_logs=True,  # streams the pod's output into this task's log
        on_finish_action="delete_pod",
    ).execute(context)
