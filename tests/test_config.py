"""Config: paper defaults, YAML + --set overrides, errors that name the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REPO
from xqg.config import ConfigError, ScratchModel, load_config


def test_defaults_match_the_paper() -> None:
    c = load_config()
    assert c.languages == ["ar", "bn", "fi", "ja", "ko", "ru", "te"]
    assert c.generate.num_queries == 5 and c.generate.top_k == 10
    assert c.fuse.alpha == 0.01 and c.fuse.reduce == "sum" and c.fuse.languages is None
    assert (c.q_max_len, c.p_max_len) == (32, 128)
    assert (c.train_dr.batch_size, c.train_dr.lr, c.train_dr.epochs, c.train_dr.train_n_passages) == (128, 1e-5, 40, 8)
    assert c.train_dr.pooling == "cls" and c.index.type == "flat" and c.search.depth == 100
    assert c.generate.template == "Generate a {language} question for this passage: {title} {text}"


def test_yaml_and_overrides(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run_dir: /tmp/x\ngenerate:\n  num_queries: 3\nlanguages: [' AR', fi]\n", encoding="utf-8")
    c = load_config(cfg, ["generate.num_queries=2", "fuse.alpha=0.02", "train_dr.model.scratch=bert"])
    assert c.generate.num_queries == 2 and c.fuse.alpha == 0.02
    assert c.languages == ["ar", "fi"]  # stray space and case normalised
    assert isinstance(c.train_dr.model, ScratchModel) and c.train_dr.model.scratch == "bert"


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["generate.bogus=1"], "generate.bogus: unknown key"),
        (["nope=1"], "nope: unknown key"),
        (["fuse.alpha=2"], "fuse.alpha"),
        (["generate.num_queries=zero"], "generate.num_queries"),
        (["languages=[ar, xx]"], "unknown language code: 'xx'"),
        (["index.type=lsh"], "index.type"),
        (["generate.template=no placeholders"], "generate.template"),
        (["train_dr.model.scratch=bert", "train_dr.model.layers=3"], "train_dr.model.layers: unknown key"),
    ],
)
def test_errors_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert needle in str(err.value)


def test_unknown_key_in_yaml_file(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("corpus:\n  paht: x.tsv\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"corpus\.paht: unknown key"):
        load_config(cfg)


def test_vllm_with_mt5_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="vLLM has no T5/mT5 support.*ctranslate2"):
        load_config(None, ["generate.backend=vllm", "generate.model=google/mt5-base"])
    # the run's own generator, trained from a scratch mT5
    with pytest.raises(ConfigError, match="encoder-decoder model 'mt5': vLLM has no T5/mT5 support"):
        load_config(None, ["generate.backend=vllm", "train_qg.model.scratch=mt5"])
    # a decoder-only generator is fine
    assert load_config(None, ["generate.backend=vllm", "generate.model=Qwen/Qwen2.5-0.5B"]).generate.backend == "vllm"


def test_validating_a_backend_imports_no_heavy_package() -> None:
    # The driver and the CLI load configs on machines without GPUs (and without vllm): keep that cheap.
    code = (
        "import sys; from xqg.config import load_config\n"
        "for b in ('hf', 'ctranslate2', 'vllm'): load_config(None, [f'generate.backend={b}', 'generate.model=x/gpt2'])\n"
        "print(sorted({'torch', 'transformers', 'ctranslate2', 'vllm', 'ray'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_bad_override_syntax() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["generate.num_queries"])


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name: str) -> None:
    load_config(REPO / "configs" / name)


# ---- values that must not be taken silently ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("generate.num_queries=true", "--set generate.num_queries: expected an integer, got a boolean (true)"),
        ("corpus.num_shards=2.0", "--set corpus.num_shards: expected an integer, got 2.0"),
        ("evaluate.kt=[2, 5.0]", "--set evaluate.kt: expected an integer, got 5.0"),
        ("train_qg.max_steps=false", "--set train_qg.max_steps: expected an integer, got a boolean (false)"),
        ("fuse.alpha=true", "--set fuse.alpha: expected a number, got a boolean (true)"),
        ("generate.temperature=inf", "--set generate.temperature: Input should be a finite number"),
        ("generate.temperature=.nan", "--set generate.temperature: Input should be a finite number"),
        ("train_dr.lr=.inf", "--set train_dr.lr: Input should be a finite number"),
        ("fuse.alpha=nan", "--set fuse.alpha: Input should be a finite number"),
    ],
)
def test_numbers_are_not_cast_and_must_be_finite(override: str, line: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value) == line


def test_plain_numbers_still_load() -> None:
    c = load_config(None, ["generate.num_queries=3", "fuse.alpha=1", "train_dr.lr=1e-5", "generate.temperature=0.7"])
    assert (c.generate.num_queries, c.fuse.alpha, c.train_dr.lr, c.generate.temperature) == (3, 1.0, 1e-5, 0.7)
    assert isinstance(c.fuse.alpha, float)  # an int for a float field is exact: taken


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["queries.0.path=x"], "--set queries.0.path: index 0 is out of range: queries has 0 item(s)"),
        (["languages.7=sw"], "--set languages.7: index 7 is out of range: languages has 7 item(s)"),
        (["queries=[{name: dev, path: d.jsonl}]", "queries.1.name=x"], "index 1 is out of range: queries has 1 item(s)"),
        (["queries.name=dev"], "--set queries.name: queries is a list: address its items by index, e.g. queries.0.name"),
        (["languages.first=sw"], "--set languages.first: languages is a list"),
        (["queries=[{name: dev, path: d.jsonl}]", "queries.0.path.x=1"], "queries.0.path: Input should be a valid string"),
    ],
)
def test_set_into_a_list_out_of_range_or_by_key_is_a_config_error(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_set_a_list_item_by_index() -> None:
    assert load_config(None, ["languages.0=sw"]).languages == ["sw", "bn", "fi", "ja", "ko", "ru", "te"]
    c = load_config(None, ["queries=[{name: dev, path: d.jsonl}]", "queries.0.path=e.jsonl"])
    assert c.queries[0].path == "e.jsonl"


def test_config_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes("run_dir: runs/caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(err.value) == f"config {cfg} is not UTF-8 text (byte 17: b'\\xe9'): save it as UTF-8"


def test_errors_are_one_line_per_key_naming_where_each_came_from(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("generate:\n  num_queries: true\ncorpus:\n  num_shards: 2.0\n  paht: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, ["fuse.alpha=2"])
    assert str(err.value).splitlines() == [  # no header line: each line says what and where on its own
        f"{cfg}: corpus.num_shards: expected an integer, got 2.0",
        f"{cfg}: corpus.paht: unknown key",
        f"{cfg}: generate.num_queries: expected an integer, got a boolean (true)",
        "--set fuse.alpha: Input should be less than or equal to 1",
    ]


def test_a_scratch_model_error_is_not_doubled_by_the_string_branch() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train_dr.model.scratch=bert", "train_dr.model.d_model=true"])
    assert str(err.value) == "--set train_dr.model.d_model: expected an integer, got a boolean (true)"


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path: Path) -> None:
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("languages: [ar, fi\nrun_dir: x\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert str(err.value) == f"config {cfg} is not valid YAML: expected ',' or ']', but got ':' at line 2, column 8"
