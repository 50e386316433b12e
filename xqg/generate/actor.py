"""The Ray Data actor: loads a generator once, then turns (lang, shard) units into Parquet + rejects."""

from __future__ import annotations

import os
import posixpath
import time
from collections import defaultdict
from typing import Any

import numpy as np

from xqg.generate.backends import SamplingSettings, backend_class
from xqg.generate.unit import generate_unit
from xqg.layout import GENERATE, PART, corpus_dir, generated_dir, generated_unit
from xqg.rundir import RunDir
from xqg.units import actor_device_or_refusal, failed_manifest, refuse_unit, start_or_refusal, where

STAGE = GENERATE
PROGRESS_EVERY_S = 30.0  # a unit (a shard of a large corpus) can take an hour: say how far it got


class GenerateActor:
    """Callable class for map_batches: __init__ loads the model, __call__ runs each unit of the batch."""

    def __init__(
        self,
        run_uri: str,
        model_path: str,
        backend: str,
        sampling: dict[str, Any],
        template: str,
        seed: int,
        batch_size: int,
        use_gpu: bool,
        compute_type: str = "auto",
        trust_remote_code: bool = False,
        **prepared: Any,
    ) -> None:
        """prepared: what the backend's prepare hook returned on the driver (e.g. ct2_path)."""
        from xqg.models.resolve import localize

        self.run = RunDir(run_uri)
        cls = backend_class(backend)
        # Ray sets OMP_NUM_THREADS to the CPUs it gave this actor; use exactly those for the math libraries.
        threads = int(os.environ.get("OMP_NUM_THREADS") or 0) or None
        self.template, self.seed, self.batch_size = template, seed, batch_size
        self.where = where()
        self.device, self.unusable = actor_device_or_refusal(use_gpu)  # cuda only in an actor given a GPU
        if self.unusable is not None:
            return
        # A model that does not load is retried, then costs this actor's units (each fails with the reason), not
        # the stage: an exception escaping __init__ would end the whole Ray Data pipeline.
        def load() -> Any:
            # "run:" refs (a non-local run) become this node's local copies before anything loads them.
            local = cls.localize_kwargs(prepared, self.run)
            return cls(
                localize(model_path, self.run), SamplingSettings(**sampling), device=self.device,
                compute_type=compute_type, trust_remote_code=trust_remote_code, threads=threads, **local,
            )

        self.backend, self.unusable = start_or_refusal(STAGE, load)

    def process(self, lang: str, shard: int) -> dict[str, Any]:
        """Generate one unit, replacing any partial output of an earlier try; return its manifest."""
        if self.unusable is not None:
            refuse_unit(self.unusable)
        unit = generated_unit(lang, shard)
        # Which node works on which unit, in the driver's log (Ray forwards it): a lost node's units can be named.
        print(f"xqg: generate {unit} started on node {self.where['node']} by actor {self.where['actor']}", flush=True)
        out_dir = generated_dir(lang, shard)
        self.run.remove(out_dir)
        passages = self.run.read_dir(corpus_dir(shard), columns=["docid", "title", "text"])
        res = generate_unit(
            self.backend, passages, lang=lang, shard=shard, template=self.template, seed=self.seed,
            batch_size=self.batch_size, progress=self._progress_printer(unit),
        )
        self.run.write_table(posixpath.join(out_dir, PART), res.table)
        rejected = self.run.write_rejects(STAGE, unit, res.rejects)
        return {
            "unit": unit, "lang": lang, "shard": shard, "rows_in": res.rows_in, "rows_out": res.table.num_rows,
            "rejected": rejected, "queries": res.table.num_rows * self.backend.sampling.num_queries,
            # counted back from the written file's footer here, on the worker: the driver checks it against rows_out
            # without a listing and a read per unit of its own
            "written": self.run.count_rows(out_dir),
            "seconds": res.seconds, "batches_failed": res.batches_failed, **self.where, "device": self.device,
            "error": "",
        }

    def _template(self, lang: str, shard: int) -> dict[str, Any]:
        """The columns of a manifest (a failed unit's are zero)."""
        return {
            "unit": "", "lang": lang, "shard": shard, "rows_in": 0, "rows_out": 0, "rejected": 0, "queries": 0, "written": 0,
            "seconds": 0.0, "batches_failed": 0, **self.where, "device": self.device, "error": "",
        }

    def _progress_printer(self, unit: str):
        """A progress callback that prints (Ray forwards actor output to the driver) at most every 30 s."""
        start = last = time.monotonic()
        n = self.backend.sampling.num_queries

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S and done < total:
                print(f"generate {unit}: {done:,}/{total:,} passages, {done * n / (now - start):,.1f} queries/s", flush=True)
                last = now

        return progress

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run every unit in the batch (run_units sends one) and return their manifests as columns."""
        cols: dict[str, list[Any]] = defaultdict(list)
        for lang, shard in zip(batch["lang"], batch["shard"]):
            try:
                manifest = self.process(str(lang), int(shard))
            except Exception as e:  # noqa: BLE001 - a bad unit (a corrupt shard) fails alone; the driver names it
                manifest = failed_manifest(generated_unit(str(lang), int(shard)), e, self._template(str(lang), int(shard)))
            for k, v in manifest.items():
                cols[k].append(v)
        return {k: np.asarray(v) for k, v in cols.items()}
