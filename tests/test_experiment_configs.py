"""The experiment configs (configs/xor_tydi_*.yaml) against the paper's code (xQG4xDR, DSI-QG, Tevatron).

Each config loads and sets what the paper ran. Append checks per point: use `load_experiment(name)`
or the `experiment` fixture (one Config per experiment config, id = the config's name).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.paths import DEMO_CONFIG, REPO
from xqg.config import Config, ConfigError, load_config

EXPERIMENTS = ["xor_tydi_mbert", "xor_tydi_xlmr", "xor_tydi_zero_shot"]


def load_experiment(name: str, overrides: list[str] | None = None) -> Config:
    """configs/<name>.yaml loaded and validated (overrides as with --set)."""
    return load_config(REPO / "configs" / f"{name}.yaml", overrides)


@pytest.fixture(params=EXPERIMENTS)
def experiment(request: pytest.FixtureRequest) -> Config:
    """Each experiment config, loaded."""
    return load_experiment(request.param)


def test_every_experiment_config_is_covered() -> None:
    assert sorted(p.stem for p in (REPO / "configs").glob("xor_tydi_*.yaml")) == sorted(EXPERIMENTS)


def generator_of(config: Config) -> object:
    """The generator a run samples with: generate.model, else the one trained from train_qg.model."""
    return config.generate.model if config.generate.model is not None else config.train_qg.model


# ---- 1. compute types: no float16 with mT5 ------------------------------------------------------------------

def test_mt5_generator_runs_in_bfloat16(experiment: Config) -> None:
    from xqg.models.family import is_t5_family

    assert is_t5_family(generator_of(experiment))  # mT5-base, trained or ielabgroup's released one
    assert experiment.generate.compute_type in ("bfloat16", "int8_bfloat16", "float32", "auto")
    assert "float16" not in experiment.generate.compute_type.replace("bfloat16", "")


@pytest.mark.parametrize("backend", ["ctranslate2", "hf"])
@pytest.mark.parametrize("compute_type", ["float16", "int8_float16"])
@pytest.mark.parametrize("model", [None, "google/mt5-base", "ielabgroup/xor-tydi-docTquery-mt5-base", "google/flan-t5-base"])
def test_float16_with_a_t5_family_generator_is_a_config_error(backend: str, compute_type: str, model: str | None) -> None:
    # None: the run's own generator, trained from train_qg.model (google/mt5-base)
    sets = [f"generate.backend={backend}", f"generate.compute_type={compute_type}"]
    sets += [f"generate.model={model}"] if model else []
    with pytest.raises(ConfigError, match=rf"compute_type '{compute_type}' cannot run the T5-family generator") as err:
        load_experiment("xor_tydi_mbert", sets)
    assert "overflow float16" in str(err.value) and "bfloat16" in str(err.value)


def test_float16_with_a_scratch_mt5_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="T5-family generator mt5: mT5/T5 activations overflow float16"):
        load_config(DEMO_CONFIG, ["generate.compute_type=float16"])


@pytest.mark.parametrize("backend", ["ctranslate2", "hf", "vllm"])
@pytest.mark.parametrize("compute_type", ["float16", "int8_float16"])
def test_float16_with_a_decoder_only_generator_is_allowed(backend: str, compute_type: str) -> None:
    c = load_experiment("xor_tydi_mbert", [
        f"generate.backend={backend}", f"generate.compute_type={compute_type}", "generate.model=Qwen/Qwen2.5-0.5B",
    ])
    assert c.generate.compute_type == compute_type


@pytest.mark.parametrize("backend", ["ctranslate2", "hf"])
@pytest.mark.parametrize("compute_type", ["auto", "default", "bfloat16", "int8_bfloat16", "float32", "int8", "int8_float32"])
def test_safe_compute_types_with_mt5_are_allowed(backend: str, compute_type: str) -> None:
    c = load_experiment("xor_tydi_mbert", [f"generate.backend={backend}", f"generate.compute_type={compute_type}"])
    assert c.generate.compute_type == compute_type


def _model_folder(root: Path, name: str, model_type: str) -> str:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "is_encoder_decoder": model_type == "mt5"}))
    return str(folder)


def test_a_folders_config_json_names_the_family(tmp_path: Path) -> None:
    from xqg.models.family import is_t5_family

    hidden_mt5 = _model_folder(tmp_path, "my-generator", "mt5")  # nothing in the name says mT5
    not_t5 = _model_folder(tmp_path, "t5-named-llama", "llama")
    assert is_t5_family(hidden_mt5) and not is_t5_family(not_t5)
    for backend in ("ctranslate2", "hf"):
        with pytest.raises(ConfigError, match="cannot run the T5-family generator"):
            load_experiment("xor_tydi_mbert", [f"generate.backend={backend}", "generate.compute_type=float16",
                                               f"generate.model={hidden_mt5}"])
        load_experiment("xor_tydi_mbert", [f"generate.backend={backend}", "generate.compute_type=float16",
                                           f"generate.model={not_t5}"])


def test_prepare_refuses_a_trained_mt5_folder_in_float16(tmp_path: Path) -> None:
    # A config that slipped past the name-based guess is stopped on the driver, before any actor starts.
    from xqg.config import GenerateConfig
    from xqg.generate.backends import prepare_backend

    folder = _model_folder(tmp_path, "qg", "mt5")
    for backend in ("ctranslate2", "hf"):
        gen = GenerateConfig(backend=backend, compute_type="float16")
        with pytest.raises(ValueError, match="overflow float16"):
            prepare_backend(gen, None, folder, use_gpu=True)  # type: ignore[arg-type]


@pytest.mark.parametrize(("asked", "bf16", "runs"), [
    ("auto", True, "bfloat16"), ("auto", False, "float32"), ("default", True, "bfloat16"),
    ("int8", True, "int8_bfloat16"), ("int8", False, "int8_float32"), ("int16", False, "float32"),
    ("bfloat16", True, "bfloat16"), ("float32", True, "float32"), ("int8_float32", True, "int8_float32"),
])
def test_t5_on_gpu_never_resolves_to_float16(asked: str, bf16: bool, runs: str) -> None:
    # CTranslate2's own 'auto' on a GPU is int8_float16, torch's fastest is float16: neither for mT5.
    from xqg.generate.backends.base import t5_safe_compute_type

    assert t5_safe_compute_type(asked, "cuda", bf16) == runs
    assert t5_safe_compute_type(asked, "cpu", bf16) == asked  # CPU: CTranslate2 int8 / fp32, torch fp32


@pytest.mark.parametrize(("bf16", "t5", "dtype"), [
    (True, True, "bfloat16"), (False, True, "float32"), (True, False, "bfloat16"), (False, False, "float16"),
])
def test_hf_auto_dtype_on_gpu(monkeypatch: pytest.MonkeyPatch, bf16: bool, t5: bool, dtype: str) -> None:
    import torch

    from xqg.generate.backends.hf import torch_dtype

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    model = "google/mt5-base" if t5 else "Qwen/Qwen2.5-0.5B"
    assert torch_dtype("auto", "cuda", model) == getattr(torch, dtype)
    assert torch_dtype("auto", "cpu", model) == torch.float32


# ---- 2. the corpus: XOR-Retrieve's 2019-02-01 Wikipedia -----------------------------------------------------

def test_corpus_is_xor_retrieves_enwiki(experiment: Config) -> None:
    assert Path(experiment.corpus.path).name == "enwiki_20190201_w100.tsv"
    assert experiment.corpus.format == "dpr_tsv"


def test_enwiki_tsv_layout_is_read(tmp_path: Path) -> None:
    # enwiki_20190201_w100.tsv: header id<TAB>text<TAB>title, integer ids, DPR's layout.
    from xqg.ingest.corpus import read_passages

    path = tmp_path / "enwiki_20190201_w100.tsv"
    path.write_text('id\ttext\ttitle\n1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet"\tAaron\n2\tSecond passage text\tAaron\n')
    rows = [r for block in read_passages(str(path)) for r in block.table.to_pylist()]
    assert rows == [
        {"docid": "1", "title": "Aaron", "text": 'Aaron Aaron ( or ; "Ahärôn") is a prophet'},
        {"docid": "2", "title": "Aaron", "text": "Second passage text"},
    ]


# ---- 6. generation lengths: DSI-QG's generation step ----------------------------------------------------------

def test_generation_lengths_match_dsi_qg(experiment: Config) -> None:
    assert (experiment.generate.max_input_len, experiment.generate.max_new_tokens) == (256, 32)


def test_generation_length_defaults_match_dsi_qg() -> None:
    from xqg.generate.backends.base import SamplingSettings

    g = load_config().generate
    assert (g.max_input_len, g.max_new_tokens) == (256, 32)
    assert (SamplingSettings().max_input_len, SamplingSettings().max_new_tokens) == (256, 32)


# ---- 3. negatives per query: Tevatron's global batch, whatever the number of workers -----------------------

def test_each_query_meets_every_passage_of_the_papers_global_batch(experiment: Config) -> None:
    dr = experiment.train_dr
    assert (dr.batch_size, dr.train_n_passages) == (128, 8)  # Tevatron: 128 queries x (1 positive + 7 negatives)
    assert dr.num_workers > 1 and dr.gather_negatives, "negatives gathered across workers: 1,024 per query"
    assert (dr.lr, experiment.q_max_len, experiment.p_max_len) == (1e-5, 32, 128)


def test_gathering_negatives_is_the_default() -> None:
    from xqg.config import TrainDRConfig

    assert TrainDRConfig().gather_negatives is True


# ---- 4. passage format: Tevatron's "title text", in training and encoding ------------------------------------

def test_passages_are_trained_and_encoded_in_tevatrons_format(experiment: Config) -> None:
    assert experiment.train_dr.passage_format == "title_text_concat"
    # encode follows the trained model's xqg_dr.json (an explicit value may only repeat it)
    assert experiment.encode.passage_format in (None, "title_text_concat")


def test_passage_format_defaults_are_tevatrons() -> None:
    from xqg.config import EncodeConfig, TrainDRConfig
    from xqg.models.encoder import PASSAGE_FORMAT

    assert TrainDRConfig().passage_format == PASSAGE_FORMAT == "title_text_concat"
    assert EncodeConfig().passage_format is None


# ---- 5. the generator is fine-tuned as DSI-QG's step 1 --------------------------------------------------------

def test_generator_is_fine_tuned_as_dsi_qg_step_one(experiment: Config) -> None:
    qg = experiment.train_qg
    assert any(f.endswith("gp_squad_train_data.json") for f in qg.train_files)
    assert any(f.endswith("gp_squad_dev_data.json") for f in qg.eval_files), "best checkpoint by eval loss"
    assert (qg.max_steps, qg.batch_size, qg.lr, qg.warmup_ratio, qg.max_input_len) == (2000, 128, 1e-4, 0.0, 128)


# ---- the vLLM route: a decoder-only generator, everything else the supervised mBERT setting ---------------------

def test_the_vllm_route_config_differs_from_the_mbert_setting_only_in_its_generator() -> None:
    from xqg.models.family import guess_encoder_decoder, is_t5_family

    route, mbert = load_config(REPO / "configs" / "qwen_vllm.yaml"), load_experiment("xor_tydi_mbert")
    assert route.generate.backend == "vllm" and route.train_qg.model == "Qwen/Qwen2.5-0.5B"
    assert not guess_encoder_decoder(generator_of(route)) and not is_t5_family(generator_of(route))
    a, b = route.model_dump(), mbert.model_dump()
    for tree in (a, b):
        tree.pop("run_dir")
        for key in ("model", "lr"):
            tree["train_qg"].pop(key)
        for key in ("backend", "model"):
            tree["generate"].pop(key)
    assert a == b  # the same corpus, sampling (5 queries, top-k 10, 256 / 32 tokens), bi-encoder, fusion, evaluation
