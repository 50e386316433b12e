"""Reading a passage corpus in any format of xqg/ingest/formats/ (DPR TSV, JSONL, Parquet, XQuAD's English
paragraphs, ...), streamed as validated blocks.

Every reader yields PassageBlocks (xqg.ingest.passages): the good rows as a (docid, title, text) string table and
the bad rows as reject dicts {key, reason, raw}, so that rows in = rows out + rows rejected holds block by block.
Parsing runs in pyarrow (threaded C++) on the hot path; a block that pyarrow refuses (a broken line, bad UTF-8, a
field of the wrong type) is redone line by line in Python so that only its bad lines are rejected.

Every kept row passes clean_passages: valid UTF-8 in every column, a docid without control characters, a
non-empty text. Whichever path reads a block, a row is a line: a TSV header line repeated inside the file (files
joined with cat) and a line holding two JSON values are each one reject with its reason. Inputs that cannot be a
corpus at all (a compressed or binary file read as text, a TSV header that is not DPR's, a Parquet file without
docid/text columns or with a column that is not text) are a ValueError naming the file, never a pass that
quietly keeps nothing.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator

import pyarrow.fs as pafs

from xqg.ingest.formats.base import FORMATS, CorpusFormat
from xqg.ingest.lines import BLOCK_BYTES, file_info
from xqg.ingest.passages import PassageBlock
from xqg.registry import import_package

COMPRESSED = (".gz", ".bz2", ".zst")


def format_names() -> list[str]:
    """The names of every corpus format, sorted."""
    import_package("xqg.ingest.formats")
    return FORMATS.names()


def corpus_format(name: str) -> type[CorpusFormat]:
    """The corpus format registered under name."""
    import_package("xqg.ingest.formats")
    return FORMATS.get(name)


def _either(words: list[str]) -> str:
    """'a', 'a or b', 'a, b or c'."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def detect_format(uri: str, fmt: str = "auto") -> str:
    """The corpus format: fmt itself, or picked from the extension / folder content when fmt is 'auto'."""
    if fmt != "auto":
        return fmt
    formats = [corpus_format(n) for n in format_names()]
    name = uri.lower().rstrip("/")
    for f in formats:
        for ext in f.extensions:
            if name.endswith(ext) or any(name.endswith(ext + z) for z in COMPRESSED):
                return f.name
    fs, path, info = file_info(uri)
    if info.type == pafs.FileType.Directory:
        names = [posixpath.basename(i.path) for i in fs.get_file_info(pafs.FileSelector(path))]
        # A named marker file says more than a file extension: a folder may hold both.
        for f in formats:
            if f.folder_marker is not None and f.folder_marker in names:
                return f.name
        for f in formats:
            if f.reads_folders and any(n.endswith(ext) for n in names for ext in f.extensions):
                return f.name
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"corpus not found: {uri}")
    named = [f.naming for f in formats if f.naming]
    markers = [f.folder_marker for f in formats if f.folder_marker]
    ways = ([f"name it {_either(named)}"] if named else []) + (
        [f"point at a folder holding {_either(markers)}"] if markers else []
    )
    raise ValueError(f"cannot tell the corpus format of {uri}: {', '.join([*ways, 'or set corpus.format'])}")


def read_passages(uri: str, fmt: str = "auto", block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
    """Stream a corpus as validated blocks."""
    return corpus_format(detect_format(uri, fmt)).read(uri, block_bytes)
