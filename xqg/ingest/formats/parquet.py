"""Parquet corpus: a file or a folder of files with docid|id|_id, title (optional) and text columns."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from xqg.ingest.formats.base import CorpusFormat, register
from xqg.ingest.lines import BLOCK_BYTES, file_info
from xqg.ingest.passages import DOCID_ALIASES, PassageBlock, clean_passages

PARQUET_BATCH_ROWS = 65_536


def _parquet_files(uri: str) -> tuple[pafs.FileSystem, list[str]]:
    fs, path, info = file_info(uri)
    if info.type == pafs.FileType.File:
        return fs, [path]
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))
        if files:
            return fs, files
    raise FileNotFoundError(f"no parquet corpus at {uri}")


def _string_column(f: str, role: str, name: str, type_: pa.DataType) -> tuple[str, str | None]:
    """(how to convert column name to string, a note for the summary or None); a ValueError for a column that
    would not convert losslessly."""
    t = pa.types
    if t.is_string(type_):
        return "string", None
    if t.is_null(type_):
        return "null", None
    if t.is_large_string(type_) or t.is_binary(type_) or t.is_large_binary(type_) or t.is_string_view(type_) \
            or t.is_binary_view(type_) or (t.is_dictionary(type_) and (t.is_string(type_.value_type)
                                                                      or t.is_large_string(type_.value_type))):
        note = None if t.is_large_string(type_) or t.is_string_view(type_) or t.is_dictionary(type_) else \
            f"{f}: {role} column {name!r} ({type_}) read as UTF-8 text (rows that are not valid UTF-8 rejected)"
        return "bytes", note
    if t.is_integer(type_):
        return "integer", f"{f}: {role} column {name!r} ({type_}) cast to string (integers: lossless)"
    raise ValueError(
        f"{f}: the {role} column {name!r} is {type_}, not a string: only string, UTF-8 binary and integer "
        f"columns are read (a cast from {type_} to string may not be lossless); convert the column first"
    )


def _to_string(values: pa.Array, how: str) -> pa.Array:
    """A column as a string array; UTF-8 is checked later, row by row only where the bulk check fails."""
    if how == "string":
        return values
    if how == "null":
        return pa.nulls(len(values), pa.string())
    if how == "integer":
        return values.cast(pa.string())
    if pa.types.is_dictionary(values.type):
        values = values.cast(values.type.value_type)
    # Through binary: the byte cast keeps bad UTF-8 for clean_passages to reject instead of raising here.
    return values.cast(pa.binary()).view(pa.string())



class Parquet(CorpusFormat):
    """A Parquet file or folder of files with docid|id|_id, title (optional) and text columns.

    Columns are strings (or UTF-8 binary); an integer docid column is cast to string (lossless, noted). A file
    without a docid or text column, or with a column of another type (a float title), is a ValueError naming it.
    """

    name = "parquet"
    extensions = (".parquet",)
    naming = ".parquet"
    reads_folders = True
    batch_rows = PARQUET_BATCH_ROWS  # rows per block: Parquet is read by row batches, not bytes

    @classmethod
    def read(cls, uri: str, block_bytes: int = BLOCK_BYTES) -> Iterator[PassageBlock]:
        """Every file's rows in batches of batch_rows, validated."""
        batch_rows = cls.batch_rows
        fs, files = _parquet_files(uri)
        next_row = 0
        for f in files:
            with fs.open_input_file(f) as handle:
                try:
                    pf = pq.ParquetFile(handle)
                except (pa.ArrowInvalid, OSError) as e:
                    raise ValueError(f"{f} is not a readable Parquet file: {e}") from None
                schema = pf.schema_arrow
                names = schema.names
                docid_col = next((a for a in DOCID_ALIASES if a in names), None)
                missing = [m for m, ok in (("docid (or id, _id)", docid_col), ("text", "text" in names)) if not ok]
                if missing:
                    raise ValueError(
                        f"{f}: no {' and no '.join(missing)} column: a Parquet corpus needs docid (or id, _id) and text "
                        f"columns, title optional; its columns are: {', '.join(names) or 'none'}"
                    )
                sources = {"docid": docid_col, "title": "title" if "title" in names else None, "text": "text"}
                plan: dict[str, str] = {}
                notes: list[str] = []
                for role, src in sources.items():
                    if src is not None:
                        plan[role], note = _string_column(f, role, src, schema.field(src).type)
                        notes += [note] if note else []
                wanted = [src for src in sources.values() if src is not None]
                for batch in pf.iter_batches(batch_size=batch_rows, columns=wanted):
                    n = batch.num_rows
                    cols = {
                        role: _to_string(batch.column(src), plan[role]) if src else pa.nulls(n, pa.string())
                        for role, src in sources.items()
                    }
                    out = clean_passages(pa.table(cols), np.arange(next_row, next_row + n, dtype=np.int64))
                    out.notes = notes
                    next_row += n
                    yield out



register(Parquet)
