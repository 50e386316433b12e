"""train_qg: fine-tune the query generator (mT5 or a decoder-only LM) on (English passage -> question in L) pairs.

Pairs come from the same training files as train_dr (an example's first positive passage, its query and the
query's language: "lang", else "language", else a query_id prefix such as "ja-...") or from XOR-TyDi's
gold-paragraph files (gp_squad_train_data.json, SQuAD layout: every qa with its paragraph), the data DSI-QG
trains the paper's generator on. The input is the generation stage's prompt (generate.template with the
language's English name, the title and the text), truncated to train_qg.max_input_len tokens; the target is the
query (max_target_len tokens). Only languages in train_qg.languages (default: the run's languages) are trained,
so English questions are left out unless listed; examples of other languages, or with no/unknown language, are
counted as rejects with their reason. A question id seen before (in any training file, or, for evaluation
pairs, in training) is a reject "duplicate question id": the first is kept, as DSI-QG does.

Evaluation (DSI-QG: load_best_model_at_end on the eval loss): the pairs of train_qg.eval_files (DSI-QG: the
gold-paragraph dev file), or eval_examples / eval_ratio of the training pairs held out (seeded; they are never
trained on). The eval loss (token-mean cross-entropy over the whole eval set) is computed at every checkpoint,
and the checkpoint with the lowest one is the model saved, with its step and eval loss in the marker.
The model and tokenizer are saved with save_pretrained to <run>/models/qg/, where generation picks them up.

The model's config decides the kind of training: an encoder-decoder (mT5) reads the prompt and is trained on the
question as its decoder's target; a decoder-only (causal) LM (Llama, Qwen2, ...: the vLLM route) reads one
sequence, prompt tokens (as the generation stage tokenizes them: the same template, special tokens included, no
chat template) + question tokens + EOS, with the prompt masked out of the loss (labels -100): it learns to
continue a prompt with a question and stop. The loop, checkpoints and resume are the same for both.
"""

from __future__ import annotations

import posixpath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from xqg.config import Config
from xqg.layout import TRAIN_QG
from xqg.models.family import model_is_encoder_decoder
from xqg.rundir import RunDir
from xqg.summary import StageSummary
from xqg.runner import fingerprint
from xqg.train.data import (
    DATA_FILE, EVAL_FILE, ExampleWriter, PreparedData, data_rel, held_out_indices, load_prepared, read_sources,
)
from xqg.train.driver import RUN_ONLY, TrainingSpec, run_training
from xqg.train.readers import DUPLICATE_ID, TrainExample

STAGE = TRAIN_QG
NAME = "qg"
# How pairs are read and split: a change here re-prepares the data of existing runs.
DATA_RULES = "qid-dedupe-v1"

QG_SCHEMA = pa.schema(
    [("query_id", pa.string()), ("lang", pa.string()), ("query", pa.string()), ("title", pa.string()),
     ("text", pa.string())]
)


def format_prompt(template: str, lang: str, title: str, text: str, max_input_len: int) -> str:
    """The generation stage's prompt (xqg.generate.prompts.build_prompt), the text pre-clipped as it does."""
    from xqg.generate.prompts import CHARS_PER_TOKEN_BOUND, build_prompt

    return build_prompt(template, lang, title, text, max_chars=max_input_len * CHARS_PER_TOKEN_BOUND)


def causal_batch(
    tokenizer: Any, prompts: list[str], queries: list[str], max_input_len: int, max_target_len: int,
) -> dict[str, Any]:
    """A decoder-only training batch: prompt + question + EOS per row (right-padded), loss on question and EOS only.

    The prompt is tokenized as the generation stage tokenizes it (special tokens added, cut to max_input_len), so
    the model learns to continue exactly what it will be given; the question gets max_target_len - 1 tokens + EOS.
    """
    import torch

    prompt_ids = tokenizer(prompts, truncation=True, max_length=max_input_len)["input_ids"]
    query_ids = tokenizer(
        queries, add_special_tokens=False, truncation=True, max_length=max_target_len - 1
    )["input_ids"]
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = [(list(p), list(q) + [eos]) for p, q in zip(prompt_ids, query_ids)]
    width = max(len(p) + len(t) for p, t in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, t) in enumerate(rows):
        input_ids[i, :len(p) + len(t)] = torch.tensor(p + t)
        attention_mask[i, :len(p) + len(t)] = 1
        labels[i, len(p):len(p) + len(t)] = torch.tensor(t)  # the prompt is masked out of the loss
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class QGTask:
    """Batches, model and loss of the generator training (built inside each Ray Train worker)."""

    def __init__(
        self, data_uri: str, model_path: str, template: str, max_input_len: int, max_target_len: int,
        trust_remote_code: bool, run_uri: str | None = None, eval_uri: str | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        from xqg.models.resolve import localize
        from xqg.rundir import RunDir, filesystem_for

        if run_uri is not None:  # a "run:" base model (non-local run): this worker's local copy
            model_path = localize(model_path, RunDir(run_uri))

        def read(uri: str) -> pa.Table:
            fs, path = filesystem_for(uri)
            return pq.read_table(path, filesystem=fs, columns=["lang", "query", "title", "text"])

        self.table = read(data_uri)
        self.eval_table = read(eval_uri) if eval_uri else None
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        self.model_path, self.template = model_path, template
        self.max_input_len, self.max_target_len = max_input_len, max_target_len
        self.trust_remote_code = trust_remote_code
        self.find_unused_parameters = False
        self.encoder_decoder = model_is_encoder_decoder(model_path, trust_remote_code)
        if not self.encoder_decoder and self.tokenizer.eos_token_id is None:
            raise ValueError(f"train_qg: the decoder-only model {model_path} has no EOS token to end questions with")

    def num_examples(self) -> int:
        """Training pairs."""
        return self.table.num_rows

    def num_eval_examples(self) -> int:
        """Evaluation pairs (0: no evaluation)."""
        return 0 if self.eval_table is None else self.eval_table.num_rows

    def build_model(self, checkpoint_model_dir: str | None) -> Any:
        """The base seq2seq or causal LM, or the checkpoint's weights on resume."""
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

        cls = AutoModelForSeq2SeqLM if self.encoder_decoder else AutoModelForCausalLM
        return cls.from_pretrained(checkpoint_model_dir or self.model_path, trust_remote_code=self.trust_remote_code)

    def _encode(self, table: pa.Table, indices: np.ndarray) -> dict[str, Any]:
        rows = table.take(pa.array(indices, type=pa.int64())).to_pylist()
        prompts = [format_prompt(self.template, r["lang"], r["title"], r["text"], self.max_input_len) for r in rows]
        if not self.encoder_decoder:
            queries = [r["query"] for r in rows]
            return causal_batch(self.tokenizer, prompts, queries, self.max_input_len, self.max_target_len)
        enc = self.tokenizer(prompts, truncation=True, max_length=self.max_input_len, padding=True, return_tensors="pt")
        tgt = self.tokenizer(
            [r["query"] for r in rows], truncation=True, max_length=self.max_target_len, padding=True, return_tensors="pt"
        )
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}

    def make_batch(self, indices: np.ndarray, epoch: int) -> dict[str, Any]:
        """Tokenized prompts and targets (padding in labels is -100: no loss)."""
        return self._encode(self.table, indices)

    def make_eval_batch(self, indices: np.ndarray) -> dict[str, Any]:
        """A batch of evaluation pairs, tokenized like the training ones."""
        assert self.eval_table is not None
        return self._encode(self.eval_table, indices)

    def compute_loss(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[Any, Any]:
        """(loss to back-propagate, loss to log): token-mean cross-entropy of the targets."""
        out = model(**{k: v.to(device) for k, v in batch.items()})
        return out.loss, out.loss.detach()

    def eval_loss_sum(self, model: Any, batch: dict[str, Any], device: Any) -> tuple[float, int]:
        """(summed cross-entropy of the target tokens, target tokens) of an evaluation batch."""
        import torch.nn.functional as F

        labels = batch["labels"].to(device)
        out = model(**{k: v.to(device) for k, v in batch.items()})
        logits = out.logits
        if not self.encoder_decoder:  # a causal LM's logits at t predict the token at t + 1
            logits, labels = logits[:, :-1], labels[:, 1:]
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        return float(loss.item()), int((labels != -100).sum().item())

    def save_model(self, model: Any, out_dir: str) -> None:
        """save_pretrained of model and tokenizer."""
        model.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)


def _write(run: RunDir, rel: str, table: pa.Table) -> None:
    run.makedirs(posixpath.dirname(rel))
    pq.write_table(table, run.path(rel), filesystem=run.fs, compression="zstd")


def _per_lang(table: pa.Table) -> dict[str, int]:
    langs = table.column("lang").to_pylist()
    return {k: langs.count(k) for k in sorted(set(langs))}


def prepare_qg_data(config: Config, run: RunDir, has_checkpoints: bool) -> PreparedData:
    """(passage, question, language) pairs of the selected languages into the prepared Parquet file(s).

    Training pairs in file order (duplicate question ids across files rejected); evaluation pairs from
    eval_files (ids also in training rejected) or held out of the training pairs (seeded), in their own file.
    """
    cfg = config.train_qg
    if not cfg.train_files:
        raise ValueError("train_qg.train_files is empty: name Tevatron JSONL / DPR JSON / gp_squad training files")
    languages = list(cfg.languages or config.languages)
    fp = fingerprint({
        "files": cfg.train_files, "languages": languages, "eval_files": cfg.eval_files,
        "eval_examples": cfg.eval_examples, "eval_ratio": cfg.eval_ratio,
        "seed": cfg.seed if (cfg.eval_examples or cfg.eval_ratio) else None, "rules": DATA_RULES,
    })
    found = load_prepared(run, STAGE, NAME, fp, has_checkpoints)
    if found is not None:
        return found
    wanted = set(languages)
    seen: set[str] = set()

    def accept(ex: TrainExample) -> str | None:
        if ex.query_id in seen:  # across files (within a gp_squad file the reader has already removed them)
            return DUPLICATE_ID
        seen.add(ex.query_id)
        if ex.lang is None:
            return ex.lang_error or "no language"
        if ex.lang not in wanted:
            return f"language {ex.lang!r} not in train_qg languages {sorted(wanted)}"
        return None

    run.remove("rejects", STAGE)
    rel = posixpath.join(data_rel(NAME), DATA_FILE)
    eval_rel = posixpath.join(data_rel(NAME), EVAL_FILE)
    run.remove(eval_rel)

    def collect(rel_path: str, sources: list[str], unit_prefix: str) -> tuple[int, int, int]:
        writer = ExampleWriter(run, rel_path, QG_SCHEMA)

        def emit(ex: TrainExample) -> None:
            p = ex.positives[0]
            writer.add({"query_id": ex.query_id, "lang": ex.lang, "query": ex.query, "title": p.title, "text": p.text})

        try:
            return read_sources(run, STAGE, sources, accept, emit, unit_prefix=unit_prefix)
        finally:
            writer.close()

    rows_in, rows_out, rejected = collect(rel, cfg.train_files, "file")
    if rows_out == 0:
        raise ValueError(
            f"train_qg: no usable (passage, question) pair of languages {languages} in {cfg.train_files} "
            f"(see {run.path('rejects', STAGE)})"
        )
    extra: dict[str, Any] = {}
    if cfg.eval_files:
        e_in, e_out, e_rej = collect(eval_rel, cfg.eval_files, "eval_file")
        if e_out == 0:
            raise ValueError(
                f"train_qg: no usable evaluation pair of languages {languages} in {cfg.eval_files} "
                f"(see {run.path('rejects', STAGE)})"
            )
        rows_in, rows_out, rejected = rows_in + e_in, rows_out + e_out, rejected + e_rej
        extra["eval_source"] = "eval_files"
    elif cfg.eval_examples or cfg.eval_ratio:
        table = pq.read_table(run.path(rel), filesystem=run.fs)
        held = held_out_indices(table.num_rows, cfg.eval_examples, cfg.eval_ratio, cfg.seed)
        keep = np.setdiff1d(np.arange(table.num_rows), held)
        _write(run, eval_rel, table.take(pa.array(held)))
        _write(run, rel, table.take(pa.array(keep)))  # the training pairs: the rest, in file order
        extra["eval_source"] = f"held out of the training pairs (seed {cfg.seed})"
    train_table = pq.read_table(run.path(rel), filesystem=run.fs, columns=["lang"])
    extra["train_pairs"] = train_table.num_rows
    extra["pairs_per_language"] = _per_lang(train_table)
    if run.exists(eval_rel):
        eval_table = pq.read_table(run.path(eval_rel), filesystem=run.fs, columns=["lang"])
        extra["eval_pairs"] = eval_table.num_rows
        extra["eval_pairs_per_language"] = _per_lang(eval_table)
    run.mark_done(STAGE, "data", rows_in=rows_in, rows_out=rows_out, rejected=rejected, fingerprint=fp, extra=extra)
    return PreparedData(
        run.path(rel), rows_in, rows_out, rejected, extra, eval_uri=run.path(eval_rel) if run.exists(eval_rel) else None
    )


def run_train_qg(config: Config) -> StageSummary:
    """Fine-tune the generator on Ray Train (resuming from checkpoints); save <run>/models/qg; mark done."""
    cfg = config.train_qg

    def task_args(model_path: str) -> dict[str, Any]:
        return {
            "template": config.generate.template, "max_input_len": cfg.max_input_len,
            "max_target_len": cfg.max_target_len,
        }

    # Settings that do not change the model: the eval files count by content (driver.model_unit); epochs do not
    # count under max_steps; with an eval set the checkpoint steps do count (the best one is among them).
    run_only = set(RUN_ONLY) | ({"epochs"} if cfg.max_steps is not None else set())
    if cfg.has_eval:
        run_only.discard("checkpoint_every_steps")
    # fp16_ok=False: mT5 overflows in fp16, so autocast stays fp32 where bf16 is not supported.
    return run_training(config, TrainingSpec(
        stage=STAGE, name=NAME, section=cfg, prepare_data=prepare_qg_data, task="xqg.train.qg:QGTask",
        task_args=task_args, fp16_ok=False, run_only=frozenset(run_only),
    ))
