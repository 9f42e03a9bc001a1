"""`make bench` part: what a GPU job pays to start, a fresh process vs the warm job server.

The same real job both ways: ``inference.generate_job`` renders one request of 4 covers with
the tiny SDXL (64 px, 4 steps, CPU) into an empty store, through the launcher the DAGs use
(:func:`sleeve_airflow.gpu.run_gpu_job`). The baseline is what the launcher does without a
server: ``python -m inference.generate_job ...`` as a fresh subprocess, which imports torch,
diffusers, transformers and peft before it renders. The server (:mod:`sleeve.jobserver`) has
imported those once and forks per job. Rounds alternate the two, wall time per job.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

ROUNDS = 5

DESCRIPTIONS = {
    "job_start_speedup_from_server": (
        "one real generate job (4 covers, tiny SDXL, 64 px, 4 steps, CPU) through the DAGs' launcher: a fresh "
        "`python -m` subprocess (imports torch/diffusers/transformers/peft every time) vs forked by the warm job "
        "server; wall time per job, alternating"),
}


def run() -> dict:
    from sleeve_airflow.gpu import run_gpu_job

    from sleeve.jobserver import running_server
    from sleeve.settings import get_settings
    from sleeve.store import open_store, write_json
    from sleeve.tinymodel import ensure_tiny_sdxl

    model = str(ensure_tiny_sdxl(get_settings().tiny_model_dir))
    manifest = {"model": {"version": "base", "base_model": model, "adapters": []},
                "defaults": {"width": 64, "height": 64, "steps": 4},
                "requests": [{"request_id": "bench-job", "prompt": "album cover, a blue ocean at night",
                              "num_images": 4}]}
    times: dict[str, list[float]] = {"fresh": [], "server": []}
    with tempfile.TemporaryDirectory(prefix="sleeve-bench-jobs-") as tmp:
        store = open_store(f"file://{tmp}/jobs")
        write_json(store, "manifest.json", manifest)
        with running_server(Path(tmp) / "jobs.sock") as sock:
            for n in range(ROUNDS):
                for side in ("fresh", "server"):
                    if side == "server":
                        os.environ["SLEEVE_GPU_JOB_SERVER"] = str(sock)
                    get_settings.cache_clear()
                    out = f"file://{tmp}/{side}-{n}"  # an empty store: both render every cover
                    started = time.perf_counter()
                    try:
                        result = run_gpu_job("inference.generate_job", manifest_uri=store.uri("manifest.json"),
                                             config={"store_url": out}, output_uri=f"{out}/result")
                    finally:
                        os.environ.pop("SLEEVE_GPU_JOB_SERVER", None)
                        get_settings.cache_clear()
                    times[side].append(time.perf_counter() - started)
                    if result["stats"]["generated"] != 4:
                        raise RuntimeError(f"{side}: the job rendered {result['stats']['generated']} covers, not 4")
    return {
        "job_fresh_seconds": times["fresh"],
        "job_server_seconds": times["server"],
        "job_start_speedup_from_server": [a / b for a, b in zip(times["fresh"], times["server"], strict=True)],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
