"""Run-directory builders and a plain-transformers reference encoder shared by the encode tests."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa

from helpers.paths import DEMO
from xqg.rundir import RunDir, shard_name


def direct_encode(model_dir: str, texts: list[str], pairs: list[str] | None, max_len: int, pooling: str) -> np.ndarray:
    """Reference: one padded batch through transformers in this process, no xqg code involved."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    # One segment (pairs None): no token type ids, as Tevatron and xqg pass them (BERT then uses zeros).
    types = {} if pairs is not None else {"return_token_type_ids": False}
    enc = tok(texts, pairs, truncation=True, max_length=max_len, padding=True, return_tensors="pt", **types)
    with torch.inference_mode():
        hidden = model(**enc).last_hidden_state
    if pooling == "cls":
        return hidden[:, 0].numpy()
    m = enc["attention_mask"].unsqueeze(-1).float()
    return ((hidden * m).sum(1) / m.sum(1)).numpy()


def dev_questions(n: int) -> list[dict]:
    """The first n demo dev questions (several scripts)."""
    with (DEMO / "dev.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line, _ in zip(f, range(n))]


def query_lists(docids: list[str], lang: str, pool: list[str]) -> list[list[str]]:
    """3 generated queries per passage, with one empty list and one list holding an empty generation."""
    lists = [[pool[(i * 3 + j) % len(pool)] + f" {lang}{j}" for j in range(3)] for i in range(len(docids))]
    lists[1] = []
    lists[2] = ["", lists[2][0]]
    return lists


def write_generated(run: RunDir, rows: list[dict], langs: list[str], shards: int) -> dict[tuple[str, str], list[str]]:
    """generated/lang=xx/shard=N Parquet + generate markers, aligned with the corpus shards; returns the lists."""
    pool = [q["question"] for q in dev_questions(40)]
    out = {}
    for lang in langs:
        for s in range(shards):
            part = rows[s * len(rows) // shards:(s + 1) * len(rows) // shards]
            docids = [r["docid"] for r in part]
            lists = query_lists(docids, lang, pool)
            table = pa.table({"docid": docids, "lang": [lang] * len(part), "queries": lists},
                             schema=pa.schema([("docid", pa.string()), ("lang", pa.string()),
                                               ("queries", pa.list_(pa.string()))]))
            run.write_table(f"generated/lang={lang}/{shard_name(s)}/part-00000.parquet", table)
            run.mark_done("generate", f"lang={lang}/{shard_name(s)}", rows_out=len(part))
            out.update({(d, lang): q for d, q in zip(docids, lists)})
    return out


def write_query_set(run: RunDir, name: str, rows: list[dict]) -> None:
    """queries/<name> Parquet (qid, lang, question, answers, docids) + its ingest marker."""
    table = pa.table({
        "qid": [r["id"] for r in rows], "lang": [r["lang"] for r in rows], "question": [r["question"] for r in rows],
        "answers": [r["answers"] for r in rows], "docids": [[r["docid"]] for r in rows],
    })
    run.write_table(f"queries/{name}/part-00000.parquet", table)
    run.mark_done("ingest", f"queries={name}", rows_out=len(rows))


def install_dr(run: RunDir, model_dir: str, **meta) -> None:
    """models/dr as train_dr leaves it by default: a copy of the model plus xqg_dr.json (Tevatron's passage
    format, "title text" as one segment)."""
    shutil.copytree(model_dir, run.local_path("models", "dr"), dirs_exist_ok=True)
    run.write_json("models/dr/xqg_dr.json", {
        "pooling": "cls", "shared_encoder": True, "q_max_len": 32, "p_max_len": 128,
        "passage_format": "title_text_concat", **meta,
    })


def concat(rows: list[dict]) -> list[str]:
    """Passages in Tevatron's format: "title text" (no title: the text alone)."""
    return [f"{r['title'] or ''} {r['text']}".strip() for r in rows]
