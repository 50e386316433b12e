"""Streaming raw input: open a local path or URI (gzip detected by extension), cut it into blocks of whole lines,
and the checks every reader applies to raw bytes and strings (UTF-8, control characters, binary files)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from xqg.rundir import filesystem_for

BLOCK_BYTES = 16 << 20  # big enough for pyarrow's threaded parsers, small enough to stream a 13 GB file
MAX_RAW_CHARS = 2_000  # what a reject keeps of its raw input line
UTF8_BOM = b"\xef\xbb\xbf"

# C0 and C1 control characters and DEL: never part of an id (NUL, a stray escape, a tab inside a JSON string).
CONTROL_CHARS = "[\\x00-\\x1f\\x7f-\\x9f]"  # an RE2 / Python regex class
_CONTROL_RE = re.compile(CONTROL_CHARS)

# What the first bytes of a file say when it is not text at all (checked before a text reader parses it).
_BINARY_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed data", "name it .gz (e.g. corpus.jsonl.gz) so that it is decompressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data", "name it .zst so that it is decompressed"),
    (b"BZh", "bzip2-compressed data", "name it .bz2 so that it is decompressed"),
    (b"\xfd7zXZ\x00", "xz-compressed data", "decompress it first"),
    (b"PK\x03\x04", "a zip archive", "unzip it first"),
    (b"PAR1", "a Parquet file", "name it .parquet or set its format to parquet"),
    (b"\xff\xfe", "UTF-16 text (little-endian byte order mark)", "convert it to UTF-8"),
    (b"\xfe\xff", "UTF-16 text (big-endian byte order mark)", "convert it to UTF-8"),
)


def file_info(uri: str) -> tuple[pafs.FileSystem, str, pafs.FileInfo]:
    """(filesystem, path, info) of a local path or URI."""
    fs, path = filesystem_for(uri)
    return fs, path, fs.get_file_info(path)


def open_stream(uri: str) -> pa.NativeFile:
    """A sequential input stream; .gz/.bz2/.zst files are decompressed on the fly."""
    fs, path, info = file_info(uri)
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"input file not found: {uri}")
    return fs.open_input_stream(path)  # compression="detect" picks the codec from the extension


def refuse_binary(head: bytes, uri: str, fmt: str) -> None:
    """Raise a clear ValueError when the first bytes of a text input say it is not (UTF-8) text."""
    for magic, what, fix in _BINARY_MAGIC:
        if magic == b"BZh" and not (head[:3] == magic and head[3:4].isdigit() and head[4:10] == b"1AY&SY"):
            continue
        if head.startswith(magic):
            raise ValueError(f"{uri} looks like {what}, not {fmt} text: {fix}")


def iter_line_blocks(stream: pa.NativeFile, block_bytes: int = BLOCK_BYTES, *, uri: str | None = None,
                     fmt: str = "text") -> Iterator[bytes]:
    """Blocks of whole lines (each ends with a newline, except perhaps the last).

    With uri, the input's first bytes are checked first (refuse_binary) and a UTF-8 byte order mark is dropped.
    """
    rest = b""
    first = uri is not None
    while True:
        buf = stream.read(block_bytes)
        if first and buf:
            first = False
            refuse_binary(buf[:16], uri, fmt)
            if buf.startswith(UTF8_BOM):
                buf = buf[len(UTF8_BOM) :]
        if not buf:
            if rest:
                yield rest
            return
        data = rest + buf if rest else buf
        cut = data.rfind(b"\n")
        if cut < 0:  # one line longer than a block: keep reading
            rest = data
            continue
        yield data[: cut + 1]
        rest = data[cut + 1 :]


def split_lines(block: bytes, skip_whitespace: bool = False) -> list[bytes]:
    """The lines of a block without line ends, minus the ones pyarrow's parsers skip too (empty lines; for JSON,
    whitespace-only lines)."""
    lines = (ln.rstrip(b"\r") for ln in block.split(b"\n"))
    if skip_whitespace:
        return [ln for ln in lines if ln.strip()]
    return [ln for ln in lines if ln]


def raw_text(line: bytes | str) -> str:
    """A printable, truncated copy of an input line for the rejects file."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    return line[:MAX_RAW_CHARS]


def utf8_ok(data: bytes) -> bool:
    """True when data is valid UTF-8, checked in pyarrow's C++ (zero copy, several GB/s)."""
    if not data:
        return True
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64))
    try:
        pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)]).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def encodable(value: str) -> bool:
    """False for a str that cannot be written as UTF-8 (a lone surrogate from a JSON \\ud800 escape)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def has_control_char(value: str) -> bool:
    """True when value holds a C0/C1 control character or DEL."""
    return _CONTROL_RE.search(value) is not None
