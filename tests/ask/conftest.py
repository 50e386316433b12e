"""A tiny finished run to ask: demo passages, generated queries, the tiny BERT as bi-encoder, real encode, fuse and
index stages (through the session's local Ray), built once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from helpers.paths import DEMO
from tests.encode.encode_helpers import install_dr
from xqg.rundir import RunDir, shard_name

LANGS = ["ar", "fi", "ja"]
PER_LANG = 6  # dev questions per language: each one's gold passage gets it as a generated query
SHARDS = 2


def filler(lang: str) -> str:
    """The generated query every passage gets in every language: the same text everywhere, so it adds the same
    vector to every fused passage and leaves the ranking to the gold questions (the untrained encoder's
    similarities are noise, and a per-passage filler would rank by that noise)."""
    return f"what is this passage about ({lang})?"


def write_generated(run: RunDir, rows: list[dict], gold: dict[str, dict]) -> None:
    """generated/lang=xx/shard=N for every language and shard, with markers, aligned with the corpus shards: a gold
    passage's list in its question's language starts with that question."""
    for s in range(SHARDS):
        part = rows[s * len(rows) // SHARDS:(s + 1) * len(rows) // SHARDS]
        for lang in LANGS:
            lists = [([gold[r["docid"]]["question"]] if gold.get(r["docid"], {}).get("lang") == lang else [])
                     + [filler(lang)] for r in part]
            table = pa.table({"docid": [r["docid"] for r in part], "lang": [lang] * len(part), "queries": lists},
                             schema=pa.schema([("docid", pa.string()), ("lang", pa.string()),
                                               ("queries", pa.list_(pa.string()))]))
            run.write_table(f"generated/lang={lang}/{shard_name(s)}/part-00000.parquet", table)
            run.mark_done("generate", f"lang={lang}/{shard_name(s)}", rows_out=len(part))


@pytest.fixture(scope="session")
def ask_run(tmp_path_factory, ray_local, tiny_bert_dir, make_corpus_run, demo_passage_rows) -> dict:
    """A finished run (baseline and xqg indexes, 2 index shards each) and the dev questions whose gold passages it
    holds. fuse.alpha is 0.5, not the paper's 0.01: the tiny bi-encoder is untrained, so a question can reach its
    passage only through the generated queries fused into it (what `why` shows), not through the passage text."""
    from xqg.config import load_config
    from xqg.encode.stage import run_encode
    from xqg.fuse import run_fuse
    from xqg.index.stage import run_index

    dev = [json.loads(line) for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()]
    questions = [q for lang in LANGS for q in [d for d in dev if d["lang"] == lang][:PER_LANG]]
    by_id = {r["docid"]: r for r in demo_passage_rows}
    gold_ids = {q["docid"] for q in questions}
    rows = [by_id[q["docid"]] for q in questions] + [r for r in demo_passage_rows[:30] if r["docid"] not in gold_ids]
    rows.sort(key=lambda r: r["docid"])  # gold passages spread over both shards
    root = tmp_path_factory.mktemp("ask") / "run"
    run = make_corpus_run(rows, num_shards=SHARDS, run_dir=root)
    write_generated(run, rows, {q["docid"]: q for q in questions})
    install_dr(run, tiny_bert_dir, pooling="mean")
    overrides = [f"run_dir={root}", f"languages=[{', '.join(LANGS)}]", "fuse.alpha=0.5", "index.shard_size=30",
                 "storage.dtype=float32"]
    config = load_config(None, overrides)
    for summary in (run_encode(config, "all"), run_fuse(config), run_index(config, "baseline"),
                    run_index(config, "xqg")):
        assert summary.ok and summary.balanced, summary.render()
    return {"root": root, "run": run, "overrides": overrides, "config": config, "questions": questions,
            "rows": rows}


@pytest.fixture
def config_file(ask_run, tmp_path: Path) -> Path:
    """A config file for the tiny run, as a user passes --config."""
    import yaml

    keys = dict(o.split("=", 1) for o in ask_run["overrides"])
    path = tmp_path / "ask.yaml"
    path.write_text(yaml.safe_dump({"run_dir": keys["run_dir"], "languages": LANGS, "fuse": {"alpha": 0.5},
                                    "index": {"shard_size": 30}, "storage": {"dtype": "float32"}}))
    return path
