"""jobs/export.py: write any run as runs/<run>.xor.json, XOR-TyDi's official prediction format (see official.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pyarrow as pa

from xqg.config import Config
from xqg.evaluate.official import write_xor_predictions, xor_file, xor_predictions
from xqg.evaluate.stage import _ranked_lists, passage_texts, read_run
from xqg.layout import ENCODE, default_query_set, index_names, queries_target, query_set_dir, query_set_name, run_name
from xqg.rundir import RunDir
from xqg.summary import StageSummary


def read_questions(run: RunDir, query_set: str) -> list[dict]:
    """The query set's questions as {"id", "lang"}, in the order ingest stored them."""
    table = run.read_dir(query_set_dir(query_set), columns=["qid", "lang"])
    return [{"id": q, "lang": lang} for q, lang in zip(table["qid"].to_pylist(), table["lang"].to_pylist())]


def export_runs(config: Config, indexes: Sequence[str] | None = None, query_set: str | None = None) -> StageSummary:
    """Write runs/<run>.xor.json for the runs of the given indexes (default: baseline and the fused set)."""
    start = time.perf_counter()
    run = RunDir(config.run_dir)
    encoded = sorted(u.split("/", 1)[1] for u in run.markers(ENCODE) if u.startswith(f"{queries_target(config.setting)}/"))
    default_set = default_query_set(config, encoded)
    qset = query_set or query_set_name(config, encoded)
    names = [run_name(index, qset, default_set) for index in (indexes or index_names(config))]
    questions = read_questions(run, qset)
    tables = {name: read_run(run, name) for name in names}  # FileNotFoundError naming the missing run first
    texts = passage_texts(
        run, pa.concat_arrays([t["docid"].combine_chunks() for t in tables.values()]), config.evaluate.include_title
    )
    summary = StageSummary(stage="export")
    for name, table in tables.items():
        ranked = _ranked_lists(table)
        path = write_xor_predictions(run, name, xor_predictions(questions, ranked, texts))
        summary.rows_in += len(questions)
        summary.rows_out += len(questions)
        summary.units_done += 1
        summary.extra[f"{name} (questions without a ranking: empty ctxs)"] = sum(
            1 for q in questions if q["id"] not in ranked
        )
        summary.extra[f"{name} file"] = path
    summary.seconds = time.perf_counter() - start
    summary.message = (
        "score with XOR-TyDi's script: python evals/eval_xor_retrieve.py --data_file <dev jsonl> --pred_file "
        f"{run.path(xor_file(names[-1]))}"
    )
    return summary
