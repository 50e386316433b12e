# Set-up and the two everyday commands: `make demo` and `make test` (see README.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch goes in first and is pinned, so nothing pulls the multi-GB CUDA build.
# On a GPU machine: make install TORCH=torch (a CUDA build), then swap faiss-cpu for faiss-gpu-cu12
# (.venv/bin/pip uninstall -y faiss-cpu && .venv/bin/pip install faiss-gpu-cu12), as cluster.yaml does.
TORCH ?= torch==2.13.0
EXTRAS ?= test

.PHONY: install demo test test-fast clean-demo
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)"
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --constraint $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import torch, ray, transformers, ctranslate2, faiss; print('torch', torch.__version__, '| ray', ray.__version__, '| transformers', transformers.__version__)"
	touch $@

demo: install
	$(BIN)/python jobs/pipeline.py --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest

# Unit and single-process tests, no Ray cluster started: for iterating (CI runs `make test`, everything).
test-fast: install
	$(BIN)/python -m pytest -m "not ray"

clean-demo:
	rm -rf runs/demo
