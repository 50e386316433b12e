"""Training-data readers: Tevatron JSONL, DPR JSON arrays, SQuAD-style gold paragraphs and hub datasets, with
malformed rows as rejects.

Formats (detected per file, and per row within JSON lines, so a file may mix Tevatron and DPR rows):
- Tevatron JSONL (XOR-TyDi / NQ training sets): {query_id, query, positive_passages, negative_passages},
  passages {docid, title, text}; optional "lang" / "language".
- DPR JSON (one JSON array, streamed element by element, never loaded whole): {question, positive_ctxs,
  hard_negative_ctxs}, contexts {title, text, passage_id | psg_id | id}.
- gp_squad: XOR-TyDi's gold-paragraph data (gp_squad_train_data.json / gp_squad_dev_data.json, the files DSI-QG
  trains its query generator on), SQuAD's layout: {"data": [{"title", "paragraphs": [{"context", "qas": [{"id",
  "question", "answers", "lang"}]}]}]}. Recognised by its head (a JSON object whose "data" array comes first,
  after scalar keys such as "version"), and streamed element by element; a one-line SQuAD object with other keys
  first is read as a JSON-lines row and expanded the same way. Every qa is one row: its question with the
  paragraph's context as the one positive passage (id: the content id), no negatives. The language is the qa's
  "lang" / "language" (XOR-TyDi has "lang"), else the paragraph's or the data element's, else an id prefix
  ("ja-123", "japanese-123"); XOR-TyDi ids are bare numbers, so a qa without any of these has no language (the
  trainings reject it with that reason). Titles carrying XOR's "_parentSection" suffix are cut as DSI-QG does
  (title[6:index of "_parentSection"]). Duplicate question ids are removed as DSI-QG does: the first is kept,
  every later one is a reject "duplicate question id" (DSI-QG keeps the first of a shuffled order; here it is
  the file's order, so a rerun keeps the same pairs).
- A hub dataset: "hub:<name>" or "hub:<name>:<split>" (or a bare "owner/name" that is not a local path);
  needs the optional `datasets` package and a reachable hub.

A row is rejected (with its reason) when it is not a JSON object, has an empty query, or has no usable positive
passage. Negatives without text are dropped from their example. A passage without an id gets a stable
content id ("sha1:<16 hex>") so that duplicate passages in a batch can still be recognised.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import pyarrow as pa

from xqg.languages import LANGUAGE_NAMES, normalise_code

PASSAGE_TYPE = pa.struct([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())])
EXAMPLE_SCHEMA = pa.schema(
    [
        ("query_id", pa.string()),
        ("query", pa.string()),
        ("lang", pa.string()),
        ("source", pa.string()),
        ("positives", pa.list_(PASSAGE_TYPE)),
        ("negatives", pa.list_(PASSAGE_TYPE)),
    ]
)

_HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Passage:
    """One passage of a training example."""

    docid: str
    title: str
    text: str

    def as_dict(self) -> dict[str, str]:
        """The Arrow struct form."""
        return {"docid": self.docid, "title": self.title, "text": self.text}


@dataclass
class TrainExample:
    """A query with its positive and hard-negative passages."""

    query_id: str
    query: str
    lang: str | None
    positives: list[Passage]
    negatives: list[Passage] = field(default_factory=list)
    lang_error: str | None = None
    source: str = "train"

    def as_row(self) -> dict[str, Any]:
        """The Arrow row form (EXAMPLE_SCHEMA)."""
        return {
            "query_id": self.query_id, "query": self.query, "lang": self.lang, "source": self.source,
            "positives": [p.as_dict() for p in self.positives], "negatives": [p.as_dict() for p in self.negatives],
        }


@dataclass
class Reject:
    """A training row that cannot be used, with the reason."""

    key: str
    reason: str
    raw: str

    def as_dict(self) -> dict[str, str]:
        """The form RunDir.write_rejects takes."""
        return {"key": self.key, "reason": self.reason, "raw": self.raw}


# ---- sources --------------------------------------------------------------------------------------------


def hub_name(source: str) -> tuple[str, str] | None:
    """(dataset, split) when the source names a hub dataset, else None."""
    if source.startswith("hub:"):
        name, _, split = source[4:].partition(":")
        return name, split or "train"
    if "://" not in source and _HUB_NAME.match(source) and not posixpath.splitext(source)[1]:
        if not os.path.exists(source):
            return source, "train"
    return None


def open_text(source: str) -> TextIO:
    """A text stream of a local path or pyarrow/fsspec URI; .gz/.bz2/.zst are decompressed by extension."""
    from xqg.rundir import filesystem_for

    fs, path = filesystem_for(source)
    try:
        stream = fs.open_input_stream(path, compression="detect")
    except FileNotFoundError:
        raise FileNotFoundError(f"training file not found: {source}") from None
    except OSError as e:
        if "not found" in str(e).lower() or "no such file" in str(e).lower():
            raise FileNotFoundError(f"training file not found: {source}") from None
        raise
    return io.TextIOWrapper(stream, encoding="utf-8", errors="replace")  # type: ignore[arg-type]


def _first_char(f: TextIO) -> tuple[str, str]:
    """(first non-space character, text read so far) of a stream."""
    head = ""
    while True:
        chunk = f.read(4096)
        if not chunk:
            return "", head
        head += chunk
        stripped = head.lstrip("\ufeff \t\r\n")
        if stripped:
            return stripped[0], head


class _Prefixed(io.TextIOBase):
    """A text stream with some already-read text put back in front."""

    def __init__(self, head: str, rest: TextIO) -> None:
        self._head, self._rest = head, rest

    def read(self, n: int | None = -1) -> str:  # type: ignore[override]
        if self._head:
            if n is None or n < 0:
                out, self._head = self._head + self._rest.read(), ""
                return out
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._rest.read(-1 if n is None else n)

    def readline(self, size: int | None = -1) -> str:  # type: ignore[override]
        if self._head:
            nl = self._head.find("\n")
            if nl >= 0:
                out, self._head = self._head[: nl + 1], self._head[nl + 1 :]
                return out
            out, self._head = self._head, ""
            return out + self._rest.readline()
        return self._rest.readline()

    def __iter__(self) -> Iterator[str]:  # type: ignore[override]
        while True:
            line = self.readline()
            if not line:
                return
            yield line


def iter_json_array(f: TextIO, chunk_chars: int = 1 << 20) -> Iterator[Any]:
    """Stream the elements of one top-level JSON array without loading the whole file."""
    dec = json.JSONDecoder()
    buf, pos, eof = "", 0, False

    def fill() -> bool:
        nonlocal buf, pos, eof
        more = f.read(chunk_chars)
        if not more:
            eof = True
            return False
        buf, pos = buf[pos:] + more, 0
        return True

    def skip_space() -> str:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                pos += 1
            if pos < len(buf):
                return buf[pos]
            if not fill():
                return ""

    if skip_space() != "[":
        raise ValueError("a DPR training file must be one JSON array")
    pos += 1
    expect_value = True
    while True:
        c = skip_space()
        if c == "":
            raise ValueError("truncated JSON array (no closing ']')")
        if c == "]":
            return
        if c == ",":
            if expect_value:
                raise ValueError(f"unexpected ',' in JSON array near character {pos}")
            pos += 1
            expect_value = True
            continue
        if not expect_value:
            raise ValueError(f"expected ',' or ']' in JSON array near character {pos}")
        while True:
            try:
                obj, end = dec.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as e:
                if eof or not fill():
                    raise ValueError(f"invalid JSON in array element: {e}") from None
        pos = end
        expect_value = False
        yield obj


# A JSON object whose "data" array comes first (after scalar keys such as "version"): SQuAD's layout.
_SQUAD_HEAD = re.compile(
    r'\s*\{\s*(?:"(?:[^"\\]|\\.)*"\s*:\s*(?:"(?:[^"\\]|\\.)*"|[-+0-9.eE]+|true|false|null)\s*,\s*)*"data"\s*:\s*(?=\[)'
)
_HEAD_CHARS = 1 << 16


def _peek(f: TextIO, head: str, n: int = _HEAD_CHARS) -> str:
    """head extended with more of the stream until it has n characters or the stream ends."""
    while len(head) < n:
        chunk = f.read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def _is_squad(row: Any) -> bool:
    """A whole SQuAD-layout object (gp_squad) read as one JSON-lines row."""
    return isinstance(row, dict) and isinstance(row.get("data"), list) and not (
        "query" in row or "question" in row or "positive_passages" in row or "positive_ctxs" in row
    )


def iter_rows(source: str) -> Iterator[tuple[str, Any, str | None]]:
    """(default key, parsed row or None, raw text) for every row of a Tevatron / DPR / hub source; None = invalid JSON.

    gp_squad files are not rows of this kind: read_training_file reads them (each qa is a row there).
    """
    for key, row, raw, _ in _iter_file(source):
        yield key, row, raw


def _iter_file(source: str) -> Iterator[tuple[str, Any, str | None, str]]:
    """(key, row, raw, format) where format is "row" (Tevatron / DPR / hub) or "gp_squad" (a SQuAD data element)."""
    hub = hub_name(source)
    if hub is not None:
        for key, row, raw in _iter_hub_rows(*hub):
            yield key, row, raw, "row"
        return
    base = posixpath.basename(source.rstrip("/"))
    with open_text(source) as f:
        first, head = _first_char(f)
        if first == "{":
            head = _peek(f, head).lstrip("\ufeff")
            m = _SQUAD_HEAD.match(head)
            if m:  # gp_squad: stream the elements of "data"; whatever follows the array (e.g. "version") is ignored
                for i, obj in enumerate(iter_json_array(_Prefixed(head[m.end():], f))):  # type: ignore[arg-type]
                    yield f"{base}#data[{i}]", obj, None, "gp_squad"
                return
        stream = _Prefixed(head, f)
        if first == "[":
            for i, obj in enumerate(iter_json_array(stream)):  # type: ignore[arg-type]
                yield f"{base}#{i}", obj, None, "row"
            return
        for n, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                yield f"{base}:{n}", None, line, "row"
                continue
            if _is_squad(row):  # a one-line SQuAD object whose "data" is not its first key
                for i, obj in enumerate(row["data"]):
                    yield f"{base}:{n}#data[{i}]", obj, None, "gp_squad"
                continue
            yield f"{base}:{n}", row, line, "row"


def _iter_hub_rows(name: str, split: str) -> Iterator[tuple[str, Any, str | None]]:
    try:
        import datasets  # optional: only hub datasets need it
    except ImportError:
        raise ValueError(
            f"training source 'hub:{name}' is a hub dataset, which needs the optional `datasets` package "
            "(pip install datasets) and a reachable hub; or download it and name the local JSONL/JSON file"
        ) from None
    ds = datasets.load_dataset(name, split=split, streaming=True)
    for i, row in enumerate(ds):
        yield f"{name}#{i}", dict(row), None


# ---- rows -> examples -----------------------------------------------------------------------------------


def content_id(title: str, text: str) -> str:
    """A stable id for a passage that came without one."""
    return "sha1:" + hashlib.sha1(f"{title}\n{text}".encode()).hexdigest()[:16]


def parse_passage(obj: Any) -> Passage | None:
    """A Tevatron passage or DPR context as a Passage; None when it has no text."""
    if not isinstance(obj, dict):
        return None
    text = obj.get("text")
    text = " ".join(text.split()) if isinstance(text, str) else ""
    if not text:
        return None
    title = obj.get("title")
    title = " ".join(title.split()) if isinstance(title, str) else ""
    docid = next((obj[k] for k in ("docid", "passage_id", "psg_id", "id") if obj.get(k) not in (None, "")), None)
    return Passage(docid=str(docid) if docid is not None else content_id(title, text), title=title, text=text)


def _passages(value: Any) -> list[Passage]:
    if not isinstance(value, list):
        return []
    return [p for p in (parse_passage(v) for v in value) if p is not None]


_NAME_CODES = {name.lower(): code for code, name in LANGUAGE_NAMES.items()}  # "japanese-123" (TyDi QA's ids)


def row_language(row: dict[str, Any], query_id: str) -> tuple[str | None, str | None]:
    """(language code, error) from "lang", else "language", else a query_id prefix ("ja-123", "ja_1", "japanese-1")."""
    for k in ("lang", "language"):
        if row.get(k) not in (None, ""):
            try:
                return normalise_code(row[k]), None
            except ValueError as e:
                return None, str(e)
    m = re.match(r"^([A-Za-z]+)[-_:]", query_id)
    if m:
        prefix = m.group(1).lower()
        code = _NAME_CODES.get(prefix, prefix)
        try:
            return normalise_code(code), None
        except ValueError:
            pass
    return None, "no language: no lang/language field and the query_id has no language prefix"


def parse_row(row: Any, key: str, raw: str | None) -> TrainExample | Reject:
    """A Tevatron or DPR row as a TrainExample, or a Reject with its reason."""
    if row is None:
        return Reject(key, "invalid JSON", raw or "")
    if not isinstance(row, dict):
        return Reject(key, "not a JSON object", raw if raw is not None else json.dumps(row, ensure_ascii=False))
    raw_text = raw if raw is not None else json.dumps(row, ensure_ascii=False, default=str)
    if "positive_passages" in row or "query" in row:
        qid = row.get("query_id", row.get("id"))
        query, pos_key, neg_key = row.get("query"), "positive_passages", "negative_passages"
    elif "positive_ctxs" in row or "question" in row:
        qid = row.get("query_id", row.get("id"))
        query, pos_key, neg_key = row.get("question"), "positive_ctxs", "hard_negative_ctxs"
    else:
        return Reject(key, "unknown format: no query/question and no positive_passages/positive_ctxs", raw_text)
    query_id = str(qid) if qid not in (None, "") else key
    query = " ".join(query.split()) if isinstance(query, str) else ""
    if not query:
        return Reject(query_id, "empty query", raw_text)
    positives = _passages(row.get(pos_key))
    if not positives:
        return Reject(query_id, "no positive passage", raw_text)
    lang, lang_error = row_language(row, query_id)
    return TrainExample(query_id, query, lang, positives, _passages(row.get(neg_key)), lang_error=lang_error)


GP_SECTION_MARK = "_parentSection"
DUPLICATE_ID = "duplicate question id"


def gp_title(title: Any) -> str:
    """A gp_squad title for the prompt: XOR's "<6 chars><title>_parentSection..." cut as DSI-QG does, else as is."""
    t = title.strip() if isinstance(title, str) else ""
    cut = t.find(GP_SECTION_MARK)
    if cut > 6:
        t = t[6:cut]
    return " ".join(t.split())


def _gp_raw(title: Any, context: Any, obj: Any) -> str:
    return json.dumps({"title": title, "context": context, "item": obj}, ensure_ascii=False, default=str)


def parse_gp_element(item: Any, key: str, seen: set[str]) -> Iterator[TrainExample | Reject]:
    """Every qa of one gp_squad data element as an example or a reject; `seen` holds the file's question ids so far.

    An element (or paragraph) with no qa at all is one reject, so the rows of a file are its qas plus those.
    """
    if not isinstance(item, dict):
        yield Reject(key, "not a JSON object", json.dumps(item, ensure_ascii=False, default=str))
        return
    raw_title = item.get("title")
    title = gp_title(raw_title)
    paragraphs = item.get("paragraphs")
    if not isinstance(paragraphs, list) or not paragraphs:
        yield Reject(key, "gp_squad data element without paragraphs", _gp_raw(raw_title, None, item))
        return
    for j, para in enumerate(paragraphs):
        pkey = f"{key}.paragraphs[{j}]"
        if not isinstance(para, dict):
            yield Reject(pkey, "not a JSON object", _gp_raw(raw_title, None, para))
            continue
        context, qas = para.get("context"), para.get("qas")
        if not isinstance(qas, list) or not qas:
            yield Reject(pkey, "gp_squad paragraph without questions (qas)", _gp_raw(raw_title, context, para))
            continue
        passage = parse_passage({"title": title, "text": context})
        for k, qa in enumerate(qas):
            yield _gp_example(qa, f"{pkey}.qas[{k}]", passage, (para, item), seen, raw_title, context)


def _gp_example(
    qa: Any, key: str, passage: Passage | None, outer: tuple[dict[str, Any], ...], seen: set[str],
    raw_title: Any, context: Any,
) -> TrainExample | Reject:
    raw = _gp_raw(raw_title, context, qa)
    if not isinstance(qa, dict):
        return Reject(key, "not a JSON object", raw)
    qid = qa.get("id")
    query_id = str(qid) if qid not in (None, "") else key
    if qid not in (None, ""):
        if query_id in seen:  # DSI-QG: `if qid not in qid_set`, the first one kept
            return Reject(query_id, DUPLICATE_ID, raw)
        seen.add(query_id)
    question = qa.get("question")
    question = " ".join(question.split()) if isinstance(question, str) else ""
    if not question:
        return Reject(query_id, "empty query", raw)
    if passage is None:
        return Reject(query_id, "no positive passage", raw)
    has_lang = [d for d in (qa, *outer) if any(d.get(k) not in (None, "") for k in ("lang", "language"))]
    lang, lang_error = row_language(has_lang[0] if has_lang else qa, query_id)
    return TrainExample(query_id, question, lang, [passage], [], lang_error=lang_error)


def read_training_file(source: str) -> Iterator[TrainExample | Reject]:
    """Every row of one training source as an example or a reject (a gp_squad file: every qa)."""
    seen: set[str] = set()  # gp_squad question ids of this file: later duplicates are rejects
    for key, row, raw, fmt in _iter_file(source):
        if fmt == "gp_squad":
            yield from parse_gp_element(row, key, seen)
        else:
            yield parse_row(row, key, raw)


def example_texts(sources: Iterable[str]) -> Iterator[str]:
    """Queries, titles and texts of training sources (tokenizer training text for scratch models)."""
    for src in sources:
        for ex in read_training_file(src):
            if isinstance(ex, TrainExample):
                yield ex.query
                for p in ex.positives + ex.negatives:
                    yield p.title
                    yield p.text


def examples_table(examples: list[TrainExample]) -> pa.Table:
    """Examples as an Arrow table (EXAMPLE_SCHEMA)."""
    return pa.Table.from_pylist([e.as_row() for e in examples], schema=EXAMPLE_SCHEMA)
