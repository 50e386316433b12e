"""The encode stage: plan pending units, stream them through encoder actors, mark each complete unit."""

from __future__ import annotations

import logging
from typing import Any

from xqg.config import Config
from xqg.encode.layout import (
    PASSAGES,
    QUERIES,
    STAGE,
    generated_unit,
    generated_variant,
    passages_unit,
    queries_unit,
)
from xqg.encode.model import load_encoder_spec
from xqg.rundir import RunDir, parse_shard
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

GENERATED = "generated"
TARGETS = (PASSAGES, GENERATED, QUERIES)


def _unit(target: str, unit: str, expected: int | None, shard: int = -1, lang: str = "", name: str = "") -> dict:
    """One row of the unit dataset (every row has every column, so Ray Data sees one schema)."""
    return {"unit": unit, "target": target, "shard": shard, "lang": lang, "name": name, "expected": expected}


def plan_units(
    run: RunDir, config: Config, target: str, languages: list[str] | None = None, shards: set[int] | None = None
) -> list[dict[str, Any]]:
    """Every unit of the target whose input is complete, each with the row count its input marker promises."""
    if target == PASSAGES:
        return [
            _unit(PASSAGES, passages_unit(s), run.corpus_shard_rows(s), shard=s)
            for s in run.corpus_shards()
            if shards is None or s in shards
        ]
    if target == QUERIES:
        names = sorted(u[len("queries="):] for u in run.done_units("ingest") if u.startswith("queries="))
        if not names:
            raise FileNotFoundError(f"no ingested query sets in {run.uri}: run jobs/ingest.py first")
        return [_unit(QUERIES, queries_unit(n), _marker_rows(run, "ingest", f"queries={n}"), name=n) for n in names]
    if target == GENERATED:
        variant = generated_variant(config.encode.num_queries)
        generated = sorted(run.done_units("generate"))
        if not generated:
            raise FileNotFoundError(f"no generated queries in {run.uri}: run jobs/generate.py first")
        units = []
        for done in generated:  # only (lang, shard) units whose generate marker exists
            parts = done.split("/")
            if len(parts) != 2 or not parts[0].startswith("lang="):
                continue
            lang, shard = parts[0][len("lang="):], parse_shard(parts[1])
            if (languages is None or lang in languages) and (shards is None or shard in shards):
                units.append(_unit(GENERATED, generated_unit(variant, lang, shard),
                                   _marker_rows(run, "generate", done), shard=shard, lang=lang))
        return units
    raise ValueError(f"unknown encode target {target!r}; expected one of {TARGETS} or 'all'")


def _marker_rows(run: RunDir, stage: str, unit: str) -> int | None:
    """rows_out recorded by an upstream marker, when it recorded one."""
    value = run.read_marker(stage, unit).get("rows_out")
    return None if value is None else int(value)


def _plan_all(run: RunDir, config: Config, languages: list[str] | None, shards: set[int] | None) -> list[dict]:
    """Units of every target whose input exists (passages must exist)."""
    units = plan_units(run, config, PASSAGES, languages, shards)
    for target in (GENERATED, QUERIES):
        try:
            units += plan_units(run, config, target, languages, shards)
        except FileNotFoundError as e:
            log.info("encode %s skipped: %s", target, e)
    return units


def run_encode(
    config: Config, target: str, languages: list[str] | None = None, shards: set[int] | None = None
) -> StageSummary:
    """Encode passages, generated queries (summed per passage and language), query sets, or 'all' of them.

    All pending units go through one pool of encoder actors; each unit's output is written by its actor and
    marked complete by the driver once its rows add up, so a rerun redoes only unmarked units.
    """
    from xqg.encode.actor import EncodeActor
    from xqg.units import cluster_gpus, pool_size, run_units

    run = RunDir(config.run_dir)
    units = _plan_all(run, config, languages, shards) if target == "all" else plan_units(
        run, config, target, languages, shards
    )
    done = run.done_units(STAGE)
    pending = [u for u in units if u["unit"] not in done]
    summary = StageSummary(stage=f"encode {target}", units_skipped=len(units) - len(pending))
    if not pending:
        summary.message = "nothing to do: every unit is complete"
        return summary
    spec = load_encoder_spec(config, run)
    run.write_config(config, STAGE)
    use_gpu = cluster_gpus() > 0
    expected = {u["unit"]: u.pop("expected") for u in pending}
    per_target: dict[str, dict[str, int]] = {}
    failed: list[str] = []

    def on_result(row: dict[str, Any]) -> None:
        unit, kind = str(row["unit"]), str(row["target"])
        rows_in, rows_out, rejected = int(row["rows_in"]), int(row["rows_out"]), int(row["rejected"])
        want = expected.get(unit)
        # What the input marker promised is what the unit owes: a short read then shows as a mismatch.
        owed = want if want is not None else rows_in
        counts = per_target.setdefault(kind, {"rows in": 0, "rows out": 0, "rejected": 0, "texts encoded": 0})
        for key, value in (("rows in", owed), ("rows out", rows_out), ("rejected", rejected),
                           ("texts encoded", int(row["items"]))):
            counts[key] += value
        summary.rows_in += owed
        summary.rows_out += rows_out
        summary.rejected += rejected
        if rows_in != rows_out + rejected or owed != rows_in:
            failed.append(unit)
            log.error("unit %s: %d rows in (input marker: %s) != %d out + %d rejected; not marked",
                      unit, rows_in, want, rows_out, rejected)
            return
        info = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items() if k not in ("unit", "target")}
        model = spec.passage_model if kind == PASSAGES else spec.query_model
        run.mark_done(STAGE, unit, model=model, pooling=spec.pooling, **info)
        summary.units_done += 1

    kwargs = {
        "run_uri": config.run_dir, "spec": spec.to_dict(), "batch_size": config.encode.batch_size,
        "chunk_size": config.encode.chunk_size, "threads": config.encode.torch_threads,
        "num_queries": config.encode.num_queries,
        "preload": tuple(sorted({PASSAGES if u["target"] == PASSAGES else QUERIES for u in pending})),
    }
    summary.seconds = run_units(
        pending, EncodeActor, kwargs,
        concurrency=pool_size(config.encode.concurrency, use_gpu, len(pending)), num_gpus=1 if use_gpu else 0,
        on_result=on_result, desc=f"encode {target}", rate_key="items", rate_unit="texts",
    )
    texts = sum(c["texts encoded"] for c in per_target.values())
    summary.extra["texts encoded"] = texts
    if summary.seconds > 0:
        summary.extra["texts/s"] = texts / summary.seconds
    if len(per_target) > 1:
        for kind, counts in per_target.items():
            summary.extra[kind] = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    summary.extra["device"] = "gpu" if use_gpu else "cpu"
    if failed:
        summary.message = f"{len(failed)} unit(s) did not add up and were not marked: {failed[:5]}"
    return summary
