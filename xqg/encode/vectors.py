"""Embeddings as Arrow columns (fixed_size_list<float16|float32>) and back, without per-row Python.

Vectors are stored in `storage.dtype` (float32 by default; float16 takes half the bytes, and its 11-bit
significand keeps scores equal up to near-ties) and always computed in float32: writers accumulate in float32
and cast only when they store, readers return float32 whatever was stored (float16 runs and the float32 runs
written before both read).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

STORAGE_DTYPES = ("float16", "float32")
FLOAT16_MAX = float(np.finfo(np.float16).max)


def vector_column(matrix: np.ndarray, dtype: str = "float32") -> pa.FixedSizeListArray:
    """A [n, d] matrix as a fixed_size_list<dtype>[d] column (dtype float32 or float16; float16 refuses overflow)."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"vector storage dtype {dtype!r} is not one of {STORAGE_DTYPES}")
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-d matrix, got shape {matrix.shape}")
    if dtype == "float16" and matrix.size and matrix.dtype != np.float16:
        # a value beyond float16's range would be stored as inf and poison every score it enters
        peak = float(np.max(np.abs(matrix)))
        if np.isfinite(peak) and peak > FLOAT16_MAX:
            raise ValueError(f"a vector value ({peak:.4g}) exceeds float16's range: set storage.dtype=float32")
    matrix = np.ascontiguousarray(matrix, dtype=np.dtype(dtype))
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), matrix.shape[1])


def vector_matrix(column: pa.Array | pa.ChunkedArray, dim: int | None = None) -> np.ndarray:
    """A fixed_size_list<float16|float32> (or list<float>) column as a float32 [n, d] matrix (no nulls allowed)."""
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
    # float16 is widened exactly; all arithmetic downstream is float32
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


def storage_inputs(dtype: str) -> dict[str, str]:
    """What a unit's inputs record of the storage dtype: {} for float32, so the markers of runs written before the
    option existed (all float32) stay current under storage.dtype=float32 and are redone under float16."""
    return {} if dtype == "float32" else {"storage": dtype}
