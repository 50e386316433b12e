"""Backends: n strings per prompt, seeded reproducibility, HF vs CTranslate2 agreement, vLLM without vllm, hooks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from xqg.config import ConfigError, GenerateConfig, load_config
from xqg.generate.backends import BackendUnavailable, SamplingSettings, backend_class, make_backend, prepare_backend
from xqg.generate.convert import ensure_ct2_model
from xqg.rundir import RunDir

PROMPTS = [
    "Generate a Arabic question for this passage: Velvoness Velvoness is a market town in the Yutova region.",
    "Generate a Finnish question for this passage: Braeholm The river flows for 2,049 kilometres.",
    "Generate a Telugu question for this passage: short",
    "Generate a Korean question for this passage: A ship was launched in 1871 from the harbour of Trevane.",
]


@pytest.fixture(scope="module")
def tiny_causal_dir(tiny_mt5_dir: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised GPT-2 sharing the tiny mT5's SentencePiece tokenizer (decoder-only)."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("models") / "tiny-gpt2"
    tok = AutoTokenizer.from_pretrained(tiny_mt5_dir)
    tok.bos_token = tok.eos_token  # CTranslate2's GPT-2 converter needs a BOS token
    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_positions=512,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    GPT2LMHeadModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def settings(**kw) -> SamplingSettings:
    return SamplingSettings(**{"num_queries": 3, "top_k": 10, "max_new_tokens": 6, "max_input_len": 64, **kw})


def ct2(model: str, tmp: Path, sampling: SamplingSettings, compute_type: str = "float32"):
    path = ensure_ct2_model(model, tmp / f"ct2-{Path(model).name}-{compute_type}", compute_type)
    return make_backend("ctranslate2", model, sampling, ct2_path=path, compute_type=compute_type, threads=1)


@pytest.fixture(scope="module")
def ct2_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ct2")


@pytest.mark.parametrize("name", ["hf", "ctranslate2"])
def test_seq2seq_backend_returns_n_strings_per_prompt_reproducibly(name, tiny_mt5_dir, ct2_tmp):
    s = settings()
    b = make_backend("hf", tiny_mt5_dir, s, threads=1) if name == "hf" else ct2(tiny_mt5_dir, ct2_tmp, s)
    ids = b.tokenize(PROMPTS)
    seeds = [11, 12, 13, 14]
    b.begin_unit(5)
    first = b.generate(ids, seeds)
    assert len(first) == len(PROMPTS) and all(len(q) == 3 and all(isinstance(x, str) for x in q) for q in first)
    b.begin_unit(5)  # same unit seed (and, for HF, same row seeds): the same queries again
    assert b.generate(ids, seeds) == first
    b.begin_unit(6)
    others = [b.generate(ids, [s + 100 for s in seeds]) for _ in range(2)]
    assert any(o != first for o in others), "other seeds never changed the samples"


def test_ct2_unit_seed_makes_a_unit_independent_of_earlier_units(tiny_mt5_dir, ct2_tmp):
    """CTranslate2 seeds a worker thread once; begin_unit must still give a unit the same samples every time."""
    b = ct2(tiny_mt5_dir, ct2_tmp, settings(max_new_tokens=8))
    ids = b.tokenize(PROMPTS)
    b.begin_unit(1)
    alone = b.generate(ids, [0] * 4)
    b.begin_unit(2)
    b.generate(ids, [0] * 4)  # another unit in between moves the old generator on
    b.begin_unit(1)
    assert b.generate(ids, [0] * 4) == alone


@pytest.mark.parametrize("model", ["seq2seq", "causal"])
def test_greedy_hf_and_ct2_agree_and_batching_does_not_change_outputs(model, tiny_mt5_dir, tiny_causal_dir, ct2_tmp):
    """top_k=1 is greedy: both backends must decode the same tokens, batched (padded) or one by one."""
    path = tiny_mt5_dir if model == "seq2seq" else tiny_causal_dir
    s = settings(num_queries=1, top_k=1, max_new_tokens=8)
    hf = make_backend("hf", path, s, threads=1)
    fast = ct2(path, ct2_tmp, s)
    assert hf.encoder_decoder == (model == "seq2seq")
    ids = hf.tokenize(PROMPTS)
    assert len({len(x) for x in ids}) > 1, "prompts of one length would not test padding"
    batched = hf.generate(ids, [0] * 4)
    single = [hf.generate([x], [0])[0] for x in ids]
    assert batched == single
    fast.begin_unit(0)
    assert fast.generate(ids, [0] * 4) == batched
    if model == "causal":
        assert hf.tokenizer.padding_side == "left"


def test_prompt_is_truncated_to_max_input_len(tiny_mt5_dir):
    b = make_backend("hf", tiny_mt5_dir, settings(max_input_len=32), threads=1)
    ids = b.tokenize(["word " * 5000, "short"])
    assert len(ids[0]) == 32 and ids[0][-1] == b.tokenizer.eos_token_id
    assert len(ids[1]) < 32


def test_unknown_backend_is_a_clear_error(tiny_mt5_dir):
    with pytest.raises(ValueError, match="unknown generation backend 'onnx'"):
        make_backend("onnx", tiny_mt5_dir, settings())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_module_imports_without_vllm_and_asking_for_it_says_how_to_install(tiny_causal_dir):
    from xqg.generate.backends import vllm as vllm_backend

    assert not vllm_backend.vllm_installed()
    with pytest.raises(BackendUnavailable, match=r"pip install 'xqg\[vllm\]'"):
        make_backend("vllm", tiny_causal_dir, settings(), device="cuda")


def test_config_rejects_vllm_with_an_mt5_generator(tiny_mt5_dir, tiny_causal_dir):
    # The default generator is the run's own, trained from train_qg.model (google/mt5-base).
    with pytest.raises(ConfigError, match="vLLM has no T5/mT5 support"):
        load_config(None, ["generate.backend=vllm"])
    with pytest.raises(ConfigError, match="encoder-decoder model"):
        load_config(None, ["generate.backend=vllm", f"generate.model={tiny_mt5_dir}"])
    with pytest.raises(ConfigError, match="ctranslate2"):
        load_config(None, ["generate.backend=vllm", "generate.model={scratch: mt5}"])
    ok = load_config(None, ["generate.backend=vllm", f"generate.model={tiny_causal_dir}"])
    assert ok.generate.backend == "vllm"


def test_vllm_backend_sends_token_prompts_with_one_seeded_request_each(tiny_causal_dir, tiny_mt5_dir, monkeypatch):
    """vllm is not installed here (no GPU): a stand-in module records what the backend asks of vLLM's API."""
    import sys
    import types

    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, **kw):
            calls["engine"] = kw

        def generate(self, prompts, params, use_tqdm=True):
            calls["prompts"], calls["params"] = prompts, [p.kw for p in params]
            done = types.SimpleNamespace
            return [done(outputs=[done(text=f" q{i}.{j} ") for j in range(p.kw["n"])]) for i, p in enumerate(params)]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    b = make_backend("vllm", tiny_causal_dir, settings(top_k=0), device="cuda", compute_type="bfloat16")
    ids = b.tokenize(PROMPTS[:2])
    assert b.generate(ids, [7, 2**40 + 9]) == [["q0.0", "q0.1", "q0.2"], ["q1.0", "q1.1", "q1.2"]]
    assert calls["prompts"] == [{"prompt_token_ids": x} for x in ids]
    assert [p["seed"] for p in calls["params"]] == [7, 9]  # kept within 31 bits
    assert calls["params"][0] | {"seed": 0} == dict(n=3, top_k=-1, top_p=1.0, temperature=1.0, max_tokens=6, seed=0)
    assert calls["engine"]["dtype"] == "bfloat16" and calls["engine"]["model"] == tiny_causal_dir
    with pytest.raises(BackendUnavailable, match="no T5/mT5 support"):
        make_backend("vllm", tiny_mt5_dir, settings(), device="cuda")
    with pytest.raises(BackendUnavailable, match="needs a GPU"):
        make_backend("vllm", tiny_causal_dir, settings(), device="cpu")


def test_hf_needs_no_driver_side_preparation(tiny_mt5_dir, tmp_path):
    run = RunDir(str(tmp_path / "run"))
    assert prepare_backend(GenerateConfig(backend="hf"), run, tiny_mt5_dir, use_gpu=False) == {}
    assert not Path(run.path("models")).exists()


def test_vllm_prepare_fails_on_the_driver_for_an_mt5_model_or_no_gpus(tiny_mt5_dir, tiny_causal_dir, tmp_path):
    run, gen = RunDir(str(tmp_path / "run")), GenerateConfig(backend="vllm")
    with pytest.raises(ValueError, match="vLLM has no T5/mT5 support"):
        prepare_backend(gen, run, tiny_mt5_dir, use_gpu=True)
    with pytest.raises(ValueError, match="needs GPUs"):
        prepare_backend(gen, run, tiny_causal_dir, use_gpu=False)


def test_output_params_name_what_changes_the_text():
    int8, fp16 = GenerateConfig(compute_type="int8"), GenerateConfig(compute_type="float16")
    assert backend_class("ctranslate2").output_params(int8) == {"backend": "ctranslate2", "compute_type": "int8"}
    # hf and vllm run CTranslate2-only types as 'auto': the same text as asking for 'auto'
    assert backend_class("vllm").output_params(int8) == {"backend": "vllm", "compute_type": "auto"}
    assert backend_class("vllm").output_params(fp16) == {"backend": "vllm", "compute_type": "float16"}
    # hf names its sampling scheme: units generated with the older per-batch seeding are stale, redone
    assert backend_class("hf").output_params(int8) == {"backend": "hf", "compute_type": "auto", "sampler": "per-row-v1"}
    assert backend_class("hf").output_params(fp16)["compute_type"] == "float16"


def test_config_asks_the_chosen_backend_to_validate(monkeypatch):
    def refuse(cls, generate_model, trained_model):
        raise ValueError(f"refused {generate_model}")

    monkeypatch.setattr(backend_class("hf"), "validate_config", classmethod(refuse))
    with pytest.raises(ConfigError, match="refused some/model"):
        load_config(None, ["generate.backend=hf", "generate.model=some/model"])
    assert load_config(None, ["generate.backend=ctranslate2", "generate.model=some/model"])


# ---- the vLLM route without vllm: what the backend asks of vLLM, built in plain Python -----------------------


def test_vllm_requests_are_the_stage_token_ids_with_each_rows_seed_and_the_papers_sampling(tiny_decoder_dir):
    from transformers import AutoTokenizer

    from xqg.generate.backends.vllm import engine_kwargs, sampling_kwargs, token_prompts

    s = SamplingSettings(num_queries=5, top_k=10, temperature=0.7, max_new_tokens=32, max_input_len=256)
    assert sampling_kwargs(s, 2**40 + 9) == dict(n=5, top_k=10, top_p=1.0, temperature=0.7, max_tokens=32, seed=9)
    assert sampling_kwargs(SamplingSettings(top_k=0, min_new_tokens=4), 3) | {"seed": 0} == dict(
        n=5, top_k=-1, top_p=1.0, temperature=1.0, max_tokens=32, min_tokens=4, seed=0)
    tok = AutoTokenizer.from_pretrained(tiny_decoder_dir)
    ids = [list(x) for x in tok(PROMPTS[:2])["input_ids"]]
    assert token_prompts(ids) == [{"prompt_token_ids": ids[0]}, {"prompt_token_ids": ids[1]}]
    assert ids[0][0] == tok.bos_token_id and ids[0][-1] != tok.eos_token_id  # a decoder continues its prompt
    engine = engine_kwargs(tiny_decoder_dir, s, "int8", trust_remote_code=False)
    assert engine == dict(model=tiny_decoder_dir, tokenizer=tiny_decoder_dir, dtype="auto", seed=0,
                          trust_remote_code=False, max_model_len=256 + 32 + 8)
    assert engine_kwargs(tiny_decoder_dir, s, "bfloat16", True)["dtype"] == "bfloat16"


def test_vllm_generation_refuses_to_start_on_a_cluster_without_gpus(
    ray_local, tiny_decoder_dir, make_corpus_run, demo_passage_rows,
):
    from xqg.generate.stage import run_generate

    run = make_corpus_run(demo_passage_rows[:4], num_shards=1)
    config = load_config(None, [f"run_dir={run.uri}", "generate.backend=vllm", f"generate.model={tiny_decoder_dir}",
                                "languages=[ja]"])
    assert config.generate.backend == "vllm"  # a decoder-only generator: the config accepts it
    with pytest.raises(ValueError, match="'vllm' needs GPUs and this Ray cluster has none; use 'ctranslate2' or 'hf'"):
        run_generate(config)
    assert not run.done_units("generate") and not run.exists("generated")
