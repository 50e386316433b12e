"""Config: paper defaults, YAML + --set overrides, errors that name the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xqg.config import ConfigError, ScratchModel, load_config

REPO = Path(__file__).resolve().parent.parent


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
