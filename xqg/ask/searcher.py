"""Asking a finished run: the query encoder and index shards loaded once, questions answered in batches.

Shared by the command line (xqg/ask/cli.py, in-process: no Ray) and the Ray Serve app (xqg/ask/serve.py, one
Searcher per replica). A question is encoded exactly as the run's queries were (the run's bi-encoder of the
index's setting, its pooling and q_max_len, checked against the encoder fingerprints the run's markers recorded),
searched in every shard of the index with FAISS, merged by score (ties by docid), and each hit is shown with its
title, the start of its passage and, for an xQG (fused) index, the passage's generated queries nearest to the
question: what the fusion added to it.

Everything a request names is checked before it touches the run directory: an index name passes the run's
safe-name check and must be one of the indexes this searcher loaded; no request names a file.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from xqg.config import Config
from xqg.layout import (
    BASELINE,
    ENCODE,
    FUSE,
    GENERATE,
    GENERATED,
    INDEX,
    QUERIES,
    baseline_setting,
    check_name,
    corpus_dir,
    fused_set,
    generated_dir,
    index_dir,
    is_baseline,
    queries_target,
    setting_suffix,
)
from xqg.rundir import RunDir

log = logging.getLogger(__name__)

VECTOR_CACHE = 50_000  # generated-query vectors kept per setting for why (768 floats each: ~150 MB for mBERT)

# Unicode blocks that name one language among the paper's (and common xQG) languages: a question written in one of
# them is in that language. Latin script names none (English, Finnish, Swahili, ... look alike), so the
# explanation then uses every language.
_SCRIPTS: tuple[tuple[str, str], ...] = (
    ("ar", r"[\u0600-\u06FF]"), ("bn", r"[\u0980-\u09FF]"), ("te", r"[\u0C00-\u0C7F]"),
    ("ja", r"[\u3040-\u30FF]"), ("ko", r"[\uAC00-\uD7AF\u1100-\u11FF]"), ("ru", r"[\u0400-\u04FF]"),
    ("hi", r"[\u0900-\u097F]"), ("th", r"[\u0E00-\u0E7F]"), ("zh", r"[\u4E00-\u9FFF]"),
)


class AskError(ValueError):
    """A question, index or run that cannot be answered; status is the HTTP code (the CLI exits 2)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Ask:
    """One question as asked: text, passages wanted, index (None = the default) and language (None = guessed)."""

    question: str
    top_k: int
    index: str | None = None
    lang: str | None = None


@dataclass
class LoadedIndex:
    """One index ready to search: its shards, its bi-encoder setting, the generated queries fused into it."""

    name: str
    setting: str | None
    shards: list[Any]
    fused: bool
    languages: list[str] = field(default_factory=list)  # the generated queries' languages a fused set summed
    num_queries: int | None = None  # the first k of each list were summed (None: all)


def guess_language(question: str, languages: list[str]) -> str | None:
    """The language of a question from its script, when the script names one of `languages`; else None."""
    for code, pattern in _SCRIPTS:
        if code in languages and re.search(pattern, question):  # ja (kana) is tried before zh (Han)
            return code
    return None


def default_index(config: Config, names: set[str]) -> str:
    """Of the given index names: ask.index, else the configured fused set, else the baseline, else the first."""
    for name in (config.ask.index, fused_set(config), BASELINE):
        if name and name in names:
            return name
    if not names:
        raise AskError(f"{config.run_dir} has no complete index: run jobs/index.py first", 409)
    return sorted(names)[0]


def complete_indexes(run: RunDir) -> set[str]:
    """Index names under index/ whose manifest exists (it is written last: complete)."""
    from xqg.index.build import MANIFEST

    return {n for n in run.listdir("index") if run.exists("index", n, MANIFEST)}


def index_setting(config: Config, name: str) -> str | None:
    """The bi-encoder setting an index belongs to: a baseline's suffix, a fused set named for a setting, else main."""
    if is_baseline(name):
        return baseline_setting(name)
    for s in config.settings:
        if name == fused_set(config.for_setting(s.name)):
            return s.name
    return None


def check_question(question: Any, max_chars: int) -> str:
    """The question stripped, or AskError (400) when it is not a string, empty or over-long."""
    if not isinstance(question, str):
        raise AskError("question must be a string")
    q = question.strip()
    if not q:
        raise AskError("question is empty")
    if len(q) > max_chars:
        raise AskError(f"question has {len(q)} characters; at most {max_chars} are accepted")
    if any(ord(c) < 32 and c not in "\t" for c in q):
        raise AskError("question contains control characters (one question per line)")
    return q


class Searcher:
    """A run's query encoders and index shards, loaded once; answers lists of questions."""

    def __init__(self, config: Config, indexes: list[str] | None = None, threads: int | None = None,
                 device: str | None = None, load: bool = True) -> None:
        """Check and load the named indexes (every complete index of the run when None); load=False checks only."""
        self.config = config
        self.load = load
        self.run = RunDir(config.run_dir)
        self.limits = config.ask
        self.threads = threads
        self.device = device
        if not self.run.exists("index"):
            raise AskError(f"{self.run.uri} has no complete index: run the pipeline (jobs/pipeline.py) first", 409)
        self.available = complete_indexes(self.run)
        names = indexes if indexes else sorted(self.available)
        if not names:
            raise AskError(f"{self.run.uri} has no complete index: run jobs/index.py first", 409)
        self._encoders: dict[str, Any] = {}
        self._specs: dict[str | None, Any] = {}
        self._docid_rows: dict[str, dict[str, int]] = {}
        self._shards: list[int] | None = None
        self._vectors: dict[str | None, dict[str, np.ndarray]] = {}
        self._markers: dict[str, dict[str, dict[str, Any]]] = {}
        self.indexes: dict[str, LoadedIndex] = {}
        for name in names:
            self.indexes[name] = self._load_index(self.check_index_name(name, loaded_only=False))
        self.default_index = self._default_index()

    # ---- what this run holds -------------------------------------------------------------------------------
    def _default_index(self) -> str:
        """ask.index, else the configured fused set when loaded, else the baseline, else the first loaded."""
        return default_index(self.config, set(self.indexes))

    def markers(self, stage: str) -> dict[str, dict[str, Any]]:
        """A stage's markers, read once per searcher (one listing per stage)."""
        if stage not in self._markers:
            self._markers[stage] = self.run.markers(stage)
        return self._markers[stage]

    def check_index_name(self, name: Any, loaded_only: bool = True) -> str:
        """A requested index name: a plain name (400 otherwise) of an index this searcher serves (404 otherwise)."""
        if not isinstance(name, str):
            raise AskError("index must be a string")
        try:
            check_name("index", name)
        except ValueError as e:
            raise AskError(str(e)) from None
        known = set(self.indexes) if loaded_only else self.available
        if name == "passages":  # the baseline's other name, as jobs/index.py accepts it
            name = BASELINE
        if name not in known:
            hint = sorted(known) or "none"
            raise AskError(f"unknown index {name!r}: this run serves {hint}", 404)
        return name

    # ---- loading and freshness -----------------------------------------------------------------------------
    def _spec(self, setting: str | None) -> Any:
        """The encoder spec of a setting, as the encode stage resolves it (409 when its bi-encoder is missing)."""
        from xqg.config import ConfigError
        from xqg.encode.model import load_encoder_spec

        if setting not in self._specs:
            config = self.config if setting is None else self.config.for_setting(setting)
            try:
                self._specs[setting] = load_encoder_spec(config, self.run)
            except (FileNotFoundError, ConfigError) as e:
                raise AskError(f"the run's query encoder is missing: {e}", 409) from None
        return self._specs[setting]

    def _load_index(self, name: str) -> LoadedIndex:
        """Check an index is current (its encoder and sources are what the run holds now), then load it."""
        from xqg.encode.stage import encoder_fingerprints
        from xqg.index.stage import read_manifest
        from xqg.search.searcher import ShardSearcher

        manifest = read_manifest(self.run, name)
        setting = index_setting(self.config, name)
        spec = self._spec(setting)
        current = encoder_fingerprints(spec, self.run)
        stale = self._staleness(name, manifest, setting, current)
        if stale:
            raise AskError(f"index {name!r} is stale: {stale}; rerun the pipeline (jobs/pipeline.py) to bring it up "
                           "to date", 409)
        loaded = LoadedIndex(name=name, setting=setting, shards=[], fused=not is_baseline(name))
        if loaded.fused:
            first = next(iter(sorted(u for u in self.markers(FUSE) if u.startswith(f"{name}/"))), None)
            inputs = (self.markers(FUSE)[first].get("inputs") or {}) if first else {}
            loaded.languages = list(inputs.get("languages") or [])
            loaded.num_queries = inputs.get("num_queries")
        if not self.load:
            return loaded
        self._query_encoder(spec)  # loaded now: the first question pays no model load
        for shard in manifest["shards"]:
            loaded.shards.append(ShardSearcher(self.run.worker_uri, index_dir(name), shard, self.config.index.nprobe,
                                               self.config.index.ef_search, use_gpu=False))
        log.info("ask: index %s loaded (%d shards, %d vectors)", name, len(loaded.shards), manifest.get("ntotal", 0))
        return loaded

    def _staleness(self, name: str, manifest: dict[str, Any], setting: str | None,
                   current: dict[str, str]) -> str:
        """Why an index no longer matches the run (empty: current), from the fingerprints its markers recorded."""
        from xqg.runner import fingerprint, marker_fingerprint

        recorded = manifest.get("encoder")
        if recorded is None:  # built before manifests named their encoder: the source checks below still hold
            log.warning("index %s records no encoder: its passage encoder cannot be checked", name)
        elif recorded != current["passages"]:
            return ("its passages were encoded with another bi-encoder (or pooling, lengths, format) than the "
                    f"run's models now give (recorded {recorded}, now {current['passages']})")
        # Each index shard's marker names the source units it was built from: all must still be what the run holds.
        source_stage = ENCODE if is_baseline(name) else FUSE
        sources = self.markers(source_stage)
        shard_markers = {u: m for u, m in self.markers(INDEX).items() if u.startswith(f"{name}/shard=")}
        if fingerprint({u: m.get("fingerprint") for u, m in shard_markers.items()}) != manifest.get("fingerprint"):
            return "its shards' markers do not add up to its manifest (an index build was interrupted)"
        for unit, marker in sorted(shard_markers.items()):
            for src, fp in ((marker.get("inputs") or {}).get("source") or {}).items():
                if src not in sources or marker_fingerprint(sources[src]) != fp:
                    return f"{source_stage}/{src} changed since index shard {unit} was built"
        # The query side: questions must be encoded like the run's queries (generated sums and query sets).
        encoded = self.markers(ENCODE)
        target = queries_target(setting)
        sums = {GENERATED + setting_suffix(setting)}  # this setting's generated-query sums (all, or first k)
        query_units = [m for u, m in encoded.items()
                       if u.startswith(f"{target}/") or (not is_baseline(name) and (
                           u.split("/", 1)[0] in sums or re.fullmatch(
                               rf"{GENERATED}-k\d+{re.escape(setting_suffix(setting))}", u.split("/", 1)[0])))]
        recorded_q = {(m.get("inputs") or {}).get("encoder") for m in query_units} - {None}
        if recorded_q and current[QUERIES] not in recorded_q:
            return ("the run's queries were encoded with another query encoder (or pooling, q_max_len) than this "
                    f"config gives (recorded {sorted(recorded_q)}, now {current[QUERIES]})")
        return ""

    def _query_encoder(self, spec: Any) -> Any:
        """The query encoder of a spec, loaded once (settings sharing a model share it)."""
        from xqg.models.encoder import Encoder
        from xqg.models.resolve import localize

        if spec.query_model not in self._encoders:
            self._encoders[spec.query_model] = (spec, Encoder(
                localize(spec.query_model, self.run), spec.pooling, spec.dtype, spec.trust_remote_code,
                device=self.device, threads=self.threads,
            ))
        return self._encoders[spec.query_model]

    # ---- answering -----------------------------------------------------------------------------------------
    def check(self, question: Any, top_k: Any = None, index: Any = None, lang: Any = None) -> Ask:
        """A request's fields validated against the limits and this searcher's indexes (AskError otherwise)."""
        from xqg.languages import normalise_code

        q = check_question(question, self.limits.max_question_chars)
        if top_k is None:
            top_k = self.limits.top_k
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= self.limits.max_top_k:
            raise AskError(f"top_k must be an integer from 1 to {self.limits.max_top_k}, got {top_k!r}")
        name = self.default_index if index is None else self.check_index_name(index)
        code = None
        if lang is not None:
            try:
                code = normalise_code(lang)
            except ValueError as e:
                raise AskError(str(e)) from None
        return Ask(q, top_k, name, code)

    def encode(self, questions: list[str], setting: str | None) -> np.ndarray:
        """Questions as the run's queries of a setting were encoded (float32 [n, dim])."""
        from xqg.models.encoder import tokenize_queries

        spec, encoder = self._query_encoder(self._spec(setting))
        feats = tokenize_queries(encoder.tokenizer, questions, spec.q_max_len, padded=False)
        return encoder.encode(feats, batch_size=64)

    def encode_cached(self, texts: list[str], setting: str | None) -> np.ndarray:
        """encode() with a bounded cache: a passage found again (a popular one, a repeated question) costs no
        encoding of its generated queries; the oldest vectors go first once VECTOR_CACHE are held."""
        cache = self._vectors.setdefault(setting, {})
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        if todo:
            for text, vec in zip(todo, self.encode(todo, setting)):
                cache[text] = vec
            while len(cache) > VECTOR_CACHE:  # dicts keep insertion order: the first key is the oldest
                del cache[next(iter(cache))]
        return np.stack([cache[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    def search(self, asks: list[Ask]) -> list[dict[str, Any]]:
        """Answers in order: {question, index, lang, top_k, hits: [{rank, docid, score, title, passage, why}]}."""
        from xqg.search.merge import merge_topk

        out: list[dict[str, Any] | None] = [None] * len(asks)
        by_index: dict[str, list[int]] = {}
        for i, a in enumerate(asks):
            by_index.setdefault(a.index or self.default_index, []).append(i)
        for name, rows in by_index.items():
            loaded = self.indexes[name]
            vectors = self.encode([asks[i].question for i in rows], loaded.setting)
            depth = max(asks[i].top_k for i in rows)
            merged = merge_topk([s.search(vectors, depth) for s in loaded.shards], depth)
            q = merged["q"].to_numpy()
            for j, i in enumerate(rows):
                part = merged.filter(pa.array(q == j))
                lang = asks[i].lang or guess_language(asks[i].question, loaded.languages or self.config.languages)
                hits = [{"rank": int(r), "docid": d, "score": float(s)}
                        for r, d, s in zip(part["rank"].to_pylist(), part["docid"].to_pylist(),
                                           part["score"].to_pylist()) if r <= asks[i].top_k]
                self._describe(hits)
                if loaded.fused and self.limits.why:
                    self._explain(loaded, vectors[j], hits, lang)
                out[i] = {"question": asks[i].question, "index": name, "lang": lang, "top_k": asks[i].top_k,
                          "hits": hits}
        return [o for o in out if o is not None]

    # ---- what a hit shows ----------------------------------------------------------------------------------
    def _rows(self, folder: str) -> dict[str, int]:
        """docid -> row of a folder, built on first need and kept (one docid column read per folder)."""
        if folder not in self._docid_rows:
            docids = self.run.read_dir(folder, columns=["docid"])["docid"].to_pylist()
            self._docid_rows[folder] = {d: r for r, d in enumerate(docids)}
        return self._docid_rows[folder]

    def _corpus_shard(self, docid: str) -> tuple[int, int] | None:
        """(corpus shard, row) of a passage, searching the shards' docid maps in order."""
        if self._shards is None:
            self._shards = self.run.corpus_shards()  # one listing of the ingest markers per searcher
        for shard in self._shards:
            row = self._rows(corpus_dir(shard)).get(docid)
            if row is not None:
                return shard, row
        return None

    def _describe(self, hits: list[dict[str, Any]]) -> None:
        """Add title, the start of the passage and its corpus shard to each hit."""
        n = self.limits.snippet_chars
        for hit in hits:
            where = self._corpus_shard(hit["docid"])
            hit["title"], hit["passage"], hit["shard"] = "", "", None
            if where is None:
                continue
            shard, row = where
            rec = self.run.take_rows(corpus_dir(shard), [row], columns=["title", "text"]).to_pylist()[0]
            text = (rec.get("text") or "").strip()
            hit["title"] = rec.get("title") or ""
            hit["passage"] = text if len(text) <= n else text[:n].rstrip() + "…"
            hit["shard"] = shard

    def _explain(self, loaded: LoadedIndex, question: np.ndarray, hits: list[dict[str, Any]],
                 lang: str | None) -> None:
        """Add `why` to each hit: the generated queries fused into it nearest to the question (dot product with
        the same query encoder), in the question's language when the passage has queries in it."""
        generated = self.markers(GENERATE)
        found: list[tuple[dict[str, Any], list[str], list[str]]] = []
        for hit in hits:
            hit["why"] = []
            if hit.get("shard") is None:
                continue
            langs = [lang] if lang in loaded.languages else loaded.languages
            texts, codes = self._generated(loaded, hit["docid"], hit["shard"], langs, generated)
            if not texts and len(langs) == 1:  # none in its language: show what the others added
                texts, codes = self._generated(loaded, hit["docid"], hit["shard"], loaded.languages, generated)
            if texts:
                found.append((hit, texts, codes))
        if not found:
            return
        # every hit's queries in one encoder call (those not encoded for an earlier question)
        scores = self.encode_cached([t for _, texts, _ in found for t in texts], loaded.setting) @ question
        start = 0
        for hit, texts, codes in found:
            mine = scores[start:start + len(texts)]
            start += len(texts)
            for k in np.argsort(-mine, kind="stable")[: self.limits.why]:
                hit["why"].append({"lang": codes[k], "query": texts[k], "score": float(mine[k])})

    def _generated(self, loaded: LoadedIndex, docid: str, shard: int, langs: list[str],
                   generated: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
        """(queries, their languages) generated for a passage in the given languages, as many as were fused."""
        texts: list[str] = []
        codes: list[str] = []
        for lang in langs:
            folder = generated_dir(lang, shard)
            if f"lang={lang}/shard={shard:05d}" not in generated:
                continue
            row = self._rows(folder).get(docid)
            if row is None:
                continue
            queries = self.run.take_rows(folder, [row], columns=["queries"])["queries"].to_pylist()[0] or []
            if loaded.num_queries is not None:  # the first k of each list, as encode summed them
                queries = queries[: loaded.num_queries]
            flat = [q.strip() for q in queries if q and q.strip()]
            texts += flat
            codes += [lang] * len(flat)
        return texts, codes

