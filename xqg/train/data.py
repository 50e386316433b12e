"""Driver-side preparation of training data: read the sources once, write rejects, keep one Parquet file.

The prepared file (<run>/train/<name>_data/part-00000.parquet) is what every worker reads, so a resumed
training sees exactly the rows (and so the data order) of the interrupted one; a training with a held-out
evaluation set has it next to it (eval-00000.parquet), never among the training rows. A marker
_done/<stage>/data.json records the counts and a fingerprint of the settings that produced it; a rerun with
other settings while checkpoints exist is refused (the data position would be meaningless).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xqg.rundir import RunDir
from xqg.train.readers import Reject, TrainExample, read_training_file

DATA_FILE = "part-00000.parquet"
EVAL_FILE = "eval-00000.parquet"
HOLD_OUT_STREAM = 0x686F6C64  # "hold": the held-out split's random stream, never an epoch number


@dataclass
class PreparedData:
    """Counts of a prepared training set and where it is."""

    uri: str
    rows_in: int
    rows_out: int
    rejected: int
    extra: dict[str, Any]
    eval_uri: str | None = None  # the held-out evaluation pairs, when the training has them


def data_rel(name: str) -> str:
    """Folder of a training's prepared data inside the run."""
    return posixpath.join("train", f"{name}_data")


def load_prepared(
    run: RunDir, stage: str, name: str, fp: str, has_checkpoints: bool, unit: str = "data"
) -> PreparedData | None:
    """The prepared data of an earlier run when its settings match (marker ``unit``); None when it must be
    (re)built."""
    rel = posixpath.join(data_rel(name), DATA_FILE)
    eval_rel = posixpath.join(data_rel(name), EVAL_FILE)
    if not run.is_done(stage, unit) or not run.exists(rel):
        return None
    info = run.read_marker(stage, unit)
    if info.get("fingerprint") != fp:
        if has_checkpoints:
            raise ValueError(
                f"{stage}: the training data settings changed since the checkpoints in {run.path('train', name)} "
                f"were written; use a new run_dir, or remove {run.path('train', name)} to start over"
            )
        return None
    extra = info.get("extra", {})
    has_eval = int(extra.get("eval_pairs", 0)) > 0
    if has_eval and not run.exists(eval_rel):
        return None
    return PreparedData(
        run.path(rel), info["rows_in"], info["rows_out"], info["rejected"], extra,
        eval_uri=run.path(eval_rel) if has_eval else None,
    )


class ExampleWriter:
    """Streams rows into the one prepared Parquet file in bounded batches."""

    def __init__(self, run: RunDir, rel: str, schema: pa.Schema, batch_rows: int = 2048) -> None:
        run.makedirs(posixpath.dirname(rel))
        self.writer = pq.ParquetWriter(run.path(rel), schema, filesystem=run.fs, compression="zstd")
        self.schema, self.rows, self.batch_rows, self.count = schema, [], batch_rows, 0

    def add(self, row: dict[str, Any]) -> None:
        """Queue one row."""
        self.rows.append(row)
        if len(self.rows) >= self.batch_rows:
            self.flush()

    def flush(self) -> None:
        """Write queued rows."""
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.count += len(self.rows)
            self.rows = []

    def close(self) -> None:
        """Write the rest and close the file."""
        self.flush()
        self.writer.close()


def read_sources(
    run: RunDir,
    stage: str,
    sources: list[str],
    accept: Callable[[TrainExample], str | None],
    emit: Callable[[TrainExample], None],
    unit_prefix: str = "file",
) -> tuple[int, int, int]:
    """Read every source; emit accepted examples; write rejects per source (unit <unit_prefix>=NNNNN);
    (in, out, rejected).

    accept returns a reason to reject an otherwise well-formed example (e.g. a language not trained), or None.
    """
    rows_in = rows_out = rejected = 0
    for i, src in enumerate(sources):
        rejects: list[dict[str, str]] = []
        for item in read_training_file(src):
            rows_in += 1
            if isinstance(item, Reject):
                rejects.append(item.as_dict())
                continue
            reason = accept(item)
            if reason is not None:
                rejects.append({"key": item.query_id, "reason": reason, "raw": json.dumps(
                    {"query_id": item.query_id, "query": item.query, "lang": item.lang, "source": src},
                    ensure_ascii=False)})
                continue
            emit(item)
            rows_out += 1
        rejected += run.write_rejects(stage, f"{unit_prefix}={i:05d}", rejects)
    return rows_in, rows_out, rejected


def held_out_indices(n: int, eval_examples: int, eval_ratio: float, seed: int) -> np.ndarray:
    """Sorted indices of the pairs held out for evaluation: eval_examples of them (else round(eval_ratio * n)),
    drawn with default_rng([seed, HOLD_OUT_STREAM]) (a stream apart from the epoch orders [seed, epoch])."""
    k = eval_examples or (max(1, int(round(eval_ratio * n))) if eval_ratio > 0 else 0)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        raise ValueError(f"cannot hold out {k} of {n} pairs for evaluation and train on the rest")
    return np.sort(np.random.default_rng([seed, HOLD_OUT_STREAM]).choice(n, size=k, replace=False)).astype(np.int64)
