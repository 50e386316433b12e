"""train_dr: contrastive fine-tuning of the bi-encoder on Ray Train (Tevatron's recipe, as in the paper).

Each query is scored (dot product) against its positive, its hard negatives and every other passage of the
global batch: with train_dr.gather_negatives (the default) the passages of every worker's part are gathered, so
the loss of a global batch (train_dr.batch_size queries x train_n_passages passages: the paper's 128 x 8, each
query against 1,024 passages, as Tevatron on one GPU) does not depend on how many workers share it. Passages
are tokenized in train_dr.passage_format (default Tevatron's "title text" as one segment), recorded in
models/dr/xqg_dr.json for the encode stage. Per epoch and example a seeded RNG
(default_rng([seed, epoch, example])) picks one positive and train_n_passages - 1 hard negatives without
replacement; an example with fewer negatives uses all it has (the loss takes a variable-size passage block, so
nothing is padded or repeated), one with none is trained against in-batch negatives only.

xQG pairs (train_dr.xqg_pairs, beyond the paper): round(ratio * training examples) (generated query in
language L, its source passage) pairs drawn with a seeded RNG from <run>/generated/ (complete shards of the
selected languages; one query of the row's list at random), passage text from the aligned corpus shard. Rows of
the configured query sets' gold passages (dev, held-out) are never drawn. They have no hard negatives: in-batch
negatives only.
"""

from __future__ import annotations

import hashlib
import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from xqg.config import Config
from xqg.layout import (
    GENERATE,
    INGEST,
    TRAIN_DR,
    corpus_dir,
    dr_name,
    generated_dir,
    parse_lang_shard,
    query_set_dir,
    query_set_unit,
    training_unit,
)
from xqg.rundir import RunDir
from xqg.runner import StageRunner, fingerprint, marker_fingerprint
from xqg.summary import StageSummary
from xqg.train.data import DATA_FILE, ExampleWriter, PreparedData, data_rel, load_prepared, read_sources
from xqg.train.driver import TrainingSpec, run_training
from xqg.train.readers import EXAMPLE_SCHEMA, Passage, TrainExample

STAGE = TRAIN_DR
NAME = dr_name()  # the main setting's; a named setting trains models/dr-<setting>


def docid_key(docid: str) -> int:
    """A signed 64-bit key of a docid (recognises copies of one passage in a batch)."""
    return int.from_bytes(hashlib.blake2b(docid.encode(), digest_size=8).digest(), "little", signed=True)


class DRTask:
    """Batches, model and loss of the bi-encoder training (built inside each Ray Train worker)."""

    def __init__(
        self, data_uri: str, model_path: str, pooling: str, shared: bool, q_max_len: int, p_max_len: int,
        n_passages: int, temperature: float, gather: bool, seed: int, trust_remote_code: bool, meta: dict[str, Any],
        run_uri: str | None = None,
    ) -> None:
        import pyarrow.parquet as pq
        from transformers import AutoTokenizer

        from xqg.models.resolve import localize
        from xqg.rundir import RunDir, filesystem_for

        if run_uri is not None:  # a "run:" base model (non-local run): this worker's local copy
            model_path = localize(model_path, RunDir(run_uri))
        fs, path = filesystem_for(data_uri)
        self.table = pq.read_table(path, filesystem=fs, columns=["query", "positives", "negatives"])
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.model_path, self.pooling, self.shared = model_path, pooling, shared
        self.q_max_len, self.p_max_len, self.n_passages = q_max_len, p_max_len, n_passages
        self.temperature, self.gather, self.seed = temperature, gather, seed
        self.trust_remote_code, self.meta = trust_remote_code, meta
        self.find_unused_parameters = False

    def num_examples(self) -> int:
        """Training examples."""
        return self.table.num_rows

    def build_model(self, checkpoint_model_dir: str | None) -> Any:
        """The base encoder(s), or the checkpoint's weights on resume."""
        from xqg.models.encoder import BiEncoder

        model = BiEncoder.from_pretrained(
            checkpoint_model_dir or self.model_path, self.pooling, self.shared, self.trust_remote_code
        )
        # A pooler the architecture would not drop gets no gradient: DDP must be told.
        self.find_unused_parameters = any("pooler" in n for n, _ in model.named_parameters())
        return model

    def sample_passages(
        self, row: dict[str, Any], index: int, epoch: int
    ) -> tuple[dict[str, str], list[dict[str, str]]]:
        """(positive, hard negatives) of one example in one epoch, from its own seeded RNG."""
        rng = np.random.default_rng([self.seed, epoch, int(index)])
        positives, negatives = row["positives"], row["negatives"] or []
        pos = positives[int(rng.integers(len(positives)))] if len(positives) > 1 else positives[0]
        k = min(self.n_passages - 1, len(negatives))
        chosen = [negatives[j] for j in rng.choice(len(negatives), size=k, replace=False)] if k > 0 else []
        return pos, chosen

    def make_batch(self, indices: np.ndarray, epoch: int) -> dict[str, Any]:
        """Tokenized queries, the passage block, each query's positive index and the docid keys."""
        import torch

        from xqg.models.encoder import tokenize_passages, tokenize_queries

        rows = self.table.take(pa.array(indices, type=pa.int64())).to_pylist()
        titles: list[str] = []
        texts: list[str] = []
        p_keys: list[int] = []
        pos_index: list[int] = []
        q_keys: list[int] = []
        for i, row in zip(indices, rows):
            pos, negs = self.sample_passages(row, int(i), epoch)
            pos_index.append(len(titles))
            q_keys.append(docid_key(pos["docid"]))
            for p in [pos, *negs]:
                titles.append(p["title"] or "")
                texts.append(p["text"])
                p_keys.append(docid_key(p["docid"]))
        q = tokenize_queries(self.tokenizer, [r["query"] for r in rows], self.q_max_len)
        p = tokenize_passages(self.tokenizer, titles, texts, self.p_max_len, self.meta["passage_format"])
        batch = {
            "q_ids": q["input_ids"], "q_mask": q["attention_mask"],
            "p_ids": p["input_ids"], "p_mask": p["attention_mask"],
            "pos_index": torch.tensor(pos_index), "q_keys": torch.tensor(q_keys), "p_keys": torch.tensor(p_keys),
        }
        # Segment ids only where the tokenizer made them for a pair (title_text_pair); one-segment inputs get
        # none, as in Tevatron (the model's default, all zeros).
        if "token_type_ids" in q:
            batch["q_types"] = q["token_type_ids"]
        if "token_type_ids" in p:
            batch["p_types"] = p["token_type_ids"]
        return batch

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
        """(loss to back-propagate, loss to log)."""
        from xqg.train.loss import batch_loss

        b = {k: v.to(device) for k, v in batch.items()}
        q, p = model(b["q_ids"], b["q_mask"], b["p_ids"], b["p_mask"], b.get("q_types"), b.get("p_types"))
        return batch_loss(
            q, p, b["pos_index"], temperature=self.temperature, q_pos_keys=b["q_keys"], p_keys=b["p_keys"],
            gather=self.gather,
        )

    def save_model(self, model: Any, out_dir: str) -> None:
        """HF folder(s) + tokenizer + xqg_dr.json."""
        model.save(out_dir, self.tokenizer, self.meta)


# ---- xQG pairs ------------------------------------------------------------------------------------------


def xqg_pair_examples(
    run: RunDir, n_pairs: int, languages: list[str] | None, seed: int, exclude: frozenset[str] = frozenset()
) -> tuple[list[TrainExample], list[dict[str, str]], int, int]:
    """(examples, rejects, pairs drawn, generated rows excluded): generated (query in L, source passage) pairs drawn
    with a seeded RNG from the rows whose passage is not in `exclude` (the evaluation and held-out passages)."""
    if n_pairs <= 0:
        return [], [], 0, 0
    done = {p: m for u, m in run.markers(GENERATE).items() if (p := parse_lang_shard(u)) is not None}
    wanted = set(languages) if languages else {lang for lang, _ in done}
    # (lang, shard, eligible row numbers) of every complete unit of the selected languages, in a fixed order
    units = []
    excluded = 0
    for lang, shard in sorted(u for u in done if u[0] in wanted):
        docids = run.read_dir(generated_dir(lang, shard), ["docid"]).column("docid")
        # A query generated from a dev or held-out passage is that passage's own question in another wording:
        # training on it would teach the evaluated answers, so those rows are never candidates.
        keep = np.flatnonzero(~pc.is_in(docids, value_set=pa.array(sorted(exclude), pa.string())).to_numpy(
            zero_copy_only=False)) if exclude else np.arange(len(docids))
        excluded += len(docids) - len(keep)
        units.append((lang, shard, keep))
    total = sum(len(u[2]) for u in units)
    if total == 0:
        raise FileNotFoundError(
            f"train_dr.xqg_pairs is enabled but {run.path('generated')} has no complete generated shards"
            + (f" for languages {languages}" if languages else "") + " with passages outside the query sets: "
            "run jobs/generate.py first"
        )
    rng = np.random.default_rng([seed, 1_000_003])
    picks = np.sort(rng.choice(total, size=n_pairs, replace=n_pairs > total))
    bounds = np.cumsum([0] + [len(u[2]) for u in units])
    examples: list[TrainExample] = []
    rejects: list[dict[str, str]] = []
    for ui, (lang, shard, keep_rows) in enumerate(units):
        lo, hi = np.searchsorted(picks, [bounds[ui], bounds[ui + 1]])
        if lo == hi:
            continue
        rows = keep_rows[(picks[lo:hi] - bounds[ui]).astype(np.int64)]
        gen = run.read_dir(generated_dir(lang, shard), ["docid", "queries"])
        gen = gen.take(pa.array(rows))
        docids = gen.column("docid").to_pylist()
        corpus = run.read_dir(corpus_dir(shard), ["docid", "title", "text"])
        corpus = corpus.filter(pc.is_in(corpus.column("docid"), value_set=pa.array(sorted(set(docids)))))
        cols = (corpus.column(c).to_pylist() for c in ("docid", "title", "text"))
        passages = {d: (t or "", x) for d, t, x in zip(*cols)}
        for docid, queries in zip(docids, gen.column("queries").to_pylist()):
            key = f"xqg:{lang}:{docid}"
            usable = [q.strip() for q in (queries or []) if isinstance(q, str) and q.strip()]
            if docid not in passages or not passages[docid][1]:
                rejects.append({"key": key, "reason": f"source passage not in corpus shard {shard}", "raw": docid})
                continue
            if not usable:
                rejects.append({"key": key, "reason": "no non-empty generated query", "raw": str(queries)})
                continue
            qi = int(rng.integers(len(usable)))
            title, text = passages[docid]
            examples.append(TrainExample(
                query_id=f"{key}:{qi}", query=usable[qi], lang=lang, positives=[Passage(docid, title, text)],
                source="xqg",
            ))
    return examples, rejects, int(n_pairs), excluded


# ---- stage ----------------------------------------------------------------------------------------------


def query_set_passages(config: Config, run: RunDir) -> frozenset[str]:
    """The gold passages of every configured query set (dev, held-out): no xQG training pair comes from them."""
    out: set[str] = set()
    for q in config.queries:
        rel = query_set_dir(q.name)
        if not run.exists(rel):
            raise FileNotFoundError(
                f"train_dr.xqg_pairs must leave out the passages of query set {q.name!r}, which is not ingested in "
                f"{run.uri}: run jobs/ingest.py first"
            )
        for docids in run.read_dir(rel, ["docids"]).column("docids").to_pylist():
            out.update(docids or [])
    return frozenset(out)


def prepare_dr_data(config: Config, run: RunDir, has_checkpoints: bool) -> PreparedData:
    """Read the training files (+ xQG pairs) once into the prepared Parquet file; rejects per file."""
    cfg = config.train_dr
    if not cfg.train_files:
        raise ValueError("train_dr.train_files is empty: name Tevatron JSONL / DPR JSON files or hub datasets")
    name = dr_name(config.setting)
    data_unit = training_unit("data", name)
    exclude = query_set_passages(config, run) if cfg.xqg_pairs.enabled else frozenset()
    fp = fingerprint({"files": cfg.train_files, "xqg_pairs": cfg.xqg_pairs.model_dump(), "seed": cfg.seed,
                      **({"languages": cfg.languages} if cfg.languages else {}),
                      **({"exclude": fingerprint(sorted(exclude))} if exclude else {})})
    found = load_prepared(run, STAGE, name, fp, has_checkpoints, unit=data_unit)
    if found is not None:
        return found
    prefix, pairs_unit = training_unit("file", name), training_unit("xqg_pairs", name)
    if config.setting is None:
        run.remove("rejects", STAGE, "xqg_pairs.parquet")  # files of the training; a setting's are its own
    for i in range(len(cfg.train_files)):
        run.remove("rejects", STAGE, f"{prefix}={i:05d}.parquet")
    run.remove("rejects", STAGE, f"{pairs_unit}.parquet")
    rel = posixpath.join(data_rel(name), DATA_FILE)
    writer = ExampleWriter(run, rel, EXAMPLE_SCHEMA)
    wanted = set(cfg.languages or [])

    def accept(ex: TrainExample) -> str | None:
        if wanted and ex.lang not in wanted:
            return f"language {ex.lang!r} not in train_dr languages {sorted(wanted)}"
        return None

    try:
        rows_in, rows_out, rejected = read_sources(
            run, STAGE, cfg.train_files, accept=accept, emit=lambda ex: writer.add(ex.as_row()), unit_prefix=prefix
        )
        extra: dict[str, Any] = {"training_examples": rows_out}
        if cfg.xqg_pairs.enabled:
            pairs, pair_rejects, drawn, excluded = xqg_pair_examples(
                run, int(round(cfg.xqg_pairs.ratio * rows_out)), cfg.xqg_pairs.languages, cfg.seed, exclude
            )
            for ex in pairs:
                writer.add(ex.as_row())
            rows_in += drawn
            rows_out += len(pairs)
            rejected += run.write_rejects(STAGE, pairs_unit, pair_rejects)
            extra["xqg_pairs"] = len(pairs)
            extra["xqg_pairs_excluded_query_set_rows"] = excluded
    finally:
        writer.close()
    if rows_out == 0:
        raise ValueError(f"train_dr: no usable training example in {cfg.train_files} (see {run.path('rejects', STAGE)})")
    run.mark_done(STAGE, data_unit, rows_in=rows_in, rows_out=rows_out, rejected=rejected, fingerprint=fp, extra=extra)
    return PreparedData(run.path(rel), rows_in, rows_out, rejected, extra)


def dr_task_args(config: Config, model_path: str) -> dict[str, Any]:
    """DRTask's settings from the config (besides data_uri, model_path, trust_remote_code, run_uri)."""
    from xqg.models.encoder import dr_meta

    cfg = config.train_dr
    base = cfg.model if isinstance(cfg.model, str) else model_path
    return {
        "pooling": cfg.pooling, "shared": cfg.shared_encoder, "q_max_len": config.q_max_len,
        "p_max_len": config.p_max_len, "n_passages": cfg.train_n_passages, "temperature": cfg.temperature,
        "gather": cfg.gather_negatives, "seed": cfg.seed,
        "meta": dr_meta(
            cfg.pooling, cfg.shared_encoder, config.q_max_len, config.p_max_len, base, cfg.passage_format
        ),
    }


def run_train_dr(config: Config) -> StageSummary:
    """Train the bi-encoder on Ray Train (resuming from checkpoints); save <run>/models/dr; mark done."""
    cfg = config.train_dr

    def task_args(model_path: str) -> dict[str, Any]:
        return dr_task_args(config, model_path)

    def upstream(runner: StageRunner) -> dict[str, Any]:
        if not cfg.xqg_pairs.enabled:
            return {}
        generated = runner.markers(GENERATE)  # xQG pairs are drawn from every complete generate unit
        ingested = runner.markers(INGEST)  # ... except those of the query sets' passages
        return {"generated": fingerprint({u: marker_fingerprint(m) for u, m in generated.items()}),
                "query_sets": {q.name: marker_fingerprint(ingested.get(query_set_unit(q.name), {}))
                               for q in config.queries}}

    return run_training(config, TrainingSpec(
        stage=STAGE, name=dr_name(config.setting), section=cfg, prepare_data=prepare_dr_data, task="xqg.train.dr:DRTask",
        task_args=task_args, fp16_ok=True, upstream=upstream,
    ))
