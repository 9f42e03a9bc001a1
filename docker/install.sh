#!/usr/bin/env bash
# The one way Sleeve's Python dependencies are installed, by docker/Dockerfile.airflow,
# docker/Dockerfile.gpu and `make test-cluster` alike, so that what the local cluster test
# proves carries over to the images. Every step resolves against the committed constraints.txt.
#
#   docker/install.sh PIP STEP...      e.g. docker/install.sh pip torch celery core ml sleeve
#
#   core    apache-airflow (pinned, so pip never moves the base image's Airflow) + Sleeve's light deps
#   celery  the CeleryExecutor stack: Celery, Redis and PostgreSQL providers and clients
#   pods    the cncf.kubernetes provider (GPU jobs as pods)
#   torch   torch alone, from TORCH_INDEX_URL (default PyPI; a CUDA wheel index for other drivers)
#   ml      training and inference (diffusers, transformers, peft, accelerate, opencv)
#   sleeve  Sleeve itself, editable and without dependencies (they are the steps above)
set -euo pipefail
cd "$(dirname "$0")/.."
pip=${1:?usage: docker/install.sh PIP STEP...}
shift
[ $# -gt 0 ] || { echo "install.sh: name at least one step (core celery pods torch ml sleeve)" >&2; exit 2; }
for step in "$@"; do  # all names checked before anything is installed
    case "$step" in
        core | celery | pods | torch | ml | sleeve) ;;
        *) echo "install.sh: unknown step '$step' (core celery pods torch ml sleeve)" >&2; exit 2 ;;
    esac
done
req=docker/requirements
airflow="apache-airflow==$(sed -n 's/^apache-airflow==//p' constraints.txt)"
for step in "$@"; do
    case "$step" in
        core)   "$pip" install "$airflow" -c constraints.txt -r "$req/sleeve-core.txt" ;;
        celery) "$pip" install "$airflow" -c constraints.txt -r "$req/airflow-celery.txt" ;;
        pods)   "$pip" install "$airflow" -c constraints.txt -r "$req/gpu-pods.txt" ;;
        torch)  "$pip" install --index-url "${TORCH_INDEX_URL:-https://pypi.org/simple}" \
                    "torch==$(sed -n 's/^torch==//p' constraints.txt)" ;;
        ml)     "$pip" install -c constraints.txt -r "$req/sleeve-ml.txt" ;;
        sleeve) "$pip" install --no-deps -e . ;;
    esac
done
