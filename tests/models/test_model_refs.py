"""Run-relative model references: "run:" refs of non-local runs become per-node local folders."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from xqg.config import ScratchModel
from xqg.models.resolve import localize, resolve_model, run_ref, scratch_rel
from xqg.rundir import RunDir

SPEC = ScratchModel(scratch="bert", vocab_size=300, d_model=16, num_heads=2, d_ff=32)


def _texts() -> list[str]:
    return ["alpha beta gamma", "дельта эпсилон", "ガンマ"] * 20


@pytest.fixture
def remote_run():
    """A non-local run (fsspec memory://, unique per test so the per-node download cache starts empty)."""
    run = RunDir(f"memory://xqg-refs-{uuid.uuid4().hex}")
    assert not run.is_local
    cached: list[str] = []
    yield run, cached
    for folder in cached:  # the download cache lives in the system temp dir: do not leave it behind
        shutil.rmtree(folder, ignore_errors=True)


def test_localize_downloads_a_published_folder_of_a_remote_run(tmp_path: Path, remote_run) -> None:
    run, cached = remote_run
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text('{"a": 1}', encoding="utf-8")
    (src / "sub" / "weights.bin").write_bytes(b"\x00\x01\x02" * 100)
    run.publish_dir(str(src), "models/x")
    assert run.exists("models/x/sub/weights.bin")

    local = localize(run_ref("models/x"), run)
    cached.append(local)
    assert Path(local).is_dir() and not local.startswith("memory")
    assert (Path(local) / "config.json").read_text(encoding="utf-8") == '{"a": 1}'
    assert (Path(local) / "sub" / "weights.bin").read_bytes() == b"\x00\x01\x02" * 100
    assert localize(run_ref("models/x"), run) == local  # downloaded once per node
    # a flat folder (files only, like a CTranslate2 conversion) localizes too
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "model.bin").write_bytes(b"\x07" * 10)
    run.publish_dir(str(flat), "models/flat")
    flat_local = localize(run_ref("models/flat"), run)
    cached.append(flat_local)
    assert (Path(flat_local) / "model.bin").read_bytes() == b"\x07" * 10
    # hub names and local folders are not run-relative: unchanged
    assert localize("bert-base-multilingual-cased", run) == "bert-base-multilingual-cased"
    assert localize(str(src), run) == str(src)


def test_resolve_scratch_on_remote_run_returns_a_loadable_run_ref(remote_run) -> None:
    run, cached = remote_run
    calls = []

    def texts():
        calls.append(1)
        return _texts()

    ref = resolve_model(SPEC, run, texts)
    assert ref == run_ref(scratch_rel(SPEC))
    assert run.exists(scratch_rel(SPEC), "config.json")  # published into the run, not only built locally
    assert resolve_model(SPEC, run, texts) == ref and calls == [1]  # built once

    local = localize(ref, run)
    cached.append(local)
    tok = AutoTokenizer.from_pretrained(local)
    model = AutoModel.from_pretrained(local, add_pooling_layer=False).eval()
    batch = tok(["alpha beta", "ガンマ"], return_tensors="pt", padding=True)
    with torch.inference_mode():
        h = model(**batch).last_hidden_state
    assert h.shape == (2, batch["input_ids"].shape[1], 16)


def test_resolve_scratch_on_local_run_returns_a_plain_folder(tmp_path: Path) -> None:
    run = RunDir(str(tmp_path / "run"))
    path = resolve_model(SPEC, run, _texts)
    assert not path.startswith("run:") and path == run.path(scratch_rel(SPEC))
    assert (Path(path) / "config.json").is_file()
    assert localize(path, run) == path
    assert localize(run_ref(scratch_rel(SPEC)), run) == path  # a local run's ref is its own folder
