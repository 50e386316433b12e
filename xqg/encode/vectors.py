"""Embeddings as Arrow columns (fixed_size_list<float32>) and back, without per-row Python."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs


def vector_column(matrix: np.ndarray) -> pa.FixedSizeListArray:
    """A float32 [n, d] matrix as a fixed_size_list<float32>[d] column."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {matrix.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def vector_matrix(column: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """A fixed_size_list<float32> (or list<float>) column as a float32 [n, d] matrix (no nulls allowed)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], type=column.type)
    if column.null_count:
        raise ValueError("embedding column has nulls")
    n = len(column)
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        values = column.flatten()
    else:
        values = column.flatten()
        width = dim if dim is not None else (len(values) // n if n else 0)
    flat = values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if dim is not None and width != dim:
        raise ValueError(f"embedding width {width} != expected {dim}")
    if n and flat.size != n * width:
        raise ValueError("ragged embedding column")
    return flat.reshape(n, width)


def stored_width(fs: pafs.FileSystem, files: list[str], column: str) -> int:
    """The width of a stored vector column, from the Parquet schema (or, for list<float>, its first row only)."""
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f, filesystem=fs)
        type_ = pf.schema_arrow.field(column).type
        if pa.types.is_fixed_size_list(type_):
            return int(type_.list_size)
        for batch in pf.iter_batches(batch_size=1, columns=[column]):
            if batch.num_rows:
                return len(batch.column(0)[0])
    raise ValueError(f"no stored vector in column {column!r} of {files[:1]}")
