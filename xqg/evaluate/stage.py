"""The evaluate stage: score the baseline and +xQG runs, compare them, write the report."""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from xqg.config import Config
from xqg.evaluate.official import XOR_EXT, write_xor_predictions, xor_file, xor_predictions
from xqg.evaluate.metrics import ir_metrics
from xqg.evaluate.generated import generated_quality
from xqg.evaluate.report import format_lead_table, format_table, make_results, write_report
from xqg.evaluate.xor import TokenCache, recall_at_kt
from xqg.fuse import fuse_languages
from xqg.layout import (
    EVALUATE,
    GENERATE,
    INGEST,
    SEARCH,
    TUNE,
    corpus_dir,
    default_query_set,
    index_names,
    query_set_dir,
    query_set_name,
    query_set_unit,
    report_name,
    run_file,
    run_name,
    tune_unit,
)
from xqg.rundir import RunDir, shard_name
from xqg.runner import StageRunner, Unit, fingerprint, marker_fingerprint
from xqg.stamp import path_stamp
from xqg.summary import StageSummary


def read_run(run: RunDir, name: str) -> pa.Table:
    """runs/<name>.tsv as a table (qid, docid, rank, score), ordered by qid then rank."""
    rel = run_file(name)
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


def wanted_by_shard(run: RunDir, shards: list[int], wanted: pa.Array) -> dict[int, pa.Array]:
    """The wanted docids that each corpus shard can hold: ingest placed a passage in shard_of(docid, num_shards)
    (its marker records num_shards). A shard whose marker does not say gets every wanted docid."""
    from xqg.ingest.shards import shard_of, split_by_shard

    out: dict[int, pa.Array] = {}
    routed: dict[int, dict[int, pa.Array]] = {}
    markers = run.markers(INGEST)  # one listing (and the bulk cache), not a read per shard
    for shard in shards:
        num = (markers.get(shard_name(shard), {}).get("inputs") or {}).get("num_shards")
        if not isinstance(num, int) or shard >= num:
            out[shard] = wanted
            continue
        if num not in routed:
            parts = split_by_shard(pa.table({"docid": wanted}), shard_of(wanted, num))
            routed[num] = {s: t["docid"].combine_chunks() for s, t in parts}
        out[shard] = routed[num].get(shard, wanted.slice(0, 0))
    return out


def shard_texts(run_uri: str, shard: int, want: pa.Array, include_title: bool) -> pa.Table:
    """(docid, text) of the wanted passages of one corpus shard, read with a filter (a worker's task)."""
    run = RunDir(run_uri)
    table = run.read_dir(corpus_dir(shard), columns=["docid", "title", "text"])
    table = table.filter(pc.is_in(table["docid"], value_set=want))
    text = pc.binary_join_element_wise(table["title"], table["text"], " ") if include_title else table["text"]
    return pa.table({"docid": table["docid"], "text": text})


def passage_texts(run: RunDir, docids: pa.Array, include_title: bool) -> dict[str, str]:
    """Texts of the given passages only. With Ray up, each corpus shard that can hold one is read by a task on a
    worker, which sends back only the wanted passages: the driver holds what the queries retrieved (queries x
    depth at most), never a corpus shard. Without Ray, shard by shard here (one shard in memory at a time)."""
    import ray

    wanted = pc.unique(docids)
    out: dict[str, str] = {}
    # Each shard is filtered by its own docids: is_in builds a hash set of its value_set on every call, so the
    # whole wanted set per shard cost shards x wanted (3x the per-passage cost of evaluate at 1M passages).
    jobs = [(shard, want) for shard, want in wanted_by_shard(run, run.corpus_shards(), wanted).items() if len(want)]
    if not ray.is_initialized() or len(jobs) < 2:
        for shard, want in jobs:
            part = shard_texts(run.worker_uri, shard, want, include_title)
            out.update(zip(part["docid"].to_pylist(), part["text"].to_pylist()))
        return out
    from xqg.tasks import WaitLog

    remote = ray.remote(shard_texts).options(num_cpus=1, max_retries=-1)  # a lost spot node is not an error
    pending = [remote.remote(run.worker_uri, shard, want, include_title) for shard, want in jobs]
    waiting = WaitLog("evaluate: passage look-ups", num_gpus=0, memory=0)
    for ref in waiting.ready(pending):
        part = ray.get(ref)
        out.update(zip(part["docid"].to_pylist(), part["text"].to_pylist()))
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


def _run_file_stamp(run: RunDir, name: str) -> str:
    """The content digest of runs/<name>.tsv, or a clear error when it is missing."""
    rel = run_file(name)
    if not run.exists(rel):
        raise FileNotFoundError(f"no run file {run.path(rel)}: run jobs/search.py first")
    return path_stamp(run.fs, run.path(rel))


def comparable_runs(markers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """{label: passage encoder}; an error naming both when the runs' encoders or query sets differ."""
    def side(label: str, key: str) -> Any:
        return markers[label].get(key)

    labels = list(markers)
    for key, what in (("query_set", "query sets"), ("query_encoder", "query encoders"), ("encoder", "passage encoders")):
        values = {label: side(label, key) for label in labels}
        if len({str(v) for v in values.values()}) > 1:
            shown = ", ".join(f"{label} ({markers[label]['unit']}): {v}" for label, v in values.items())
            raise ValueError(
                f"cannot compare runs searched with different {what}: {shown}. Rerun the pipeline (it redoes what "
                "is stale) so that both runs come from the same encoder and query set"
            )
    return {label: str(side(label, "encoder")) for label in labels}


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
        f"{', '.join(fuse_languages(config))}",
        "index": config.index.type,
        "depth": config.search.depth,
    }


RUN_LABELS = ("baseline", "+xQG", "+xQG tuned")


def _run_names(config: Config, qset: str, default_set: str) -> dict[str, str]:
    """{"baseline": run name, "+xQG": run name[, "+xQG tuned": run name]} of the config's setting."""
    return {label: run_name(index, qset, default_set) for label, index in zip(RUN_LABELS, index_names(config))}


def _tuned(runner: StageRunner, config: Config) -> dict[str, Any] | None:
    """The setting's tuned fusion as its tune marker records it (choice, held-out scores), None without tuning."""
    if config.tune.query_set is None:
        return None
    m = runner.upstream(TUNE, tune_unit(config))
    return {"query_set": config.tune.query_set, "choice": m["choice"], "held-out scores": m["choice_scores"],
            "held-out baseline": m["baseline_scores"]}


def _lead_labels(config: Config, tuned: dict[str, Any] | None) -> dict[str, str]:
    """The lead table's run names: the paper's and the tuned fusion with their alpha and reduction."""
    labels = {"baseline": "baseline", "+xQG": f"+xQG paper ({config.fuse.reduce}, alpha {config.fuse.alpha:g})"}
    if tuned:
        c = tuned["choice"]
        labels["+xQG tuned"] = f"+xQG tuned ({c['reduce']}, alpha {float(c['alpha']):g})"
    return labels


def run_evaluate(config: Config) -> StageSummary:
    """Score baseline and +xQG runs with R@kt (and IR metrics when qrels exist); write reports/<fuse name>.*.

    With config.settings (e.g. zero-shot) the report also scores each setting's baseline and +xQG runs, each
    +xQG against its own setting's baseline.
    """
    run = RunDir(config.run_dir)
    qset = query_set_name(config)
    default_set = default_query_set(config)
    names = _run_names(config, qset, default_set)
    others = {} if config.setting is not None else {
        s.label or s.name: _run_names(config.for_setting(s.name), qset, default_set) for s in config.settings
    }
    all_names = [*names.values(), *(n for side in others.values() for n in side.values())]
    rname = report_name(config)
    runner = StageRunner(run, EVALUATE, keep_stale=config.keep_stale,
                         outputs=lambda u: [posixpath.join("reports", f"{u}.{ext}") for ext in ("md", "json", "png")]
                         + [xor_file(name) for name in all_names])
    searched = {label: runner.upstream(SEARCH, name) for label, name in names.items()}
    encoders = comparable_runs(searched)
    other_searched = {
        setting: {label: runner.upstream(SEARCH, name) for label, name in side.items()} for setting, side in others.items()
    }
    other_encoders = {setting: comparable_runs(markers) for setting, markers in other_searched.items()}
    tuned = {config.evaluate.main_label: _tuned(runner, config), **(
        {} if config.setting is not None else
        {s.label or s.name: _tuned(runner, config.for_setting(s.name)) for s in config.settings})}
    ev = config.evaluate
    inputs: dict[str, Any] = {
        # The run files' bytes too: a run file written by hand (or by another tool) is scored again.
        "runs": {label: [marker_fingerprint(m), _run_file_stamp(run, names[label])] for label, m in searched.items()},
        "queries": runner.upstream_fingerprint(INGEST, query_set_unit(qset)),
        "kt": ev.kt, "ir_ks": ev.ir_ks, "include_title": ev.include_title, "permutations": ev.permutations,
        "seed": ev.seed, "main_label": ev.main_label,
        "tuned": tuned,  # the choices are in the runs' fingerprints too; here for the report's labels
        "exports": [XOR_EXT],  # each run's predictions in XOR-TyDi's official format, runs/<run>.xor.json
        # the generated queries the report samples and measures (their entity share)
        # of the run's languages only: generating another language must not redo the report
        "generated": fingerprint({u: marker_fingerprint(m) for u, m in runner.markers(GENERATE).items()
                                  if u.split("/", 1)[0] in {f"lang={lang}" for lang in config.languages}}),
    }
    if others:
        inputs["settings"] = {
            setting: {label: [marker_fingerprint(m), _run_file_stamp(run, others[setting][label])]
                      for label, m in markers.items()}
            for setting, markers in other_searched.items()
        }
    unit = Unit(rname, inputs)
    plan = runner.plan([unit])
    if not plan.todo:
        marker = runner.markers()[rname]
        runner.summary.rows_in = runner.summary.rows_out = int(marker["rows_in"])
        return runner.close(f"reports/{rname}.md is up to date\n\n{marker['table']}")
    run.write_config(config, EVALUATE)

    def evaluate(unit: Unit) -> dict[str, Any]:
        queries = run.read_dir(query_set_dir(qset), columns=["qid", "lang", "answers", "docids"])
        questions = [
            {"id": q, "lang": lang, "answers": answers}
            for q, lang, answers in zip(
                queries["qid"].to_pylist(), queries["lang"].to_pylist(), queries["answers"].to_pylist()
            )
        ]
        every = {None: names, **others}
        tables = {(side, label): read_run(run, name) for side, labels in every.items() for label, name in labels.items()}
        texts = passage_texts(
            run, pa.concat_arrays([t["docid"].combine_chunks() for t in tables.values()]), ev.include_title
        )
        cache = TokenCache()  # the runs retrieve many of the same passages
        qrels = {q: {d: 1 for d in ds} for q, ds in zip(queries["qid"].to_pylist(), queries["docids"].to_pylist()) if ds}
        reports = {}
        exported: dict[str, str] = {}
        for side, labels in every.items():
            results = {}
            for label, name in labels.items():
                ranked = _ranked_lists(tables[side, label])
                predictions = {qid: [texts.get(d, "") for d in docids] for qid, docids in ranked.items()}
                results[label] = recall_at_kt(questions, predictions, ks=tuple(ev.kt), cache=cache)
                exported[label if side is None else f"{side} {label}"] = write_xor_predictions(run, name, xor_predictions(questions, ranked, texts))
            ir = None
            if qrels:
                ir = {label: ir_metrics(qrels, _run_scores(tables[side, label]), ks=tuple(ev.ir_ks)) for label in labels}
            reports[side] = make_results(results, ir=ir, n_permutations=ev.permutations, seed=ev.seed)
        report = reports.pop(None)
        results = report["runs"]
        about = {**_config_summary(config), **{f"passage encoder ({label})": fp for label, fp in encoders.items()},
                 "query encoder": str(searched["baseline"].get("query_encoder"))}
        for setting, enc in other_encoders.items():
            about[f"passage encoder ({setting})"] = enc["baseline"]
        quality = generated_quality(run, config.languages) if runner.markers(GENERATE) else None
        every_setting = {ev.main_label: report, **reports}
        labels = {}
        for setting in every_setting:
            cfg = config if setting == ev.main_label else config.for_setting(
                next(s.name for s in config.settings if (s.label or s.name) == setting))
            labels[setting] = _lead_labels(cfg, tuned.get(setting))
        lead = format_lead_table(every_setting, labels)
        paths = write_report(run.path("reports"), rname, report, about, settings=reports, generated=quality,
                             lead=lead, tuned={k: v for k, v in tuned.items() if v})
        table_text = "\n\n".join(
            [lead, format_table(report), *(f"{setting}:\n{format_table(r)}" for setting, r in reports.items())]
        )
        runner.summary.extra.update({
            "questions counted": sum(results["baseline"].counts.values()),
            "questions skipped (yes/no or no answer)": results["baseline"].n_skipped,
            "report": paths["md"],
            **{f"official predictions ({label})": path for label, path in exported.items()},
        })
        return {"rows_in": len(questions), "rows_out": len(questions), "rejected": 0, "table": table_text, "files": paths}

    runner.run_local(plan.todo, evaluate)
    marker = runner.markers().get(rname)
    return runner.close(marker["table"] if marker else "")


def _run_scores(table: pa.Table) -> dict[str, dict[str, float]]:
    """qid -> {docid: score}, the form ir_metrics takes."""
    out: dict[str, dict[str, float]] = {}
    for q, d, score in zip(table["qid"].to_pylist(), table["docid"].to_pylist(), table["score"].to_pylist()):
        out.setdefault(q, {})[d] = score
    return out
