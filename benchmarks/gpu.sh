#!/usr/bin/env bash
# Every GPU benchmark on one GPU machine with no network, in one command (~5-8 minutes on one H100/H200-class card):
#   benchmarks/gpu.sh [--out DIR] [gpu.py flags]          (dry run on a CPU: benchmarks/gpu.sh --device cpu --tiny)
# Python packages the machine lacks travel as wheels in .whl/ (see benchmarks/RESULTS.md, "GPU benchmark"):
# they are installed into /tmp/site first, without the network.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" benchmarks/gpu.py "$@"
