"""The embedded worker's child process: shard jobs one after another, asked for on stdin.

    python -m service.shard_worker     # started by service.generation.EmbeddedWorker

Each stdin line is ``{"manifest", "config", "output"}``: the arguments of
``python -m inference.generate_job``, run here by the same ``sleeve.jobs.run_job``; each stdout
line answers one job (``{"ok": true}`` or ``{"ok": false, "error"}``). Torch and diffusers are
imported once, before the first job; the job's own output goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # the job's prints must not mix with replies
    from diffusers import DiffusionPipeline  # noqa: F401  (warm: the slow imports happen now)

    from inference.generate_job import main as generate
    from sleeve.jobs import run_job

    replies.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            job = json.loads(line)
            run_job(generate, ["--manifest", job["manifest"], "--config", job["config"], "--output", job["output"]])
            reply = {"ok": True}
        except Exception as exc:  # one bad shard must not end the worker
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:500]}
        replies.write(json.dumps(reply) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
