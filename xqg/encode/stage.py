"""The encode stage: plan units (each made from its input unit and its encoder), stream them through actors."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from xqg.config import Config
from xqg.encode.model import EncoderSpec, load_encoder_spec
from xqg.encode.vectors import storage_inputs
from xqg.layout import (
    ENCODE,
    GENERATE,
    GENERATED,
    INGEST,
    PASSAGES,
    QUERIES,
    corpus_unit,
    embeddings_dir,
    generated_sum_unit,
    generated_variant,
    parse_lang_shard,
    passages_unit,
    queries_unit,
)
from xqg.rundir import RunDir
from xqg.runner import Feed, StageRunner, Unit, fingerprint, marker_fingerprint
from xqg.summary import StageSummary

log = logging.getLogger(__name__)

TARGETS = (PASSAGES, GENERATED, QUERIES)


def encoder_fingerprints(spec: EncoderSpec, run: RunDir) -> dict[str, str]:
    """{passages: ..., queries: ...}: what each side's vectors are made with (model content, pooling, lengths)."""
    from xqg.models.fingerprint import model_fingerprint

    common = {"pooling": spec.pooling, "dtype": spec.dtype}
    return {
        PASSAGES: fingerprint({"model": model_fingerprint(spec.passage_model, run), "max_len": spec.p_max_len,
                               "passage_format": spec.passage_format, **common}),
        QUERIES: fingerprint({"model": model_fingerprint(spec.query_model, run), "max_len": spec.q_max_len, **common}),
    }


def _unit(
    runner: StageRunner, unit_name: str, target: str, upstream: tuple[str, str], inputs: dict[str, Any], **payload: Any
) -> Unit:
    """One encode unit: made from its upstream unit and the encoder of its side (+ target settings in inputs)."""
    marker = runner.upstream(*upstream)
    row = {"target": target, "shard": -1, "lang": "", "name": "", **payload}  # one schema for every Ray Data row
    inputs = {"input": marker_fingerprint(marker), **inputs}
    expected = marker.get("rows_out")
    return Unit(unit_name, inputs, payload=row, expected=None if expected is None else int(expected))


def plan_units(
    runner: StageRunner, encoders: dict[str, str], target: str, languages: list[str] | None = None,
    shards: set[int] | None = None, num_queries: int | None = None, setting: str | None = None,
    storage: str = "float32",
) -> list[Unit]:
    """Every unit of the target whose input unit is complete (named for the bi-encoder setting); passages and
    generated sums are made in the storage dtype (query embeddings are always float32)."""
    stored = storage_inputs(storage)
    if target == PASSAGES:
        return [
            _unit(runner, passages_unit(s, setting), PASSAGES, (INGEST, corpus_unit(s)),
                  {"encoder": encoders[PASSAGES], **stored}, shard=s)
            for s in runner.run.corpus_shards()
            if shards is None or s in shards
        ]
    if target == QUERIES:
        names = sorted(u[len("queries="):] for u in runner.markers(INGEST) if u.startswith("queries="))
        if not names:
            raise FileNotFoundError(f"no ingested query sets in {runner.run.uri}: run jobs/ingest.py first")
        return [
            _unit(runner, queries_unit(n, setting), QUERIES, (INGEST, f"queries={n}"), {"encoder": encoders[QUERIES]}, name=n) for n in names
        ]
    if target == GENERATED:
        variant = generated_variant(num_queries, setting)
        generated = sorted(runner.markers(GENERATE))
        if not generated:
            raise FileNotFoundError(f"no generated queries in {runner.run.uri}: run jobs/generate.py first")
        units = []
        for done in generated:  # only (lang, shard) units whose generate marker exists
            parsed = parse_lang_shard(done)
            if parsed is None:
                continue
            lang, shard = parsed
            if (languages is None or lang in languages) and (shards is None or shard in shards):
                units.append(_unit(runner, generated_sum_unit(variant, lang, shard), GENERATED, (GENERATE, done),
                                   {"encoder": encoders[QUERIES], "num_queries": num_queries, **stored},
                                   shard=shard, lang=lang))
        return units
    raise ValueError(f"unknown encode target {target!r}; expected one of {TARGETS} or 'all'")


def _plan_all(
    runner: StageRunner, encoders: dict[str, str], languages: list[str] | None, shards: set[int] | None,
    num_queries: int | None, setting: str | None = None, storage: str = "float32",
) -> list[Unit]:
    """Units of every target whose input exists (passages must exist)."""
    units = plan_units(runner, encoders, PASSAGES, languages, shards, setting=setting, storage=storage)
    for target in (GENERATED, QUERIES):
        try:
            units += plan_units(runner, encoders, target, languages, shards, num_queries, setting, storage)
        except FileNotFoundError as e:
            log.info("encode %s skipped: %s", target, e)
    return units


def run_encode(
    config: Config, target: str, languages: list[str] | None = None, shards: set[int] | None = None
) -> StageSummary:
    """Encode passages, generated queries (summed per passage and language), query sets, or 'all' of them.

    All units to do go through one pool of encoder actors; each unit's output is written by its actor and
    marked by the driver once its rows add up. A unit is redone when its input unit or its encoder changed.
    """
    from xqg.encode.actor import EncodeActor
    from xqg.units import make_pool

    run = RunDir(config.run_dir)
    runner = StageRunner(run, ENCODE, label=f"encode {target}", keep_stale=config.keep_stale,
                         outputs=lambda u: [embeddings_dir(u)])
    spec = load_encoder_spec(config, run)
    encoders = encoder_fingerprints(spec, run)
    k = config.encode.num_queries
    dtype = config.storage.dtype
    units = _plan_all(runner, encoders, languages, shards, k, config.setting, dtype) if target == "all" else plan_units(
        runner, encoders, target, languages, shards, k, config.setting, dtype
    )
    plan = runner.plan(units)
    summary = runner.summary
    if target == "all":  # what was done and what was complete, per target
        for kind in TARGETS:
            todo = sum(u.payload["target"] == kind for u in plan.todo)
            complete = sum(u.payload["target"] == kind for u in plan.done)
            summary.extra[f"{kind} units"] = {"to do": todo, "complete": complete}
    if not plan.todo:
        return runner.close()
    run.write_config(config, ENCODE)
    pool = make_pool(config.encode.use_gpu, config.encode, len(plan.todo), ENCODE)
    per_target: dict[str, dict[str, int]] = {}

    def on_result(unit: Unit, row: dict[str, Any]) -> dict[str, Any]:
        kind = unit.payload["target"]
        owed = unit.expected if unit.expected is not None else int(row["rows_in"])
        counts = per_target.setdefault(kind, {"rows in": 0, "rows out": 0, "rejected": 0, "texts encoded": 0})
        for key, value in (("rows in", owed), ("rows out", row["rows_out"]), ("rejected", row["rejected"]),
                           ("texts encoded", row["items"])):
            counts[key] += int(value)
        model = spec.passage_model if kind == PASSAGES else spec.query_model
        return {"model": model, "pooling": spec.pooling, "encoder": unit.inputs["encoder"]}

    kwargs = {
        "run_uri": run.worker_uri, "spec": spec.to_dict(), "batch_size": config.encode.batch_size,
        "chunk_size": config.encode.chunk_size, "threads": config.encode.torch_threads,
        "num_queries": config.encode.num_queries,
        "preload": tuple(sorted({PASSAGES if u.payload["target"] == PASSAGES else QUERIES for u in plan.todo})),
        "use_gpu": pool.use_gpu, "storage_dtype": dtype,
    }
    seconds = runner.run_actors(
        plan.todo, EncodeActor, kwargs, pool=pool, on_result=on_result, desc=f"encode {target}", rate_key="items", rate_unit="texts",
    )
    texts = sum(c["texts encoded"] for c in per_target.values())
    summary.extra["texts encoded"] = texts
    if seconds > 0:
        summary.extra["texts/s"] = texts / seconds
    if len(per_target) > 1:
        for kind, counts in per_target.items():
            summary.extra[kind] = ", ".join(f"{k} {v:,}" for k, v in counts.items())
    summary.extra["device"] = "gpu" if pool.use_gpu else "cpu"
    return runner.close()


@dataclass
class StreamedEncode:
    """The encode side of `generate --encode`: its runner and the feed that generation's actors go on into."""

    runner: StageRunner
    feed: Feed
    texts: int = 0

    def close(self) -> StageSummary:
        """The streamed encode's summary."""
        self.runner.summary.extra["texts encoded"] = self.texts
        return self.runner.close()


def streamed_encode(config: Config, run: RunDir, generate_units: list[Unit]) -> StreamedEncode:
    """Plan the encode units of generate units that are still to be generated, to be encoded as each comes.

    Each is made from its generate unit's planned fingerprint (the one that unit's marker will hold), as
    `encode --target generated` would plan it once the unit is marked; units whose embeddings are current are left
    out (their generate units pass through the encoder pool untouched).
    """
    from xqg.encode.actor import EncodeGeneratedAfter
    from xqg.units import make_pool

    runner = StageRunner(run, ENCODE, label="encode generated (streamed)", keep_stale=config.keep_stale,
                         outputs=lambda u: [embeddings_dir(u)])
    spec = load_encoder_spec(config, run)
    k = config.encode.num_queries
    encoder = encoder_fingerprints(spec, run)[QUERIES]
    units = {
        g.name: Unit(
            generated_sum_unit(generated_variant(k), g.payload["lang"], g.payload["shard"]),
            {"input": g.fingerprint, "encoder": encoder, "num_queries": k, **storage_inputs(config.storage.dtype)},
            payload={"target": GENERATED, "shard": g.payload["shard"], "lang": g.payload["lang"], "name": ""},
        )
        for g in generate_units
    }
    todo = {u.name for u in runner.plan(list(units.values())).todo}
    units = {g: u for g, u in units.items() if u.name in todo}
    pool = make_pool(config.encode.use_gpu, config.encode, max(1, len(units)), ENCODE)
    kwargs = {
        "run_uri": run.worker_uri, "spec": spec.to_dict(), "batch_size": config.encode.batch_size,
        "chunk_size": config.encode.chunk_size, "threads": config.encode.torch_threads, "num_queries": k,
        "use_gpu": pool.use_gpu, "storage_dtype": config.storage.dtype,
    }

    def on_result(unit: Unit, row: dict[str, Any]) -> dict[str, Any]:
        streamed.texts += int(row.get("items", 0))
        return {"model": spec.query_model, "pooling": spec.pooling, "encoder": encoder}

    streamed = StreamedEncode(runner, Feed(runner, units, EncodeGeneratedAfter, kwargs, pool, on_result))
    return streamed
