"""The encode actor: loads one encoder once, then encodes whole units (a shard, a (lang, shard), a query set)."""

from __future__ import annotations

import json
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xqg.encode.model import EncoderSpec
from xqg.encode.vectors import vector_column
from xqg.models.encoder import Encoder, chunks, tokenize_passages, tokenize_queries
from xqg.layout import ENCODE, GENERATED, PART, PASSAGES, QUERIES, corpus_dir, embeddings_dir, generated_dir, query_set_dir
from xqg.rundir import RunDir
from xqg.units import NEXT_PREFIX, actor_device_or_refusal, failed_manifest, refuse_unit, start_or_refusal, where

STAGE = ENCODE


def _blank(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """True where a string is null or only whitespace."""
    stripped = pc.utf8_trim_whitespace(arr)
    return pc.fill_null(pc.equal(pc.utf8_length(stripped), 0), True).to_numpy(zero_copy_only=False)


def split_rejects(table: pa.Table, checks: list[tuple[np.ndarray, str]], key: str) -> tuple[pa.Table, list[dict]]:
    """(rows passing every check, reject rows {key, reason, raw}); the first failing check names the reason."""
    bad = np.zeros(table.num_rows, dtype=bool)
    rejects: list[dict] = []
    for mask, reason in checks:
        new = mask & ~bad
        if new.any():
            # Only rejected rows are turned into Python objects (rare by construction).
            for row in table.filter(pa.array(new)).to_pylist():
                rejects.append({"key": row.get(key), "reason": reason, "raw": json.dumps(row, ensure_ascii=False, default=str)})
        bad |= new
    return table.filter(pa.array(~bad)), rejects


class EncodeActor:
    """Ray Data actor: loads each encoder it needs once, __call__ encodes whole units and writes their output."""

    def __init__(
        self, run_uri: str, spec: dict[str, Any], batch_size: int = 128, chunk_size: int = 16_384,
        threads: int | None = None, num_queries: int | None = None, preload: tuple[str, ...] = (),
        use_gpu: bool = False, storage_dtype: str = "float32",
    ) -> None:
        self.run = RunDir(run_uri)
        self.storage_dtype = storage_dtype  # passages and sums; query embeddings stay float32
        self.spec = EncoderSpec(**spec)
        self.batch_size = batch_size
        self.chunk_size = chunk_size
        self.num_queries = num_queries
        self.threads = threads
        self._encoders: dict[str, Encoder] = {}
        self.where = where()
        self.device, self.unusable = actor_device_or_refusal(use_gpu)  # cuda only in an actor given a GPU
        if self.unusable is not None:
            return
        # Load up front, so a unit's seconds are its own work; a model that does not load is retried, then costs
        # this actor's units (each fails with the reason), not the stage.
        _, self.unusable = start_or_refusal(STAGE, lambda: [self.encoder(side) for side in preload])

    def encoder(self, side: str) -> Encoder:
        """The passage or query encoder, loaded on first use (once: a shared encoder serves both sides)."""
        path = self.spec.passage_model if side == PASSAGES else self.spec.query_model
        if path not in self._encoders:
            from xqg.models.resolve import localize

            self._encoders[path] = Encoder(
                localize(path, self.run), self.spec.pooling, self.spec.dtype, self.spec.trust_remote_code,
                device=self.device, threads=self.threads,
            )
        return self._encoders[path]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode each unit of the batch; return one manifest row per unit."""
        rows = []
        for i in range(len(batch["unit"])):
            unit, target = str(batch["unit"][i]), str(batch["target"][i])
            rows.append(self.unit(unit, target, int(batch["shard"][i]), str(batch["lang"][i]), str(batch["name"][i])))
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}

    def unit(self, unit: str, target: str, shard: int, lang: str, name: str) -> dict[str, Any]:
        """Encode one unit; its manifest (an exception fails this unit alone: "error" says why)."""
        start = time.perf_counter()
        head = {"unit": unit, "target": target, "seconds": 0.0, "max_n": 0}
        tail = {**self.where, "device": self.device, "error": ""}
        try:
            if self.unusable is not None:
                refuse_unit(self.unusable)
            if target == PASSAGES:
                info = self.encode_passages(unit, shard)
            elif target == QUERIES:
                info = self.encode_query_set(unit, name)
            else:
                info = self.encode_generated(unit, lang, shard)
        except Exception as e:  # noqa: BLE001 - one bad unit fails alone; the driver names it in the summary
            blank = {"rows_in": 0, "rows_out": 0, "rejected": 0, "items": 0, "dim": 0}
            return failed_manifest(unit, e, {**head, **blank, **tail})
        return {**head, "seconds": time.perf_counter() - start, **info, **tail}

    # ---- targets ---------------------------------------------------------------------
    def encode_passages(self, unit: str, shard: int) -> dict[str, int]:
        """corpus/shard=N -> embeddings/passages/shard=N (docid, embedding)."""
        table = self.run.read_dir(corpus_dir(shard), columns=["docid", "title", "text"])
        text_col = table["text"]
        content = text_col if self.spec.passage_format == "text" else pc.binary_join_element_wise(
            pc.fill_null(table["title"], ""), pc.fill_null(text_col, ""), " "
        )
        good, rejects = split_rejects(
            table, [(_blank(table["docid"]), "missing docid"), (_blank(content), "empty passage")], key="docid"
        )
        titles = pc.fill_null(good["title"], "").to_pylist()
        texts = pc.fill_null(good["text"], "").to_pylist()
        encoder = self.encoder(PASSAGES)
        emb = np.zeros((good.num_rows, encoder.dim), dtype=np.float32)
        for lo, hi in chunks(good.num_rows, self.chunk_size):
            feats = tokenize_passages(
                encoder.tokenizer, titles[lo:hi], texts[lo:hi], self.spec.p_max_len, self.spec.passage_format,
                padded=False,
            )
            emb[lo:hi] = encoder.encode(feats, self.batch_size)
        out = pa.table({"docid": good["docid"], "embedding": vector_column(emb, self.storage_dtype)})
        return self._write(unit, out, rejects, rows_in=table.num_rows, items=good.num_rows, dim=encoder.dim)

    def encode_generated(self, unit: str, lang: str, shard: int) -> dict[str, int]:
        """generated/lang=xx/shard=N -> one summed query embedding per passage (docid, lang, n, embedding_sum)."""
        table = self.run.read_dir(generated_dir(lang, shard), columns=["docid", "lang", "queries"])
        lang_ok = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(table["lang"]), lang), False).to_numpy(zero_copy_only=False)
        good, rejects = split_rejects(
            table, [(_blank(table["docid"]), "missing docid"), (~lang_ok, f"lang column is not {lang!r}")], key="docid"
        )
        queries = good["queries"].combine_chunks() if good.num_rows else pa.array([], pa.list_(pa.string()))
        queries = pc.fill_null(queries, pa.scalar([], queries.type))
        if self.num_queries is not None:
            queries = pc.list_slice(queries, 0, self.num_queries)
        flat = pc.list_flatten(queries)
        parents = pc.list_parent_indices(queries).to_numpy(zero_copy_only=False).astype(np.int64)
        keep = ~_blank(flat)  # empty generations carry no query: they neither count in n nor add a vector
        flat_texts = flat.filter(pa.array(keep)).to_pylist()
        parents = parents[keep]
        n = np.bincount(parents, minlength=good.num_rows).astype(np.int32)
        encoder = self.encoder(QUERIES)
        sums = np.zeros((good.num_rows, encoder.dim), dtype=np.float32)  # summed in float32, rounded once when stored
        for lo, hi in chunks(len(flat_texts), self.chunk_size):
            feats = tokenize_queries(encoder.tokenizer, flat_texts[lo:hi], self.spec.q_max_len, padded=False)
            owner = parents[lo:hi]
            for idx, emb in encoder.batches(feats, self.batch_size):
                np.add.at(sums, owner[idx], emb)  # several queries of one passage can share a batch
        out = pa.table({
            "docid": good["docid"],
            "lang": pa.array(np.full(good.num_rows, lang), pa.string()),
            "n": pa.array(n, pa.int32()),
            "embedding_sum": vector_column(sums, self.storage_dtype),
        })
        info = self._write(unit, out, rejects, rows_in=table.num_rows, items=len(flat_texts), dim=encoder.dim)
        info["max_n"] = int(n.max()) if len(n) else 0
        return info

    def encode_query_set(self, unit: str, name: str) -> dict[str, int]:
        """queries/<set> -> embeddings/queries/<set> (qid, lang, embedding)."""
        table = self.run.read_dir(query_set_dir(name), columns=["qid", "lang", "question"])
        good, rejects = split_rejects(
            table, [(_blank(table["qid"]), "missing qid"), (_blank(table["question"]), "empty question")], key="qid"
        )
        encoder = self.encoder(QUERIES)
        feats = tokenize_queries(encoder.tokenizer, good["question"].to_pylist(), self.spec.q_max_len, padded=False)
        emb = encoder.encode(feats, self.batch_size)
        out = pa.table({"qid": good["qid"], "lang": good["lang"], "embedding": vector_column(emb)})
        return self._write(unit, out, rejects, rows_in=table.num_rows, items=good.num_rows, dim=encoder.dim)

    def _write(self, unit: str, out: pa.Table, rejects: list[dict], rows_in: int, items: int, dim: int) -> dict[str, int]:
        """Replace the unit's output (partial files of a killed attempt included) and its rejects."""
        folder = embeddings_dir(unit)
        self.run.remove(folder)
        self.run.write_table(posixpath.join(folder, PART), out)
        rejected = self.run.write_rejects(STAGE, unit, rejects)
        return {"rows_in": rows_in, "rows_out": out.num_rows, "rejected": rejected, "items": items, "dim": dim}


class EncodeGeneratedAfter(EncodeActor):
    """Second pool of `generate --encode`: encodes each generated unit as its generation manifest arrives.

    Gets the generate actors' manifest rows; returns them with the encode manifest alongside (its columns named
    NEXT_PREFIX + column, as xqg.runner.Feed reads them). A unit whose generation failed, or whose embeddings are
    already current (not in `units`), is passed on without encoding.
    """

    def __init__(self, run_uri: str, spec: dict[str, Any], units: dict[str, str], **kwargs: Any) -> None:
        """units: generate unit name -> the encode unit (embeddings/generated...) to make from it."""
        super().__init__(run_uri, spec, preload=(QUERIES,), **kwargs)
        self.units = units

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Encode the generated units of the batch; the generate manifest columns plus the encode ones."""
        rows = []
        for i in range(len(batch["unit"])):
            gen = {k: v[i] for k, v in batch.items()}
            target = self.units.get(str(gen["unit"]), "")
            if target and not str(gen["error"]):
                enc = self.unit(target, GENERATED, int(gen["shard"]), str(gen["lang"]), "")
            else:
                enc = {"unit": target, "target": GENERATED, "seconds": 0.0, "max_n": 0, "rows_in": 0, "rows_out": 0,
                       "rejected": 0, "items": 0, "dim": 0, **self.where, "device": self.device,
                       "error": "not encoded: its generation failed" if target else ""}
            rows.append({**gen, **{f"{NEXT_PREFIX}{k}": v for k, v in enc.items()}})
        return {k: np.array([r[k] for r in rows]) for k in rows[0]}
