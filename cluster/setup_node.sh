#!/usr/bin/env bash
# Set-up of an xqg node, run by cluster.yaml's setup_commands on every node start and on every `ray up`.
# Idempotent and fast where the stack is there: a run whose inputs (this script, pyproject.toml, the versions
# below) match the stamp of an earlier complete run only checks the imports (seconds), so a replacement spot node
# started from the cluster/Dockerfile image (the recommended path, where the stamp was made at build time)
# installs nothing. Otherwise each step skips what is installed. In particular it never installs faiss-cpu:
# faiss-cpu and faiss-gpu both install the `faiss` package, and faiss-cpu over faiss-gpu breaks `import faiss`.
set -euo pipefail

XQG_DIR=${XQG_DIR:-/home/ray/xqg}
PYTHON=${PYTHON:-python}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}                                 # the version CI tests (CPU build there)
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu128}     # its CUDA 12.8 build
FAISS_GPU=${FAISS_GPU:-faiss-gpu-cu12==1.14.1.post1}
STATE=${XQG_SETUP_STATE:-/tmp/xqg-setup}
# XQG_VLLM=1: nodes for configs/qwen_vllm.yaml (generate.backend: vllm). vLLM pins its own torch, so these nodes
# get vLLM's torch instead of the pinned one (docs/cluster.md, "Installs": the combination checked to resolve).
XQG_VLLM=${XQG_VLLM:-0}
VLLM=${VLLM:-vllm==0.33.0}
if [ "$XQG_VLLM" = 1 ]; then TORCH_VERSION=${VLLM_TORCH_VERSION:-2.14.0}; fi

pip() { "$PYTHON" -m pip "$@"; }
installed() { pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }

cd "$XQG_DIR"
mkdir -p "$STATE"

# 0. Nothing changed since the last complete set-up (or the image's): check the imports, done.
STAMP="$(cat "$0" pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)-$TORCH_VERSION-$FAISS_GPU-$XQG_VLLM-$VLLM"
if [ -f "$STATE/stamp" ] && [ "$(cat "$STATE/stamp")" = "$STAMP" ] && \
   "$PYTHON" -c "import xqg, torch, faiss, ray, ctranslate2" 2>/dev/null; then
  echo "xqg node set-up: already complete ($STAMP), nothing installed"
  exit 0
fi

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
if [ "$XQG_VLLM" = 1 ] && [ -z "$(installed vllm)" ]; then
  pip install -q -c "$STATE/constraints.txt" "$VLLM"
fi

"$PYTHON" -c "import faiss, torch; assert hasattr(faiss, 'StandardGpuResources'), 'faiss is not the GPU build'; \
print('xqg node ready: torch', torch.__version__, '| faiss', faiss.__version__, 'GPU build')"
"$PYTHON" -m xqg.installcheck   # exactly one FAISS package (GPU nodes check the GPU stack next: cluster.yaml)
echo "$STAMP" > "$STATE/stamp"
