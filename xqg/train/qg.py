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

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa

from xqg.config import Config
from xqg.layout import TRAIN_QG
from xqg.rundir import RunDir
from xqg.summary import StageSummary
from xqg.runner import fingerprint
from xqg.train.data import DATA_FILE, ExampleWriter, PreparedData, data_rel, load_prepared, read_sources
from xqg.train.driver import TrainingSpec, run_training
from xqg.train.readers import TrainExample

STAGE = TRAIN_QG
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
    cfg = config.train_qg

    def task_args(model_path: str) -> dict[str, Any]:
        return {
            "template": config.generate.template, "max_input_len": cfg.max_input_len,
            "max_target_len": cfg.max_target_len,
        }

    # fp16_ok=False: mT5 overflows in fp16, so autocast stays fp32 where bf16 is not supported.
    return run_training(config, TrainingSpec(
        stage=STAGE, name=NAME, section=cfg, prepare_data=prepare_qg_data, task="xqg.train.qg:QGTask",
        task_args=task_args, fp16_ok=False,
    ))
