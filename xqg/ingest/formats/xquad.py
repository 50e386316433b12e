"""XQuAD's English paragraphs as a corpus (a folder holding xquad.en.json), and the XQuAD file helpers the
query reader shares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from xqg.ingest.formats.base import CorpusFormat, register
from xqg.ingest.lines import BLOCK_BYTES, encodable, open_stream
from xqg.ingest.passages import PassageBlock, clean_passages, from_columns, reject


def xquad_docid(article_idx: int, paragraph_idx: int) -> str:
    """The stable docid of an XQuAD English paragraph (its position in xquad.en.json)."""
    return f"xquad-{article_idx}-{paragraph_idx}"


def load_json(uri: str) -> Any:
    """A whole JSON document from a local path or URI."""
    with open_stream(uri) as stream:
        data = stream.read()
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{uri} is not a valid UTF-8 JSON document: {e}") from None


def xquad_file(folder: str, lang: str) -> str:
    """The URI of xquad.<lang>.json in an XQuAD folder."""
    return f"{folder.rstrip('/')}/xquad.{lang}.json"


def xquad_articles(doc: Any, uri: str) -> list[Any]:
    """The article list of a SQuAD-format document, or a ValueError naming the file."""
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise ValueError(f"{uri} is not a SQuAD/XQuAD document: no 'data' list of articles at its top level")
    return data



class Xquad(CorpusFormat):
    """XQuAD's English paragraphs: docid xquad-<article>-<paragraph>, title the article title."""

    name = "xquad"
    folder_marker = "xquad.en.json"

    @classmethod
    def read(cls, uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
        """One block: every paragraph of the folder's xquad.en.json."""
        uri = xquad_file(uri, "en")
        docids, titles, texts, rows = [], [], [], []
        rejects: list[dict[str, Any]] = []
        i = 0
        for a, article in enumerate(xquad_articles(load_json(uri), uri)):
            paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
            title = article.get("title") if isinstance(article, dict) else None
            if not isinstance(title, str):
                title = None  # a missing title is allowed
            for p, para in enumerate(paragraphs if isinstance(paragraphs, list) else []):
                docid = xquad_docid(a, p)
                text = para.get("context") if isinstance(para, dict) else None
                if text is not None and not isinstance(text, str):
                    rejects.append(reject(i, "text is not a string", repr(para), key=docid))
                elif text is not None and not encodable(text):
                    rejects.append(reject(i, "invalid Unicode in text (lone surrogate escape)", repr(para), key=docid))
                elif title is not None and not encodable(title):
                    rejects.append(reject(i, "invalid Unicode in title (lone surrogate escape)", repr(title), key=docid))
                else:
                    docids.append(docid)
                    titles.append(title)
                    texts.append(text)
                    rows.append(i)
                i += 1
        yield clean_passages(from_columns(docids, titles, texts), np.asarray(rows, dtype=np.int64), rejects)


register(Xquad)
