"""Named bi-encoder settings (e.g. zero-shot): their own names for every output, and the pipeline runs each."""

from __future__ import annotations

import pytest

from helpers.paths import DEMO_CONFIG
from xqg import layout
from xqg.config import ConfigError, load_config
from xqg.pipeline import setting_configs


def test_a_setting_names_its_own_model_embeddings_indexes_and_report() -> None:
    config = load_config(DEMO_CONFIG)
    main, zero_shot, zero_shot_xqg = setting_configs(config)
    assert zero_shot.setting == "zero_shot" and zero_shot.train_dr.languages == ["en"]
    assert main.setting is None and main.train_dr.languages is None
    # the main setting keeps today's names
    assert (layout.dr_name(main.setting), layout.passages_unit(0, main.setting), layout.index_names(main),
            layout.report_name(main)) == ("dr", "passages/shard=00000", ["baseline", "xqg", "xqg-tuned"], "xqg")
    assert layout.training_unit("model", "dr") == "model" and layout.training_unit("data", "qg") == "data"
    # the zero-shot setting's names never collide with the main one's
    assert layout.dr_name("zero_shot") == "dr-zero_shot"
    assert layout.training_unit("model", "dr-zero_shot") == "model-zero_shot"
    assert layout.passages_unit(0, "zero_shot") == "passages-zero_shot/shard=00000"
    assert layout.queries_unit("dev", "zero_shot") == "queries-zero_shot/dev"
    assert layout.generated_variant(None, "zero_shot") == "generated-zero_shot"
    assert layout.parse_generated_sum_unit("generated-k3-zero_shot/lang=ar/shard=00001") == (
        "generated-k3-zero_shot", "ar", 1)
    assert layout.index_names(zero_shot) == ["baseline-zero_shot", "xqg-zero_shot", "xqg-tuned-zero_shot"]
    assert layout.tune_file(zero_shot) == "tune/xqg-zero_shot.json"
    assert layout.is_baseline("baseline-zero_shot") and layout.baseline_setting("baseline-zero_shot") == "zero_shot"
    assert not layout.is_baseline("xqg-zero_shot") and layout.baseline_setting("baseline") is None
    assert layout.report_name(zero_shot) == "xqg-zero_shot"
    # a setting's own training: zero-shot + generated pairs, the rest as train_dr
    assert zero_shot_xqg.train_dr.xqg_pairs.enabled and zero_shot_xqg.train_dr.languages == ["en"]
    assert not zero_shot.train_dr.xqg_pairs.enabled and not main.train_dr.xqg_pairs.enabled
    assert zero_shot_xqg.train_dr.max_steps == main.train_dr.max_steps == zero_shot.train_dr.max_steps
    # a chosen setting runs alone
    assert setting_configs(zero_shot) == [zero_shot]


@pytest.mark.parametrize("overrides, needle", [
    (["setting=nope"], "not one of settings"),
    (["settings=[{name: a, train_languages: [en]}, {name: a, train_languages: [fi]}]"], "unique"),
    (["settings=[{name: ../x, train_languages: [en]}]"], "settings.name"),
    (["fuse.name=baseline-x"], "reserved"),
])
def test_bad_settings_are_config_errors(overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(DEMO_CONFIG, overrides)
