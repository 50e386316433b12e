#!/usr/bin/env bash
# Set-up of an xqg node, run by cluster.yaml's setup_commands on every node start and on every `ray up`.
# Idempotent: a second run (or a run on an image built with cluster/Dockerfile) finds every step done and
# changes nothing. In particular it never installs faiss-cpu: faiss-cpu and faiss-gpu both install the
# `faiss` package, and faiss-cpu over faiss-gpu (what `pip install -e .` does) breaks `import faiss`.
set -euo pipefail

XQG_DIR=${XQG_DIR:-/home/ray/xqg}
PYTHON=${PYTHON:-python}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}                                 # the version CI tests (CPU build there)
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}     # its CUDA 12.8 build
FAISS_GPU=${FAISS_GPU:-faiss-gpu-cu12==1.14.1.post1}
STATE=${XQG_SETUP_STATE:-/tmp/xqg-setup}

pip() { "$PYTHON" -m pip "$@"; }
installed() { pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }

cd "$XQG_DIR"
mkdir -p "$STATE"

# 1. CUDA torch, pinned: downloaded once per node, skipped when this CUDA build is already there.
case "$(installed torch)" in
  "$TORCH_VERSION"+cu*) ;;
  *) pip install -q "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX" ;;
esac
echo "torch==$TORCH_VERSION" > "$STATE/constraints.txt"   # nothing below may replace it

# 2. faiss-gpu only. A faiss-cpu left by an earlier set-up is removed, which deletes the shared `faiss`
#    files, so faiss-gpu is then reinstalled over it.
if [ -n "$(installed faiss-cpu)" ]; then
  pip uninstall -y -q faiss-cpu
  pip install -q --force-reinstall --no-deps "$FAISS_GPU"
fi
[ -n "$(installed "${FAISS_GPU%%[=<>]*}")" ] || pip install -q -c "$STATE/constraints.txt" "$FAISS_GPU"

# 3. The project's other dependencies (all but torch and faiss-cpu), then the project itself without them.
"$PYTHON" - > "$STATE/requirements.txt" <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0] not in ("torch", "faiss-cpu")))
PY
pip install -q -c "$STATE/constraints.txt" -r "$STATE/requirements.txt" s3fs
pip install -q --no-deps -e .

"$PYTHON" -c "import faiss, torch; assert hasattr(faiss, 'StandardGpuResources'), 'faiss is not the GPU build'; \
print('xqg node ready: torch', torch.__version__, '| faiss', faiss.__version__, 'GPU build')"
