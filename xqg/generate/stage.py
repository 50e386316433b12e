"""The generate stage: n sampled queries per (passage, language), one Parquet file per (language, shard); with
--encode, each unit's queries go straight on into the encode stage's actors."""

from __future__ import annotations

import logging
import posixpath
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from xqg.config import Config
from xqg.generate.actor import GenerateActor
from xqg.generate.backends import backend_class, prepare_backend
from xqg.generate.backends.base import SamplingSettings
from xqg.generate.prompts import QUERY_ORDER, check_template
from xqg.languages import normalise_code
from xqg.layout import GENERATE, GENERATED, INGEST, corpus_unit, generated_unit
from xqg.models.texts import corpus_texts
from xqg.rundir import RunDir
from xqg.runner import Plan, StageRunner, Unit, marker_fingerprint
from xqg.summary import StageSummary

if TYPE_CHECKING:
    from xqg.units import Pool

log = logging.getLogger(__name__)


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


def select_shards(run: RunDir, shards: set[int] | None) -> list[int]:
    """Corpus shards to work on (all ingested ones by default); unknown shard numbers are an error."""
    available = run.corpus_shards()
    if shards is None:
        return available
    missing = sorted(set(shards) - set(available))
    if missing:
        raise ValueError(f"--shards {missing} are not in the ingested corpus (it has shards {available[0]}-{available[-1]})")
    return sorted(set(shards))


def plan_units(runner: StageRunner, config: Config, model_fp: str, langs: list[str], shards: list[int]) -> list[Unit]:
    """One unit per (language, corpus shard), made from the corpus shard, the model and the sampling settings."""
    gen = config.generate
    settings = {
        "model": model_fp, **backend_class(gen.backend).output_params(gen), "sampling": asdict(SamplingSettings.from_config(gen)),
        "template": gen.template, "seed": gen.seed, "order": QUERY_ORDER,
    }
    units = []
    for shard in shards:
        corpus = runner.upstream(INGEST, corpus_unit(shard))
        for lang in langs:
            units.append(Unit(
                generated_unit(lang, shard), {"corpus": marker_fingerprint(corpus), "lang": lang, **settings},
                payload={"lang": lang, "shard": shard}, expected=int(corpus["rows_out"]),
            ))
    return units


@dataclass
class GenerateJob:
    """A planned generate job: its runner and plan, and (when there is work) its pool, actor kwargs and tallies."""

    runner: StageRunner
    plan: Plan
    pool: Pool | None = None
    ctor: dict[str, Any] = field(default_factory=dict)
    model_path: str = ""
    per_actor: dict[str, list[float]] = field(default_factory=lambda: defaultdict(lambda: [0.0, 0.0]))

    @property
    def desc(self) -> str:
        return f"generate ({self.ctor.get('backend', '')})"

    def on_result(self, unit: Unit, m: dict[str, Any]) -> dict[str, Any]:
        """Tally a finished unit's queries per actor; what the driver adds to its marker."""
        self.per_actor[str(m["actor"])][0] += int(m["queries"])
        self.per_actor[str(m["actor"])][1] += float(m["seconds"])
        return {"model": self.model_path}  # "written": counted by the actor from what it wrote

    def close(self, seconds: float) -> StageSummary:
        """The summary, with query throughput overall and per actor."""
        queries = sum(q for q, _ in self.per_actor.values())
        rates = [q / s for q, s in self.per_actor.values() if s > 0]
        self.runner.summary.extra.update({
            "queries generated": queries,
            "queries/s": round(queries / seconds, 2) if seconds else 0.0,
            "actors": len(self.per_actor),
            "queries/s per actor": round(sum(rates) / len(rates), 2) if rates else 0.0,
        })
        return self.runner.close()


def start_generate(config: Config, languages: list[str] | None = None, shards: set[int] | None = None) -> GenerateJob:
    """Plan the generate units; when some are to do, write the stage config and set up the pool and the actors' kwargs."""
    from xqg.models.fingerprint import model_fingerprint
    from xqg.units import make_pool

    gen = config.generate
    check_template(gen.template)
    run = RunDir(config.run_dir)
    langs = list(dict.fromkeys(normalise_code(c) for c in (languages or config.languages)))
    runner = StageRunner(run, GENERATE, keep_stale=config.keep_stale, outputs=lambda u: [posixpath.join("generated", u)])
    model_path = generator_model(config, run)
    plan = runner.plan(plan_units(runner, config, model_fingerprint(model_path, run), langs, select_shards(run, shards)))
    runner.summary.extra.update({"backend": gen.backend, "languages": ",".join(langs), "queries per passage": gen.num_queries})
    job = GenerateJob(runner, plan, model_path=model_path)
    if not plan.todo:
        return job
    run.write_config(config.model_copy(update={"languages": langs}), GENERATE)
    job.pool = make_pool(gen.use_gpu, gen, len(plan.todo), GENERATE)
    use_gpu = job.pool.use_gpu
    extra = prepare_backend(config.generate, run, model_path, use_gpu)
    log.info("generate: %d units to do (%d complete, %d stale), a pool of %s, backend %s, model %s",
             len(plan.todo), len(plan.done), len(plan.stale), job.pool.describe(), gen.backend, model_path)
    job.ctor = dict(
        run_uri=run.worker_uri, model_path=model_path, backend=gen.backend,
        sampling=asdict(SamplingSettings.from_config(gen)), template=gen.template, seed=gen.seed,
        batch_size=gen.batch_size, use_gpu=use_gpu, compute_type=gen.compute_type,
        trust_remote_code=gen.trust_remote_code, **extra,
    )
    return job


def run_generate(config: Config, languages: list[str] | None = None, shards: set[int] | None = None) -> StageSummary:
    """Generate generate.num_queries queries per passage for each language; redo units whose inputs changed."""
    job = start_generate(config, languages, shards)
    if not job.plan.todo:
        return job.runner.close()
    assert job.pool is not None
    seconds = job.runner.run_actors(
        job.plan.todo, GenerateActor, job.ctor, pool=job.pool, on_result=job.on_result, desc=job.desc,
        rate_key="queries", rate_unit="queries",
    )
    return job.close(seconds)


def run_generate_encode(
    config: Config, languages: list[str] | None = None, shards: set[int] | None = None
) -> list[StageSummary]:
    """generate --encode: generate the pending units and encode each as it comes; then encode generated units
    still unencoded (from an earlier job, or whose encoder changed) as the encode stage does.

    One Ray Data pipeline, two actor pools (StageRunner.run_actors with then=): a (language, shard) unit is encoded
    (its queries summed per passage) as soon as it is generated, while the next ones are still being generated.
    Each stage's runner keeps its own markers and lease: a generate unit is marked as soon as its generate actor
    returns (its text is written, as by plain generate), while it is still being encoded, so a killed job loses only
    the units being generated; its encode unit is marked when the encoder returns. A unit whose generation fails
    leaves both unmarked.
    """
    from xqg.encode.stage import run_encode, streamed_encode

    job = start_generate(config, languages, shards)
    if not job.plan.todo:
        summaries = [job.runner.close()]
    else:
        encode = streamed_encode(config, job.runner.run, job.plan.todo)
        log.info("generate --encode: %d unit(s) to generate, %d to encode as they come", len(job.plan.todo),
                 len(encode.feed.units))
        assert job.pool is not None
        seconds = job.runner.run_actors(
            job.plan.todo, GenerateActor, job.ctor, pool=job.pool, on_result=job.on_result, desc=job.desc + " -> encode",
            rate_key="queries", rate_unit="queries", then=encode.feed,
        )
        summaries = [job.close(seconds), encode.close()]
    langs = str(job.runner.summary.extra["languages"]).split(",")  # this job's languages, as generate chose them
    rest = run_encode(config, GENERATED, langs, shards)
    if rest.units_done or rest.units_failed or rest.units_stale or not summaries[1:]:
        summaries.append(rest)
    return summaries
