#!/usr/bin/env bash
# Entrypoint of the GPU worker image (docker/Dockerfile.gpu).
#   gpu-entrypoint.sh celery worker --queues gpu   -> airflow celery worker --queues gpu
#   gpu-entrypoint.sh python -m training.train_job ... / accelerate launch ... / bash
#                                                  -> run as given (Kubernetes pod jobs)
# It reports which GPUs the container sees, so a missing device reservation shows in the log
# instead of as a silently slow CPU run.
set -euo pipefail

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || echo "gpu-entrypoint: nvidia-smi found no GPU" >&2
else
    echo "gpu-entrypoint: no nvidia-smi; is the NVIDIA container toolkit set up and a GPU reserved?" >&2
fi

case "${1:-}" in
    "")
        echo "gpu-entrypoint: no command; try 'celery worker --queues gpu' or 'python -m training.train_job --help'" >&2
        exit 2
        ;;
    python | python3 | accelerate | bash | sh | airflow | /*)
        exec "$@"
        ;;
    *)
        # Anything else is an Airflow subcommand, as with the official image's entrypoint.
        exec airflow "$@"
        ;;
esac
