"""Which passage format encoding uses: the one the model was trained with, never another silently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from encode_helpers import install_dr
from xqg.config import ConfigError, EncodeConfig, TrainDRConfig, load_config
from xqg.encode.model import load_encoder_spec
from xqg.rundir import RunDir


def spec_of(run: RunDir, *overrides: str):
    return load_encoder_spec(load_config(None, [f"run_dir={run.uri}", *overrides]), run)


def test_defaults_are_tevatrons_format_in_training_and_encoding() -> None:
    assert TrainDRConfig().passage_format == "title_text_concat"
    assert EncodeConfig().passage_format is None  # = as the model was trained


def test_run_trained_model_is_encoded_in_its_recorded_format(tmp_path: Path, tiny_bert_dir: str) -> None:
    run = RunDir(str(tmp_path / "run"))
    install_dr(run, tiny_bert_dir)  # what train_dr leaves by default
    assert spec_of(run).passage_format == "title_text_concat"
    assert spec_of(run, "encode.passage_format=title_text_concat").passage_format == "title_text_concat"
    meta = run.read_json("models/dr/xqg_dr.json")
    run.write_json("models/dr/xqg_dr.json", {**meta, "passage_format": "title_text_pair"})
    assert spec_of(run).passage_format == "title_text_pair", "a model trained on pairs is encoded as pairs"


def test_encode_passage_format_that_contradicts_the_model_is_refused_naming_both(
    tmp_path: Path, tiny_bert_dir: str
) -> None:
    run = RunDir(str(tmp_path / "run"))
    install_dr(run, tiny_bert_dir)
    with pytest.raises(ConfigError) as e:
        spec_of(run, "encode.passage_format=title_text_pair")
    msg = str(e.value)
    assert "encode.passage_format=title_text_pair" in msg and "title_text_concat" in msg and "xqg_dr.json" in msg


def test_hub_model_without_meta_gets_tevatrons_format_unless_told(tmp_path: Path, tiny_bert_dir: str) -> None:
    run = RunDir(str(tmp_path / "run"))
    assert not (Path(tiny_bert_dir) / "xqg_dr.json").exists()
    spec = spec_of(run, f"encode.model={tiny_bert_dir}")
    assert spec.passage_format == "title_text_concat" and spec.query_model == spec.passage_model == tiny_bert_dir
    assert spec_of(run, f"encode.model={tiny_bert_dir}", "encode.passage_format=text").passage_format == "text"


def test_encode_model_with_its_own_meta_follows_it(tmp_path: Path, tiny_bert_dir: str) -> None:
    """encode.model naming another run's trained bi-encoder: its xqg_dr.json decides, as for models/dr."""
    other = tmp_path / "other" / "models" / "dr"
    shutil.copytree(tiny_bert_dir, other)
    (other / "xqg_dr.json").write_text(json.dumps({
        "pooling": "mean", "shared_encoder": True, "q_max_len": 24, "p_max_len": 96,
        "passage_format": "title_text_pair",
    }))
    run = RunDir(str(tmp_path / "run"))
    spec = spec_of(run, f"encode.model={other}")
    assert (spec.passage_format, spec.pooling, spec.q_max_len, spec.p_max_len) == ("title_text_pair", "mean", 24, 96)
    with pytest.raises(ConfigError, match="title_text_concat.*title_text_pair"):
        spec_of(run, f"encode.model={other}", "encode.passage_format=title_text_concat")
    # a run-relative reference reads the meta from the run directory
    shutil.copytree(other, tmp_path / "run" / "models" / "dr2")
    assert spec_of(run, "encode.model=run:models/dr2").passage_format == "title_text_pair"
