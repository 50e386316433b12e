"""train_qg: fine-tune the cross-lingual query generator (mT5) on (English passage -> question in L) pairs.

Pairs come from the same training files as train_dr: an example's first positive passage, its query and the
query's language ("lang", else "language", else a query_id prefix such as "ja-..."). The input is the generation
stage's prompt (generate.template with the language's English name, the title and the text), truncated to
train_qg.max_input_len tokens; the target is the query (max_target_len tokens). Only languages in
train_qg.languages (default: the run's languages) are trained, so English questions are left out unless listed;
examples of other languages, or with no/unknown language, are counted as rejects with their reason.
The model and tokenizer are saved with save_pretrained to <run>/models/qg/, where generation picks them up.
"""

from __future__ import annotations

import itertools
import posixpath
import time
from typing import Any

import numpy as np
import pyarrow as pa

from xqg.config import Config
from xqg.rundir import RunDir
from xqg.summary import StageSummary
from xqg.train.data import (
    DATA_FILE, ExampleWriter, PreparedData, corpus_texts, data_rel, fingerprint, load_prepared, read_sources,
)
from xqg.train.readers import TrainExample, example_texts

STAGE = "train_qg"
NAME = "qg"

QG_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("lang", pa.string()), ("query", pa.string()), ("title", pa.string()),
     ("text", pa.string())]
)


def format_prompt(template: str, lang: str, title: str, text: str, max_input_len: int) -> str:
    """The generation stage's prompt (xqg.generate.prompts.build_prompt), the text pre-clipped as it does."""
    from xqg.generate.prompts import CHARS_PER_TOKEN_BOUND, build_prompt

    return build_prompt(template, lang, title, text, max_chars=max_input_len * CHARS_PER_TOKEN_BOUND)


class QGTask:
    """Batches, model and loss of the generator training (built inside each Ray Train worker)."""

    def __init__(
        self, data_uri: str, model_path: str, template: str, max_input_len: int, max_target_len: int,
        trust_remote_code: bool, run_uri: str | None = None,
    ) -> None:
        import pyarrow.parquet as pq
        from transformers import AutoTokenizer

        from xqg.models.resolve import localize
        from xqg.rundir import RunDir, filesystem_for

        if run_uri is not None:  # a "run:" base model (non-local run): this worker's local copy
            model_path = localize(model_path, RunDir(run_uri))
        fs, path = filesystem_for(data_uri)
        self.table = pq.read_table(path, filesystem=fs, columns=["lang", "query", "title", "text"])
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.model_path, self.template = model_path, template
        self.max_input_len, self.max_target_len = max_input_len, max_target_len
        self.trust_remote_code = trust_remote_code
        self.find_unused_parameters = False

    def num_examples(self) -> int:
        """Training pairs."""
        return self.table.num_rows

    def build_model(self, checkpoint_model_dir: str | None) -> Any:
        """The base seq2seq model, or the checkpoint's weights on resume."""
        from transformers import AutoModelForSeq2SeqLM

        return AutoModelForSeq2SeqLM.from_pretrained(
            checkpoint_model_dir or self.model_path, trust_remote_code=self.trust_remote_code
        )

    def make_batch(self, indices: np.ndarray, epoch: int) -> dict[str, Any]:
        """Tokenized prompts and targets (padding in labels is -100: no loss)."""
        rows = self.table.take(pa.array(indices, type=pa.int64())).to_pylist()
        prompts = [format_prompt(self.template, r["lang"], r["title"], r["text"], self.max_input_len) for r in rows]
        enc = self.tokenizer(prompts, truncation=True, max_length=self.max_input_len, padding=True, return_tensors="pt")
        tgt = self.tokenizer(
            [r["query"] for r in rows], truncation=True, max_length=self.max_target_len, padding=True, return_tensors="pt"
        )
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
        """(loss to back-propagate, loss to log): token-mean cross-entropy of the targets."""
        out = model(**{k: v.to(device) for k, v in batch.items()})
        return out.loss, out.loss.detach()

    def save_model(self, model: Any, out_dir: str) -> None:
        """save_pretrained of model and tokenizer."""
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


def prepare_qg_data(config: Config, run: RunDir, has_checkpoints: bool) -> PreparedData:
    """(passage, question, language) pairs of the selected languages into the prepared Parquet file."""
    cfg = config.train_qg
    if not cfg.train_files:
        raise ValueError("train_qg.train_files is empty: name Tevatron JSONL / DPR JSON training files")
    languages = list(cfg.languages or config.languages)
    fp = fingerprint({"files": cfg.train_files, "languages": languages})
    found = load_prepared(run, STAGE, NAME, fp, has_checkpoints)
    if found is not None:
        return found
    wanted = set(languages)

    def accept(ex: TrainExample) -> str | None:
        if ex.lang is None:
            return ex.lang_error or "no language"
        if ex.lang not in wanted:
            return f"language {ex.lang!r} not in train_qg languages {sorted(wanted)}"
        return None

    run.remove("rejects", STAGE)
    rel = posixpath.join(data_rel(NAME), DATA_FILE)
    writer = ExampleWriter(run, rel, QG_SCHEMA)
    per_lang: dict[str, int] = {}

    def emit(ex: TrainExample) -> None:
        p = ex.positives[0]
        writer.add({"query_id": ex.query_id, "lang": ex.lang, "query": ex.query, "title": p.title, "text": p.text})
        per_lang[ex.lang or ""] = per_lang.get(ex.lang or "", 0) + 1

    try:
        rows_in, rows_out, rejected = read_sources(run, STAGE, cfg.train_files, accept, emit)
    finally:
        writer.close()
    if rows_out == 0:
        raise ValueError(
            f"train_qg: no usable (passage, question) pair of languages {languages} in {cfg.train_files} "
            f"(see {run.path('rejects', STAGE)})"
        )
    extra = {"pairs_per_language": dict(sorted(per_lang.items()))}
    run.mark_done(STAGE, "data", rows_in=rows_in, rows_out=rows_out, rejected=rejected, fingerprint=fp, extra=extra)
    return PreparedData(run.path(rel), rows_in, rows_out, rejected, extra)


def run_train_qg(config: Config) -> StageSummary:
    """Fine-tune the generator on Ray Train (resuming from checkpoints); save <run>/models/qg; mark done."""
    from xqg.models.resolve import resolve_model
    from xqg.train.loop import (
        LoopSettings, checkpoint_names, copy_model, experiment_uri, finished_training, fit, summarize_metrics,
    )

    t0 = time.perf_counter()
    cfg = config.train_qg
    run = RunDir(config.run_dir)
    done = finished_training(run, STAGE, NAME, t0)
    if done is not None:
        return done
    run.write_config(config, STAGE)
    exp = experiment_uri(run, NAME)
    data = prepare_qg_data(config, run, has_checkpoints=bool(checkpoint_names(exp)))
    model_path = resolve_model(
        cfg.model, run, lambda: itertools.chain(example_texts(cfg.train_files), corpus_texts(run))
    )
    settings = LoopSettings(
        stage=STAGE, name=NAME, run_uri=config.run_dir, experiment_uri=exp, epochs=cfg.epochs,
        global_batch=cfg.batch_size, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio, seed=cfg.seed,
        checkpoint_every_steps=cfg.checkpoint_every_steps, log_every_steps=cfg.log_every_steps,
        precision=cfg.precision, fp16_ok=False, fail_at_step=cfg.fail_at_step,
    )
    task_args = {
        "data_uri": data.uri, "model_path": model_path, "template": config.generate.template,
        "max_input_len": cfg.max_input_len, "max_target_len": cfg.max_target_len,
        "trust_remote_code": cfg.trust_remote_code, "run_uri": config.run_dir,
    }
    outcome = fit("qg", task_args, settings, num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                  max_failures=cfg.max_failures)
    copy_model(outcome.checkpoint, run, posixpath.join("models", NAME))
    extra = {
        **data.extra, "steps": int(outcome.state["global_step"]), "epochs": cfg.epochs,
        "world_size": int(outcome.state["world_size"]), "train_seconds": round(float(outcome.state["train_seconds"]), 1),
        **summarize_metrics(outcome.metrics, settings.driver_id), "model": run.path("models", NAME),
    }
    run.mark_done(STAGE, "model", rows_in=data.rows_in, rows_out=data.rows_out, rejected=data.rejected, **extra)
    return StageSummary(
        STAGE, rows_in=data.rows_in, rows_out=data.rows_out, rejected=data.rejected, units_done=1,
        seconds=time.perf_counter() - t0, extra=extra,
    )
