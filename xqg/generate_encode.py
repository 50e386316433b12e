"""generate --encode: corpus units stream through generation actors and straight into encoder actors.

One Ray Data pipeline, two actor pools: a (language, shard) unit is encoded (its queries summed per passage) as
soon as it is generated, while the next ones are still being generated. Both stages keep their own markers and
leases: the generate unit is marked as soon as its generate actor returns (its text is written, as by
jobs/generate.py), while it is still being encoded: its manifest reaches the driver straight from the actor (see
units.run_units' on_first), so a killed job loses only the units being generated. Its encode unit is marked when
the encoder returns, made from that generate unit's fingerprint as jobs/encode.py --target generated would make
it. A unit whose generation fails leaves both unmarked; units generated earlier but not yet encoded are encoded
afterwards.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from xqg.config import Config
from xqg.layout import ENCODE, GENERATED, QUERIES, embeddings_dir, generated_sum_unit, generated_variant
from xqg.runner import StageRunner, Unit, _plain
from xqg.summary import StageSummary

log = logging.getLogger(__name__)


def run_generate_encode(
    config: Config, languages: list[str] | None = None, shards: set[int] | None = None
) -> list[StageSummary]:
    """Generate the pending units and encode each as it comes; then encode generated units still unencoded."""
    from xqg.encode.actor import EncodeGeneratedAfter
    from xqg.encode.model import load_encoder_spec
    from xqg.encode.vectors import storage_inputs
    from xqg.encode.stage import encoder_fingerprints, run_encode
    from xqg.generate.actor import GenerateActor
    from xqg.generate.stage import start_generate
    from xqg.units import make_pool, run_units

    job = start_generate(config, languages, shards)
    gen_runner, run = job.runner, job.runner.run
    if not job.plan.todo:
        summaries = [gen_runner.close()]
    else:
        enc_runner = StageRunner(run, ENCODE, label="encode generated (streamed)", keep_stale=config.keep_stale,
                                 outputs=lambda u: [embeddings_dir(u)])
        spec = load_encoder_spec(config, run)
        k = config.encode.num_queries
        encoder = encoder_fingerprints(spec, run)[QUERIES]
        # Made from the generate unit's planned fingerprint: the one its marker will hold (as encode plans it).
        enc_units = {
            g.name: Unit(
                generated_sum_unit(generated_variant(k), g.payload["lang"], g.payload["shard"]),
                {"input": g.fingerprint, "encoder": encoder, "num_queries": k, **storage_inputs(config.storage.dtype)},
                payload={"target": GENERATED, "shard": g.payload["shard"], "lang": g.payload["lang"], "name": ""},
            )
            for g in job.plan.todo
        }
        enc_plan = enc_runner.plan(list(enc_units.values()))
        enc_todo = {u.name for u in enc_plan.todo}
        enc_units = {g: u for g, u in enc_units.items() if u.name in enc_todo}
        for unit in job.plan.todo:
            gen_runner.prepare(unit)
        for unit in enc_units.values():
            enc_runner.prepare(unit)
        assert job.pool is not None
        enc_pool = make_pool(config.encode.use_gpu, config.encode, max(1, len(enc_units)), ENCODE)
        enc_kwargs = {
            "run_uri": run.worker_uri, "spec": spec.to_dict(), "units": {g: u.name for g, u in enc_units.items()},
            "batch_size": config.encode.batch_size, "chunk_size": config.encode.chunk_size,
            "threads": config.encode.torch_threads, "num_queries": k, "use_gpu": enc_pool.use_gpu,
            "storage_dtype": config.storage.dtype,
        }
        by_name = {u.name: u for u in job.plan.todo}
        texts = 0
        # Each generate unit is taken (marked, or failed) once, by whichever comes first: its manifest straight from
        # the generate actor (a driver thread; the unit's queries are written, encoding not yet done), or the row
        # that comes out of the encoder pool. So a killed job loses only units still being generated.
        generated_units: dict[str, bool] = {}
        lock = threading.Lock()

        def take_generated(gen_row: dict[str, Any]) -> bool:
            gen_row = {key: _plain(v) for key, v in gen_row.items() if not key.startswith("enc_")}
            name = str(gen_row.pop("unit"))
            with lock:
                if name not in generated_units:
                    generated_units[name] = gen_runner.take(by_name[name], gen_row, job.on_result)
                return generated_units[name]

        def handle(row: dict[str, Any]) -> None:
            nonlocal texts
            row = {key: _plain(v) for key, v in row.items()}
            enc_row = {key[4:]: v for key, v in row.items() if key.startswith("enc_")}
            gen_unit = by_name[str(row["unit"])]
            generated = take_generated(row)
            enc_unit = enc_units.get(gen_unit.name)
            if enc_unit is None:
                return
            enc_row.pop("unit", None)
            if not generated:
                enc_runner.fail(enc_unit, f"generate {gen_unit.name} is not complete")
                return
            # An encode unit owes the rows its generate unit wrote (known only now).
            with lock:
                enc_unit.expected = int(gen_runner.markers()[gen_unit.name]["rows_out"])
            if enc_runner.take(enc_unit, enc_row, lambda u, r: {"model": spec.query_model, "pooling": spec.pooling,
                                                                 "encoder": encoder}):
                texts += int(enc_row.get("items", 0))

        rows = [{"unit": u.name, **u.payload} for u in job.plan.todo]
        log.info("generate --encode: %d unit(s) to generate, %d to encode as they come", len(rows), len(enc_units))
        seconds = run_units(rows, GenerateActor, job.ctor, pool=job.pool, on_result=handle, desc=job.desc + " -> encode",
                            rate_key="queries", rate_unit="queries", then=[(EncodeGeneratedAfter, enc_kwargs, enc_pool)],
                            on_first=take_generated)
        enc_runner.summary.extra["texts encoded"] = texts
        summaries = [job.close(seconds), enc_runner.close()]
    # Units generated by an earlier job (or whose encoder changed) but not encoded: the plain encode stage.
    langs = str(gen_runner.summary.extra["languages"]).split(",")  # this job's languages, as generate chose them
    rest = run_encode(config, GENERATED, langs, shards)
    if rest.units_done or rest.units_failed or rest.units_stale or not summaries[1:]:
        summaries.append(rest)
    return summaries
