"""Streaming raw input: open a local path or URI (gzip detected by extension) and cut it into blocks of whole lines."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from xqg.rundir import filesystem_for

BLOCK_BYTES = 16 << 20  # big enough for pyarrow's threaded parsers, small enough to stream a 13 GB file
MAX_RAW_CHARS = 2_000  # what a reject keeps of its raw input line


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


def iter_line_blocks(stream: pa.NativeFile, block_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with a newline, except perhaps the last)."""
    rest = b""
    while True:
        buf = stream.read(block_bytes)
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
