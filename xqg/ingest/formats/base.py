"""What a corpus format is: a name, how `corpus.format: auto` recognises it, and a reader of PassageBlocks.

A format is one module of this package: a CorpusFormat subclass and a `register(TheFormat)` call at the end of
the file. xqg.ingest.corpus finds it by name and detects it; nothing else lists the formats.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import ClassVar

from xqg.ingest.lines import BLOCK_BYTES
from xqg.ingest.passages import PassageBlock
from xqg.registry import Registry


class CorpusFormat(ABC):
    """One corpus format: its name, how auto-detection recognises it, and its reader."""

    name: ClassVar[str]
    # File name endings of this format (each also followed by .gz, .bz2 or .zst), for corpus.format: auto.
    extensions: ClassVar[tuple[str, ...]] = ()
    # How a file of this format is named, for the error that cannot tell a corpus's format ("" = by folder only).
    naming: ClassVar[str] = ""
    # A file whose presence makes a folder a corpus of this format (checked before reads_folders).
    folder_marker: ClassVar[str | None] = None
    # Whether a folder holding files with these extensions is a corpus of this format (a Parquet dataset).
    reads_folders: ClassVar[bool] = False

    @classmethod
    @abstractmethod
    def read(cls, uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
        """Stream the corpus at uri as validated blocks (rows in = rows kept + rows rejected, block by block)."""


FORMATS: Registry[type[CorpusFormat]] = Registry("corpus format")


def register(fmt: type[CorpusFormat]) -> type[CorpusFormat]:
    """Make a corpus format available under its name: every format module ends with this call."""
    return FORMATS.register(fmt.name, fmt)
