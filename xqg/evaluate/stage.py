"""The evaluate stage: score the baseline and +xQG runs, compare them, write the report."""

from __future__ import annotations

import hashlib
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from xqg.config import Config
from xqg.evaluate.metrics import ir_metrics
from xqg.evaluate.report import format_table, make_results, write_report
from xqg.evaluate.xor import TokenCache, recall_at_kt
from xqg.pipeline import index_names
from xqg.rundir import RunDir
from xqg.summary import StageSummary

STAGE = "evaluate"


def query_set_name(config: Config) -> str:
    """The query set searched and scored: search.query_set, else the first configured set."""
    if config.search.query_set:
        return config.search.query_set
    if not config.queries:
        raise ValueError("no query set configured: add one under `queries:`")
    return config.queries[0].name


def run_name(config: Config, index: str) -> str:
    """The run file name search writes for an index and the scored query set."""
    qset = query_set_name(config)
    return index if qset == config.queries[0].name else f"{index}.{qset}"


def read_run(run: RunDir, name: str) -> pa.Table:
    """runs/<name>.tsv as a table (qid, docid, rank, score), ordered by qid then rank."""
    rel = posixpath.join("runs", f"{name}.tsv")
    if not run.exists(rel):
        raise FileNotFoundError(f"no run file {run.path(rel)}: run jobs/search.py first")
    with run.fs.open_input_stream(run.path(rel)) as f:
        table = pacsv.read_csv(
            f,
            parse_options=pacsv.ParseOptions(delimiter="\t"),
            convert_options=pacsv.ConvertOptions(
                column_types={"qid": pa.string(), "docid": pa.string(), "rank": pa.int64(), "score": pa.float64()}
            ),
        )
    return table.sort_by([("qid", "ascending"), ("rank", "ascending")])


def passage_texts(run: RunDir, docids: pa.Array, include_title: bool) -> dict[str, str]:
    """Texts of the given passages only, read shard by shard with a filter (never the whole corpus in memory)."""
    wanted = pc.unique(docids)
    out: dict[str, str] = {}
    for table in run.iter_corpus(columns=["docid", "title", "text"]):
        table = table.filter(pc.is_in(table["docid"], value_set=wanted))
        text = table["text"]
        if include_title:
            text = pc.binary_join_element_wise(table["title"], text, " ")
        out.update(zip(table["docid"].to_pylist(), text.to_pylist()))
    return out


def _ranked_lists(table: pa.Table) -> dict[str, list[str]]:
    """qid -> docids in rank order (the table is sorted by qid, rank)."""
    qids = table["qid"].to_numpy(zero_copy_only=False)
    docids = table["docid"].to_numpy(zero_copy_only=False)
    if len(qids) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, qids[1:] != qids[:-1]])
    ends = np.r_[starts[1:], len(qids)]
    return {qids[s]: docids[s:e].tolist() for s, e in zip(starts, ends)}


def _fingerprint(run: RunDir, names: list[str], qset: str) -> str:
    """Changes when a run file or the query set changes, so a new search is scored again."""
    h = hashlib.sha256()
    paths = [run.path("runs", f"{n}.tsv") for n in names] + run.parquet_files(posixpath.join("queries", qset))
    for info in run.fs.get_file_info(paths):
        h.update(f"{info.path}:{info.size}:{info.mtime_ns}".encode())
    return h.hexdigest()[:16]


def _config_summary(config: Config) -> dict[str, Any]:
    def model(ref: Any) -> str:
        return ref if isinstance(ref, str) or ref is None else f"scratch {ref.scratch} (d_model {ref.d_model})"

    return {
        "run_dir": config.run_dir,
        "languages": ", ".join(config.languages),
        "generator": model(config.generate.model) if config.generate.model else f"trained: {model(config.train_qg.model)}",
        "backend": config.generate.backend,
        "queries per language": config.generate.num_queries,
        "bi-encoder": model(config.encode.model) if config.encode.model else f"trained: {model(config.train_dr.model)}",
        "alpha": config.fuse.alpha,
        "fusion": f"{config.fuse.reduce} over {config.fuse.num_queries or 'all'} queries of "
        f"{', '.join(config.fuse.languages) if config.fuse.languages else 'every generated language'}",
        "index": config.index.type,
        "depth": config.search.depth,
    }


def run_evaluate(config: Config) -> StageSummary:
    """Score baseline and +xQG runs with R@kt (and IR metrics when qrels exist); write reports/<fuse name>.*."""
    start = time.perf_counter()
    run = RunDir(config.run_dir)
    qset = query_set_name(config)
    baseline_index, xqg_index = index_names(config)
    names = {"baseline": run_name(config, baseline_index), "+xQG": run_name(config, xqg_index)}
    report_name = run_name(config, xqg_index)
    summary = StageSummary(stage=STAGE)
    fingerprint = _fingerprint(run, list(names.values()), qset)
    if run.is_done(STAGE, report_name):
        marker = run.read_marker(STAGE, report_name)
        if marker.get("fingerprint") == fingerprint:
            summary.rows_in = summary.rows_out = int(marker["rows_in"])
            summary.units_skipped = 1
            summary.message = f"reports/{report_name}.md is up to date\n\n{marker['table']}"
            summary.seconds = time.perf_counter() - start
            return summary

    run.write_config(config, STAGE)
    queries = run.read_dir(posixpath.join("queries", qset), columns=["qid", "lang", "answers", "docids"])
    questions = [
        {"id": q, "lang": lang, "answers": answers}
        for q, lang, answers in zip(
            queries["qid"].to_pylist(), queries["lang"].to_pylist(), queries["answers"].to_pylist()
        )
    ]
    tables = {label: read_run(run, name) for label, name in names.items()}
    texts = passage_texts(
        run, pa.concat_arrays([t["docid"].combine_chunks() for t in tables.values()]), config.evaluate.include_title
    )
    cache = TokenCache()  # both runs retrieve many of the same passages
    results = {}
    for label, table in tables.items():
        ranked = _ranked_lists(table)
        predictions = {qid: [texts.get(d, "") for d in docids] for qid, docids in ranked.items()}
        results[label] = recall_at_kt(questions, predictions, ks=tuple(config.evaluate.kt), cache=cache)

    ir = None
    qrels = {q: {d: 1 for d in ds} for q, ds in zip(queries["qid"].to_pylist(), queries["docids"].to_pylist()) if ds}
    if qrels:
        ir = {
            label: ir_metrics(
                qrels,
                _run_scores(table),
                ks=tuple(config.evaluate.ir_ks),
            )
            for label, table in tables.items()
        }
    report = make_results(results, ir=ir, n_permutations=config.evaluate.permutations, seed=config.evaluate.seed)
    paths = write_report(run.path("reports"), report_name, report, _config_summary(config))
    table_text = format_table(report)

    counted = results["baseline"].counts
    summary.rows_in = summary.rows_out = len(questions)
    summary.units_done = 1
    summary.extra = {
        "questions counted": sum(counted.values()),
        "questions skipped (yes/no or no answer)": results["baseline"].n_skipped,
        "report": paths["md"],
    }
    summary.message = table_text
    run.mark_done(STAGE, report_name, fingerprint=fingerprint, rows_in=len(questions), table=table_text, files=paths)
    summary.seconds = time.perf_counter() - start
    return summary


def _run_scores(table: pa.Table) -> dict[str, dict[str, float]]:
    """qid -> {docid: score}, the form ranx takes."""
    out: dict[str, dict[str, float]] = {}
    for q, d, score in zip(table["qid"].to_pylist(), table["docid"].to_pylist(), table["score"].to_pylist()):
        out.setdefault(q, {})[d] = score
    return out
