"""The generate stage: n sampled queries per (passage, language), one Parquet file per (language, shard)."""

from __future__ import annotations

import logging
import posixpath
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xqg.config import Config
from xqg.generate.actor import STAGE, GenerateActor, unit_name
from xqg.generate.backends.base import SamplingSettings, model_is_encoder_decoder
from xqg.generate.prompts import check_template
from xqg.languages import normalise_code
from xqg.rundir import RunDir
from xqg.summary import StageSummary

log = logging.getLogger(__name__)


def corpus_texts(run: RunDir) -> Iterator[str]:
    """Titles and texts of the ingested corpus (tokenizer text for a scratch generator)."""
    for table in run.iter_corpus(columns=["title", "text"]):
        for col in ("title", "text"):
            yield from (t for t in table.column(col).to_pylist() if t)


def generator_model(config: Config, run: RunDir) -> str:
    """generate.model resolved (hub name, folder or scratch spec), else the run's trained <run>/models/qg."""
    from xqg.models.resolve import resolve_model, run_ref

    if config.generate.model is not None:
        return resolve_model(config.generate.model, run, lambda: corpus_texts(run))
    if not run.exists("models/qg/config.json"):
        raise FileNotFoundError(
            f"no trained query generator at {run.path('models', 'qg')}: run jobs/train_qg.py first, or set "
            "generate.model (a hub name, a local Hugging Face folder or a scratch spec)"
        )
    # Actors localize a "run:" ref themselves (each node gets its own copy of a remote run's model).
    return run.path("models", "qg") if run.is_local else run_ref("models/qg")


def _check_vllm(model_path: str, config: Config, use_gpu: bool, run: RunDir) -> None:
    """Fail on the driver, readably, when vLLM cannot run: no GPUs, an encoder-decoder model, no vllm."""
    import ray

    from xqg.models.resolve import localize

    if model_is_encoder_decoder(localize(model_path, run), config.generate.trust_remote_code):
        raise ValueError(
            f"generate.backend 'vllm' cannot run the encoder-decoder model at {model_path}: vLLM has no T5/mT5 "
            "support. Use generate.backend 'ctranslate2' (fast, CPU and GPU) or 'hf'."
        )
    if not use_gpu:
        raise ValueError("generate.backend 'vllm' needs GPUs and this Ray cluster has none; use 'ctranslate2' or 'hf'")

    @ray.remote(num_gpus=1)
    def probe() -> bool:
        from xqg.generate.backends.vllm import vllm_installed

        return vllm_installed()

    if not ray.get(probe.remote()):
        from xqg.generate.backends.vllm import INSTALL_HINT

        raise ValueError(INSTALL_HINT)


def publish_ct2(run: RunDir, model_path: str, compute_type: str, trust_remote_code: bool) -> str:
    """A non-local run: convert in a local temp folder, publish to models/ct2/<name>; return its "run:" ref."""
    import tempfile

    from xqg.generate.convert import SOURCE_FILE, ct2_dir_for, ensure_ct2_model, source_fingerprint
    from xqg.models.resolve import localize, run_ref

    source = localize(model_path, run)
    rel = posixpath.join("models", "ct2", ct2_dir_for(model_path, "", compute_type).name)
    marker = posixpath.join(rel, SOURCE_FILE)
    # Reuse a published conversion of the same source files (same node cache: same paths and mtimes).
    if run.exists(rel, "model.bin") and run.exists(marker) and run.read_json(marker) == source_fingerprint(source):
        return run_ref(rel)
    with tempfile.TemporaryDirectory(prefix="xqg-ct2-") as tmp:
        out = ensure_ct2_model(source, Path(tmp) / "ct2", compute_type, trust_remote_code)
        run.publish_dir(out, rel)
    return run_ref(rel)


def backend_kwargs(config: Config, run: RunDir, model_path: str, use_gpu: bool) -> dict[str, Any]:
    """Driver-side preparation of the backend (conversion, checks) -> extra actor constructor kwargs."""
    gen = config.generate
    if gen.backend == "ctranslate2":
        from xqg.generate.convert import ct2_dir_for, ensure_ct2_model

        # Convert once here, before any actor starts; the lock guards against a concurrent job doing the same.
        if run.is_local:
            target = ct2_dir_for(model_path, run.path("models", "ct2"), gen.compute_type)
            return {"ct2_path": ensure_ct2_model(model_path, target, gen.compute_type, gen.trust_remote_code)}
        return {"ct2_path": publish_ct2(run, model_path, gen.compute_type, gen.trust_remote_code)}
    if gen.backend == "vllm":
        _check_vllm(model_path, config, use_gpu, run)
    return {}


def select_shards(run: RunDir, shards: set[int] | None) -> list[int]:
    """Corpus shards to work on (all ingested ones by default); unknown shard numbers are an error."""
    available = run.corpus_shards()
    if shards is None:
        return available
    missing = sorted(set(shards) - set(available))
    if missing:
        raise ValueError(f"--shards {missing} are not in the ingested corpus (it has shards {available[0]}-{available[-1]})")
    return sorted(set(shards))


def _warn_changed_settings(run: RunDir, skipped: list[str], config: Config) -> None:
    """Complete units are kept as they are; say so when they were made with other sampling settings."""
    gen = config.generate
    for unit in skipped:
        m = run.read_marker(STAGE, unit)
        if (m.get("num_queries"), m.get("seed"), m.get("backend")) != (gen.num_queries, gen.seed, gen.backend):
            log.warning(
                "%s is complete with num_queries=%s seed=%s backend=%s and is kept; remove its marker "
                "(_done/generate/...) to regenerate with the current settings", unit, m.get("num_queries"),
                m.get("seed"), m.get("backend"),
            )
            return


def run_generate(config: Config, languages: list[str] | None = None, shards: set[int] | None = None) -> StageSummary:
    """Generate generate.num_queries queries per passage for each language; skip complete (lang, shard) units."""
    from xqg.units import cluster_gpus, pool_size, run_units

    start = time.perf_counter()
    gen = config.generate
    check_template(gen.template)
    run = RunDir(config.run_dir)
    langs = list(dict.fromkeys(normalise_code(c) for c in (languages or config.languages)))
    todo_shards = select_shards(run, shards)
    units = [{"unit": unit_name(lang, s), "lang": lang, "shard": s} for lang in langs for s in todo_shards]
    done = run.done_units(STAGE)
    pending = [u for u in units if u["unit"] not in done]
    summary = StageSummary(STAGE, units_skipped=len(units) - len(pending))
    summary.extra.update({"backend": gen.backend, "languages": ",".join(langs), "queries per passage": gen.num_queries})
    _warn_changed_settings(run, [u["unit"] for u in units if u["unit"] in done], config)
    run.write_config(config.model_copy(update={"languages": langs}), STAGE)
    if not pending:
        summary.message = "every unit is already complete"
        summary.seconds = time.perf_counter() - start
        return summary

    model_path = generator_model(config, run)
    use_gpu = cluster_gpus() > 0
    extra = backend_kwargs(config, run, model_path, use_gpu)
    concurrency = pool_size(gen.concurrency, use_gpu, len(pending))
    log.info("generate: %d units (%d complete), %d %s actor(s), backend %s, model %s",
             len(pending), summary.units_skipped, concurrency, "GPU" if use_gpu else "CPU", gen.backend, model_path)
    sampling = SamplingSettings.from_config(gen)
    ctor = dict(
        run_uri=config.run_dir, model_path=model_path, backend=gen.backend, sampling=asdict(sampling),
        template=gen.template, seed=gen.seed, batch_size=gen.batch_size, use_gpu=use_gpu,
        compute_type=gen.compute_type, trust_remote_code=gen.trust_remote_code, **extra,
    )
    per_actor: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    problems: list[str] = []

    def on_result(m: dict[str, Any]) -> None:
        unit, shard = str(m["unit"]), int(m["shard"])
        rows_in, rows_out, rejected = int(m["rows_in"]), int(m["rows_out"]), int(m["rejected"])
        expected = run.corpus_shard_rows(shard)
        written = run.count_rows(f"generated/{unit}")
        summary.rows_in += expected
        summary.rows_out += rows_out
        summary.rejected += rejected
        per_actor[str(m["actor"])][0] += int(m["queries"])
        per_actor[str(m["actor"])][1] += float(m["seconds"])
        if rows_in != expected or rows_out + rejected != expected or written != rows_out:
            problems.append(f"{unit}: corpus {expected}, read {rows_in}, written {written}, out {rows_out} + rejected {rejected}")
            return
        run.mark_done(
            STAGE, unit, rows_in=expected, rows_out=rows_out, rejected=rejected, queries=int(m["queries"]),
            seconds=round(float(m["seconds"]), 3), backend=gen.backend, model=model_path, num_queries=gen.num_queries,
            seed=gen.seed,
        )
        summary.units_done += 1

    run_units(
        pending, GenerateActor, ctor, concurrency=concurrency, num_gpus=1 if use_gpu else 0, on_result=on_result,
        desc=f"generate ({gen.backend})", rate_key="queries", rate_unit="queries",
    )
    summary.seconds = time.perf_counter() - start
    queries = summary.rows_out * gen.num_queries
    rates = [q / s for q, s in per_actor.values() if s > 0]
    summary.extra.update({
        "queries generated": queries,
        "queries/s": round(queries / summary.seconds, 2) if summary.seconds else 0.0,
        "actors": len(per_actor),
        "queries/s per actor": round(sum(rates) / len(rates), 2) if rates else 0.0,
    })
    if problems:
        summary.message = "units left without a marker (counts do not add up):\n  " + "\n  ".join(problems)
        log.error(summary.message)
    return summary
