"""The contract every GPU job shares: a file-in/file-out command line.

    python -m <module> --manifest URI --config JSON --output URI

A job reads its input manifest (JSON) from ``--manifest``, takes its settings from ``--config``
(a JSON object, or ``@path`` to a JSON file), writes its artefacts under ``--output`` (a store
URI prefix) and finishes by writing ``<output>/result.json``, the result manifest the launcher
(:mod:`sleeve_airflow.gpu`) returns to the DAG. The same command runs as a local subprocess, on
a Celery ``gpu`` worker or in a Kubernetes pod: only the store has to be reachable.

Jobs run without Airflow connections, so inside a job the store is opened from the URI with
Application Default Credentials (or the environment). The Airflow side passes ``store=`` (its
hook's store, built from the connection) to :func:`read_result`.

A job module is three lines::

    from sleeve.jobs import run_job

    def main(manifest: dict, config: dict, output_uri: str) -> dict: ...

    if __name__ == "__main__":
        run_job(main)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sleeve.store import ObjectStore, open_uri, read_json, write_json

RESULT_NAME = "result.json"
NOT_READY_EXIT = 2  # settings or arguments are wrong: the launcher fails the task without retrying


def output_location(output_uri: str, store: ObjectStore | None = None) -> tuple[ObjectStore, str]:
    """``(store, prefix)`` for an output URI (resolved through ``store`` when given, see
    :func:`sleeve.store.open_uri`); artefact keys are ``prefix + name``."""
    store, key = open_uri(output_uri.rstrip("/") + "/_", store)
    return store, key[:-1]


def upload_output(output_uri: str, directory: str | Path) -> list[str]:
    """Copy every file below ``directory`` to ``<output_uri>/<relative path>``; returns URIs."""
    store, prefix = output_location(output_uri)
    return [store.uri(key) for key in store.upload_dir(prefix, directory)]


def download_output(uri: str, directory: str | Path) -> Path:
    """Copy every object under the URI prefix ``uri`` into ``directory``."""
    store, prefix = output_location(uri)
    directory = Path(directory)
    for key in store.list(prefix):
        if key.rsplit("/", 1)[-1] != RESULT_NAME:
            store.download(key, directory / key[len(prefix):])
    return directory


def read_manifest(uri: str) -> dict:
    store, key = open_uri(uri)
    manifest = read_json(store, key)
    if not isinstance(manifest, dict):
        raise ValueError(f"manifest {uri} is not a JSON object")
    return manifest


def write_result(output_uri: str, result: dict) -> str:
    store, prefix = output_location(output_uri)
    write_json(store, prefix + RESULT_NAME, result)
    return store.uri(prefix + RESULT_NAME)


def read_result(output_uri: str, store: ObjectStore | None = None) -> dict:
    store, prefix = output_location(output_uri, store)
    return read_json(store, prefix + RESULT_NAME)


def parse_args(argv: Sequence[str] | None = None) -> tuple[str, dict, str]:
    parser = argparse.ArgumentParser(description="Sleeve GPU job (file in, file out)")
    parser.add_argument("--manifest", required=True, help="URI of the input manifest (JSON)")
    parser.add_argument("--config", default="{}", help="JSON object, or @path to a JSON file")
    parser.add_argument("--output", required=True, help="URI prefix for artefacts and result.json")
    args = parser.parse_args(argv)
    text = Path(args.config[1:]).read_text() if args.config.startswith("@") else args.config
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        parser.error(f"--config is not valid JSON: {exc}")
    if not isinstance(config, dict):
        parser.error("--config must be a JSON object")
    return args.manifest, config, args.output


def is_main_process() -> bool:
    """True except on the non-zero ranks of an ``accelerate launch`` / torchrun job."""
    import os

    return os.environ.get("RANK", "0") == "0"


def configure_cpu_threads() -> None:
    """On a CPU-only box (the tiny-model demo and tests) torch's thread pool mostly fights the
    other processes: use ``SLEEVE_TORCH_THREADS`` threads (default 1). GPUs are unaffected."""
    try:
        import torch
    except ImportError:
        return
    if not torch.cuda.is_available():
        from sleeve.settings import get_settings

        torch.set_num_threads(get_settings().torch_threads)


def run_job(main: Callable[[dict, dict, str], dict], argv: Sequence[str] | None = None) -> int:
    """Parse the CLI, run ``main(manifest, config, output_uri)``, write result.json (rank 0).
    ``gpu_seconds`` (wall time of the job on its device) is added unless the job sets it.
    First the scratch folders of killed jobs on this machine are swept (:mod:`sleeve.scratch`)."""
    from sleeve.preflight import check_ready
    from sleeve.scratch import sweep
    from sleeve.settings import SettingsError, mark_gpu_job

    manifest_uri, config, output_uri = parse_args(argv)
    mark_gpu_job()  # a GPU job never sees an email: it runs without SLEEVE_PII_KEY
    try:
        try:
            check_ready(needs=("store",))  # before any model is loaded
        except SettingsError as exc:
            print(f"configuration error: {exc}", file=sys.stderr, flush=True)
            sys.exit(NOT_READY_EXIT)
        configure_cpu_threads()
        if swept := sweep():
            print(f"removed {swept} scratch folder(s) of killed jobs", flush=True)
        started = time.perf_counter()
        result = main(read_manifest(manifest_uri), config, output_uri)
        result.setdefault("gpu_seconds", round(time.perf_counter() - started, 3))
        if is_main_process():
            uri = write_result(output_uri, result)
            print(f"result written to {uri}", flush=True)
    finally:
        mark_gpu_job(False)
    sys.stdout.flush()
    return 0
