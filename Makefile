# Set-up and the two everyday commands: `make demo` and `make test` (see README.md).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch goes in first and is pinned, so nothing pulls the multi-GB CUDA build.
# FAISS is an extra, one of cpu or gpu (both own the `faiss` package). On a GPU machine:
# make install TORCH_INDEX=https://download.pytorch.org/whl/cu128 EXTRAS=gpu,test  (the same torch, CUDA 12.8 build)
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= cpu,test

.PHONY: install demo test test-fast clean-demo
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	echo "$(TORCH)" > $(VENV)/constraints.txt
	$(BIN)/python -m pip install --constraint $(VENV)/constraints.txt -e ".[$(EXTRAS)]"
	$(BIN)/python -c "import torch, ray, transformers, ctranslate2, faiss; print('torch', torch.__version__, '| ray', ray.__version__, '| transformers', transformers.__version__)"
	$(BIN)/python -m xqg.installcheck
	touch $@

demo: install
	$(BIN)/xqg run --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest

# Unit and single-process tests, no Ray cluster started: for iterating (CI runs `make test`, everything).
test-fast: install
	$(BIN)/python -m pytest -m "not ray"

clean-demo:
	rm -rf runs/demo
