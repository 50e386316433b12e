"""CTranslate2 conversion: done once, reused, redone when the source changes, locked, published for a run."""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest

from xqg.config import GenerateConfig
from xqg.generate.actor import GenerateActor
from xqg.generate.backends import SamplingSettings, prepare_backend
from xqg.generate.backends.ctranslate2 import CT2Backend
from xqg.generate.convert import ct2_dir_for, ensure_ct2_model
from xqg.rundir import RunDir


def test_conversion_is_cached_and_redone_only_when_the_source_changes(tiny_mt5_dir, tmp_path, caplog):
    model = tmp_path / "model"
    shutil.copytree(tiny_mt5_dir, model)
    out = ct2_dir_for(str(model), tmp_path / "ct2", "int8")
    assert out.name.startswith("model-") and out.name.endswith("-int8")
    with caplog.at_level(logging.INFO, logger="xqg.generate.convert"):
        assert ensure_ct2_model(str(model), out, "int8") == str(out)
        first = (out / "model.bin").stat().st_mtime_ns
        ensure_ct2_model(str(model), out, "int8")
        assert (out / "model.bin").stat().st_mtime_ns == first
        assert sum("to CTranslate2" in r.message for r in caplog.records) == 1
        (model / "generation_config.json").write_text((model / "generation_config.json").read_text() + "\n")
        ensure_ct2_model(str(model), out, "int8")  # e.g. train_qg wrote a newer model in place
        assert sum("to CTranslate2" in r.message for r in caplog.records) == 2
    assert not list(tmp_path.glob("ct2/*.tmp-*")), "no half-written conversion left behind"


def test_concurrent_callers_convert_once(tiny_mt5_dir, tmp_path, caplog):
    out = ct2_dir_for(tiny_mt5_dir, tmp_path / "ct2", "float32")
    results: list[str] = []
    with caplog.at_level(logging.INFO, logger="xqg.generate.convert"):
        threads = [threading.Thread(target=lambda: results.append(ensure_ct2_model(tiny_mt5_dir, out, "float32"))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [str(out)] * 3 and Path(out, "model.bin").is_file()
    assert sum("to CTranslate2" in r.message for r in caplog.records) == 1


def _conversions(caplog) -> int:
    return sum("to CTranslate2" in r.message for r in caplog.records)


def test_ct2_prepare_converts_into_a_local_run_once(tiny_mt5_dir, tmp_path, caplog):
    run = RunDir(str(tmp_path / "run"))
    gen = GenerateConfig(backend="ctranslate2", compute_type="float32")
    with caplog.at_level(logging.INFO, logger="xqg.generate.convert"):
        first = prepare_backend(gen, run, tiny_mt5_dir, use_gpu=False)
        again = prepare_backend(gen, run, tiny_mt5_dir, use_gpu=False)
    assert first == again and Path(first["ct2_path"], "model.bin").is_file()
    assert Path(first["ct2_path"]).parent == Path(run.path("models", "ct2")) and _conversions(caplog) == 1
    assert CT2Backend.localize_kwargs(first, run) == first  # a local run's folder is already on every node


def test_ct2_prepare_publishes_for_a_non_local_run_and_the_actor_gets_a_local_copy(tiny_mt5_dir, caplog, ray_local):
    # ray_local: the actor records the Ray node it runs on, which would start a Ray of its own otherwise
    run = RunDir(f"memory://xqg-ct2-{uuid.uuid4().hex}")
    gen = GenerateConfig(backend="ctranslate2", compute_type="float32")
    with caplog.at_level(logging.INFO, logger="xqg.generate.convert"):
        prepared = prepare_backend(gen, run, tiny_mt5_dir, use_gpu=False)
        assert prepare_backend(gen, run, tiny_mt5_dir, use_gpu=False) == prepared
    assert prepared["ct2_path"].startswith("run:models/ct2/") and _conversions(caplog) == 1
    sampling = SamplingSettings(num_queries=2, max_new_tokens=4, max_input_len=32)
    actor = GenerateActor(
        run.uri, tiny_mt5_dir, "ctranslate2", asdict(sampling), gen.template, seed=1, batch_size=2,
        use_gpu=False, compute_type="float32", **prepared,
    )
    assert Path(actor.backend.ct2_path, "model.bin").is_file()


def test_converted_mt5_scores_tokens_as_transformers_does(tiny_mt5_dir, tmp_path):
    """Same log-probabilities, not only the same argmax: CTranslate2's T5 loader scaled mT5's logits by
    d_model**-0.5 (transformers 5 no longer does), which greedy decoding hides and top-k sampling does not."""
    import ctranslate2
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_mt5_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_mt5_dir).eval()
    src = tok(["Generate a Japanese question for this passage: Mount Sonor"])["input_ids"][0]
    tgt = tok(["Sonor山の初登頂は何年ですか？"])["input_ids"][0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([src]), labels=torch.tensor([tgt])).logits[0]
    want = logits.log_softmax(-1).gather(1, torch.tensor(tgt)[:, None])[:, 0].tolist()
    out = ensure_ct2_model(tiny_mt5_dir, tmp_path / "ct2", "float32")
    translator = ctranslate2.Translator(out, device="cpu", compute_type="float32")
    (scored,) = translator.score_batch([tok.convert_ids_to_tokens(src)], [tok.convert_ids_to_tokens(tgt[:-1])])
    assert scored.log_probs == pytest.approx(want, abs=1e-3)
