"""The installs resolve: the vLLM route (its own torch) with exactly one FAISS package. Needs PyPI and minutes of
metadata downloads, so it runs only with XQG_NETWORK_TESTS=1; docs/cluster.md, "Installs", has the same command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.paths import REPO

VLLM_TORCH = "torch==2.14.0"


@pytest.mark.skipif(os.environ.get("XQG_NETWORK_TESTS") != "1", reason="needs PyPI: set XQG_NETWORK_TESTS=1")
@pytest.mark.timeout(1800)
def test_the_vllm_install_resolves_with_its_torch_and_one_faiss(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report),
         VLLM_TORCH, "-e", f"{REPO}[gpu,vllm]"], capture_output=True, text=True, timeout=1700)
    assert done.returncode == 0, done.stderr[-3000:]
    names = {i["metadata"]["name"].lower(): i["metadata"]["version"]
             for i in json.loads(report.read_text())["install"]}
    assert names["torch"] == VLLM_TORCH.split("==")[1] and "vllm" in names
    assert [n for n in names if n.startswith("faiss")] == ["faiss-gpu-cu12"]
