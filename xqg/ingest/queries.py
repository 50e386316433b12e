"""Query-set readers: XOR-TyDi JSONL and XQuAD (questions in one language, English answers and gold paragraph).

The corpus readers' checks apply here too: a line that is not valid UTF-8, a string holding a lone surrogate
(a JSON \\ud800 escape, which cannot be written as UTF-8), a qid or gold docid holding a control character
are rejects with their reason; a compressed or binary file read as JSONL is a ValueError naming it.
"""

from __future__ import annotations

import collections
import posixpath
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from xqg.config import QuerySetConfig
from xqg.ingest.formats.jsonl import parse_json_line
from xqg.ingest.formats.xquad import load_json, xquad_articles, xquad_docid, xquad_file
from xqg.ingest.lines import (
    UTF8_BOM,
    encodable,
    file_info,
    has_control_char,
    open_stream,
    raw_text,
    refuse_binary,
    split_lines,
)
from xqg.languages import normalise_code

QUERY_SCHEMA = pa.schema(
    [
        ("qid", pa.string()),
        ("lang", pa.string()),
        ("question", pa.string()),
        ("answers", pa.list_(pa.string())),
        ("docids", pa.list_(pa.string())),
    ]
)


@dataclass
class QueryBatch:
    """The accepted queries of a set (QUERY_SCHEMA) and its rejected rows."""

    table: pa.Table
    rejects: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_in(self) -> int:
        """Input rows this batch accounts for."""
        return self.table.num_rows + len(self.rejects)

    def languages(self) -> dict[str, int]:
        """Accepted queries per language."""
        return dict(sorted(collections.Counter(self.table["lang"].to_pylist()).items()))


class _Collector:
    """Accepts query rows, keeping the first of each qid."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self.rejects: list[dict[str, Any]] = []
        self.seen: set[str] = set()

    def reject(self, key: str, reason: str, raw: Any) -> None:
        self.rejects.append({"key": key, "reason": reason, "raw": raw_text(raw if isinstance(raw, (str, bytes)) else repr(raw))})

    def add(self, row: dict[str, Any], raw: Any) -> None:
        if row["qid"] in self.seen:
            self.reject(row["qid"], "duplicate qid (first kept)", raw)
            return
        self.seen.add(row["qid"])
        self.rows.append(row)

    def batch(self) -> QueryBatch:
        return QueryBatch(pa.Table.from_pylist(self.rows, schema=QUERY_SCHEMA), self.rejects)


def _string_id(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _string_list(value: Any) -> list[str] | None:
    """None -> [], a string -> [it], a list of strings -> itself; anything else -> None (invalid)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _id_problem(value: str, name: str) -> str | None:
    """Why a qid or docid cannot be used, or None."""
    if not encodable(value):
        return f"invalid Unicode in {name} (lone surrogate escape)"
    if has_control_char(value):
        return f"control character in {name}"
    return None


def _text_problem(values: list[str], name: str) -> str | None:
    """Why a question or answer strings cannot be written, or None."""
    if all(encodable(v) for v in values):
        return None
    return f"invalid Unicode in {name} (lone surrogate escape)"


def read_xor_tydi(uri: str, languages: list[str] | None = None) -> QueryBatch:
    """XOR-TyDi retrieve JSONL {id, question, answers, lang[, docid]}; languages keeps only those (others rejected)."""
    keep = set(languages) if languages else None
    out = _Collector()
    with open_stream(uri) as stream:
        data = stream.read()
    refuse_binary(data[:16], uri, "xor_tydi JSONL")
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    for i, line in enumerate(split_lines(data, skip_whitespace=True)):
        obj, rej = parse_json_line(line, i)
        if rej:
            out.rejects.append(rej)
            continue
        qid = _string_id(obj.get("id"))
        if qid is None:
            out.reject(f"row {i}", "missing id", line)
            continue
        problem = _id_problem(qid, "id")
        if problem:
            out.reject(f"row {i}", problem, line)
            continue
        question = obj.get("question")
        if not isinstance(question, str):
            out.reject(qid, "missing question" if question is None else "question is not a string", line)
            continue
        if not question.strip():
            out.reject(qid, "empty question", line)
            continue
        problem = _text_problem([question], "question")
        if problem:
            out.reject(qid, problem, line)
            continue
        try:
            lang = normalise_code(obj.get("lang"))
        except ValueError as e:
            out.reject(qid, str(e), line)
            continue
        answers = _string_list(obj.get("answers"))
        if answers is None or isinstance(obj.get("answers"), str):
            out.reject(qid, "answers is not a list of strings", line)
            continue
        docids = _string_list(obj.get("docid"))
        if docids is None:
            out.reject(qid, "docid is not a string or a list of strings", line)
            continue
        problem = _text_problem(answers, "answers")
        problem = problem or next(filter(None, (_id_problem(d, "docid") for d in docids)), None)
        if problem:
            out.reject(qid, problem, line)
            continue
        if keep is not None and lang not in keep:
            out.reject(qid, f"language {lang} is not one of the query set's languages", line)
            continue
        out.add({"qid": qid, "lang": lang, "question": question, "answers": answers, "docids": docids}, line)
    return out.batch()


def xquad_languages(folder: str) -> list[str]:
    """Question languages available in an XQuAD folder (every xquad.<lang>.json but English)."""
    fs, path, info = file_info(folder)
    if info.type != pafs.FileType.Directory:
        raise FileNotFoundError(f"XQuAD folder not found: {folder}")
    names = [posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(path))]
    codes = sorted(n[len("xquad.") : -len(".json")] for n in names if n.startswith("xquad.") and n.endswith(".json"))
    return [c for c in codes if c != "en"]


def _items(obj: Any, key: str) -> list[Any]:
    """obj[key] when obj is a dict holding a list there, else [] (a malformed SQuAD level holds nothing)."""
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


def _english_index(folder: str) -> dict[str, tuple[str, list[str]]]:
    """qa id -> (docid of its English paragraph, its unique English answer strings)."""
    index: dict[str, tuple[str, list[str]]] = {}
    uri = xquad_file(folder, "en")
    for a, article in enumerate(xquad_articles(load_json(uri), uri)):
        for p, para in enumerate(_items(article, "paragraphs")):
            for qa in _items(para, "qas"):
                if not isinstance(qa, dict):
                    continue  # rejected where its question is read
                answers = [x.get("text") for x in _items(qa, "answers") if isinstance(x, dict)]
                index[str(qa.get("id"))] = (xquad_docid(a, p), list(dict.fromkeys(t for t in answers if isinstance(t, str))))
    return index


def read_xquad_queries(folder: str, languages: list[str] | None = None) -> QueryBatch:
    """XQuAD questions of each language (qid <qa id>-<lang>), with the English answers and paragraph docid."""
    english = _english_index(folder)
    out = _Collector()
    for code in languages or xquad_languages(folder):
        lang = normalise_code(code)
        uri = xquad_file(folder, lang)
        i = 0
        for article in xquad_articles(load_json(uri), uri):
            for para in _items(article, "paragraphs"):
                for qa in _items(para, "qas"):
                    i += 1
                    qa_id = _string_id(qa.get("id")) if isinstance(qa, dict) else None
                    question = qa.get("question") if isinstance(qa, dict) else None
                    if qa_id is None:
                        out.reject(f"{lang} row {i - 1}", "missing id", repr(qa))
                    elif _id_problem(qa_id, "id"):
                        out.reject(f"{lang} row {i - 1}", _id_problem(qa_id, "id"), repr(qa))
                    elif not isinstance(question, str) or not question.strip():
                        out.reject(f"{qa_id}-{lang}", "missing question" if question is None else "empty question", repr(qa))
                    elif _text_problem([question], "question"):
                        out.reject(f"{qa_id}-{lang}", _text_problem([question], "question"), repr(qa))
                    elif qa_id not in english:
                        out.reject(f"{qa_id}-{lang}", "no English question with this id in xquad.en.json", repr(qa))
                    elif _text_problem(english[qa_id][1], "answers"):
                        out.reject(f"{qa_id}-{lang}", _text_problem(english[qa_id][1], "answers"), repr(qa))
                    else:
                        docid, answers = english[qa_id]
                        row = {"qid": f"{qa_id}-{lang}", "lang": lang, "question": question, "answers": answers, "docids": [docid]}
                        out.add(row, repr(qa))
    return out.batch()


def read_query_set(qs: QuerySetConfig) -> QueryBatch:
    """Read a configured query set."""
    if qs.format == "xor_tydi":
        return read_xor_tydi(qs.path, qs.languages)
    if qs.format == "xquad":
        return read_xquad_queries(qs.path, qs.languages)
    raise ValueError(f"unknown query set format {qs.format!r}")
