"""Reruns after a change redo exactly the units made from what changed, through the whole pipeline.

A small complete run (the demo corpus in 4 shards, 2 languages, tiny given models, so no training) is built
once; each test copies it, changes one input and checks, per stage, how many units were redone and skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers.configs import demo_config, demo_subset
from xqg.config import Config
from xqg.rundir import RunDir, shard_name

SHARDS, LANGS, INDEX_SHARD = 4, ["ar", "fi"], 50

pytestmark = pytest.mark.slow


def config_for(run_dir: Path, mt5: str, bert: str, *overrides: str) -> Config:
    return demo_config(run_dir, *demo_subset(Path(run_dir).parent / "demo-subset", 240, dev_on_subset=True),
                       f"languages=[{', '.join(LANGS)}]", f"generate.model={mt5}", "generate.num_queries=2",
                       "generate.max_new_tokens=6", f"encode.model={bert}", f"index.shard_size={INDEX_SHARD}",
                       "evaluate.permutations=200", *overrides)


def work(summaries) -> dict[str, tuple[int, int]]:
    """stage label -> (units done, units skipped) of a pipeline run; the pipeline's one encode stage (every target
    through one pool) as "encode <target>" per target."""
    out = {}
    for s in summaries:
        if s.stage == "encode all":
            per_target = {t: s.extra[f"{t} units"] for t in ("passages", "generated", "queries")}
            out.update({f"encode {t}": (c["to do"], c["complete"]) for t, c in per_target.items()})
            assert s.units_done == sum(out[f"encode {t}"][0] for t in per_target), "a unit to do was not done"
            assert s.units_skipped == sum(out[f"encode {t}"][1] for t in per_target)
        elif s.stage != "pipeline":
            out[s.stage] = (s.units_done, s.units_skipped)
    return out


def index_shards_holding(run: RunDir, corpus_shard: int) -> int:
    """How many index shards hold rows of one corpus shard (rows are laid out in shard order)."""
    rows = [int(run.read_marker("encode", f"passages/{shard_name(s)}")["rows_out"]) for s in range(SHARDS)]
    lo, hi = sum(rows[:corpus_shard]), sum(rows[:corpus_shard + 1])
    return len(range(lo // INDEX_SHARD, (hi - 1) // INDEX_SHARD + 1))


def files(root: Path, *folders: str) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for f in folders for p in sorted((root / f).rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def other_bert(tmp_path_factory) -> str:
    """A second tiny bi-encoder: same architecture and tokenizer text, other weights (a 'retrained' models/dr)."""
    from helpers.paths import demo_texts
    from xqg.config import ScratchModel
    from xqg.models.tiny import build_scratch

    out = tmp_path_factory.mktemp("models") / "tiny-bert-2"
    return str(build_scratch(ScratchModel(scratch="bert", vocab_size=2000, seed=1), demo_texts(), out))


@pytest.fixture(scope="module")
def complete_run(ray_local, tmp_path_factory, tiny_mt5_dir, tiny_bert_dir):
    """A finished pipeline run; the number of index shards per index."""
    from xqg.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("complete") / "run"
    first = work(run_pipeline(config_for(root, tiny_mt5_dir, tiny_bert_dir)))
    n_index = first["index baseline"][0]
    assert first["generate"] == (SHARDS * len(LANGS), 0) and first["fuse xqg"] == (SHARDS, 0) and n_index >= 4
    return root, n_index


@pytest.fixture
def copy_of(complete_run, tmp_path):
    root, n_index = complete_run
    dst = tmp_path / "run"
    shutil.copytree(root, dst)
    return dst, n_index


def test_unchanged_rerun_does_nothing(copy_of, tiny_mt5_dir, tiny_bert_dir):
    from xqg.pipeline import run_pipeline

    root, n_index = copy_of  # a copied (moved) run directory is still complete
    summaries = run_pipeline(config_for(root, tiny_mt5_dir, tiny_bert_dir))
    assert all(done == 0 for done, _ in work(summaries).values()), work(summaries)
    assert "nothing to do" in summaries[-1].message


def test_new_bi_encoder_redoes_encode_and_everything_after_it(copy_of, tiny_mt5_dir, other_bert):
    from xqg.pipeline import run_pipeline

    root, n_index = copy_of
    got = work(run_pipeline(config_for(root, tiny_mt5_dir, other_bert)))
    assert got["ingest"][0] == 0 and got["generate"] == (0, SHARDS * len(LANGS))
    assert got["encode passages"] == (SHARDS, 0) and got["encode generated"] == (SHARDS * len(LANGS), 0)
    assert got["encode queries"] == (1, 0) and got["fuse xqg"] == (SHARDS, 0)
    assert got["index baseline"] == (n_index, 0) and got["index xqg"] == (n_index, 0)
    assert got["search baseline"] == (1, 0) and got["search xqg"] == (1, 0) and got["evaluate"] == (1, 0)


def test_new_sampling_setting_redoes_generation_and_only_what_depends_on_it(copy_of, tiny_mt5_dir, tiny_bert_dir):
    from xqg.pipeline import run_pipeline

    root, n_index = copy_of
    got = work(run_pipeline(config_for(root, tiny_mt5_dir, tiny_bert_dir, "generate.top_k=3")))
    assert got["generate"] == (SHARDS * len(LANGS), 0)
    assert got["encode passages"] == (0, SHARDS) and got["encode queries"] == (0, 1)
    assert got["encode generated"] == (SHARDS * len(LANGS), 0) and got["fuse xqg"] == (SHARDS, 0)
    assert got["index baseline"] == (0, n_index) and got["index xqg"] == (n_index, 0)
    assert got["search baseline"] == (0, 1) and got["search xqg"] == (1, 0) and got["evaluate"] == (1, 0)


def test_one_regenerated_shard_redoes_only_its_units_and_index_shards(copy_of, tiny_mt5_dir, tiny_bert_dir):
    from xqg.generate.stage import run_generate
    from xqg.pipeline import run_pipeline

    root, n_index = copy_of
    config = config_for(root, tiny_mt5_dir, tiny_bert_dir, "generate.temperature=0.7")
    assert run_generate(config, shards={1}).units_done == len(LANGS)
    got = work(run_pipeline(config, start="encode"))
    touched = index_shards_holding(RunDir(str(root)), 1)
    assert got["encode generated"] == (len(LANGS), (SHARDS - 1) * len(LANGS))
    assert got["encode passages"] == (0, SHARDS) and got["fuse xqg"] == (1, SHARDS - 1)
    assert got["index baseline"] == (0, n_index) and got["index xqg"] == (touched, n_index - touched)
    assert got["search baseline"] == (0, 1) and got["search xqg"] == (1, 0) and got["evaluate"] == (1, 0)


def test_new_alpha_redoes_only_the_fused_set_and_what_is_made_from_it(copy_of, tiny_mt5_dir, tiny_bert_dir):
    from xqg.pipeline import run_pipeline

    root, n_index = copy_of
    got = work(run_pipeline(config_for(root, tiny_mt5_dir, tiny_bert_dir, "fuse.alpha=0.5")))
    assert got["generate"][0] == 0 and all(got[f"encode {t}"][0] == 0 for t in ("passages", "generated", "queries"))
    assert got["fuse xqg"] == (SHARDS, 0) and got["index baseline"] == (0, n_index)
    assert got["index xqg"] == (n_index, 0) and got["search baseline"] == (0, 1)
    assert got["search xqg"] == (1, 0) and got["evaluate"] == (1, 0)


def test_a_new_language_leaves_the_existing_fused_set_index_and_report_byte_for_byte(copy_of, tiny_mt5_dir, tiny_bert_dir):
    from xqg.generate.stage import run_generate
    from xqg.pipeline import run_pipeline

    root, _ = copy_of
    config = config_for(root, tiny_mt5_dir, tiny_bert_dir)
    before = files(root, "fused/xqg", "index/xqg", "reports", "runs")
    assert run_generate(config, languages=["sw"]).units_done == SHARDS
    got = work(run_pipeline(config))
    assert got["generate"] == (0, SHARDS * len(LANGS)) and got["encode generated"] == (SHARDS, SHARDS * len(LANGS))
    assert got["fuse xqg"] == (0, SHARDS) and got["index xqg"][0] == 0 and got["evaluate"] == (0, 1)
    assert files(root, "fused/xqg", "index/xqg", "reports", "runs") == before
    # Fusing with the new language is an explicit new set, next to the old one.
    sw = config_for(root, tiny_mt5_dir, tiny_bert_dir, "fuse.name=xqg-sw", "fuse.languages=[ar, fi, sw]")
    from xqg.fuse import run_fuse

    assert run_fuse(sw).units_done == SHARDS and files(root, "fused/xqg") == {k: v for k, v in before.items() if k.startswith("fused/xqg/")}
