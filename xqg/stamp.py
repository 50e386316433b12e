"""What an input file is, for fingerprints: its bytes (sampled for very large files), not its name or mtime."""

from __future__ import annotations

import hashlib
import posixpath

import pyarrow.fs as pafs

from xqg.rundir import filesystem_for

FULL_HASH_BYTES = 1 << 30  # up to 1 GiB: hash every byte
SAMPLES = 64  # larger files: size + 64 evenly spread 1 MiB blocks (a 13 GB corpus dump in a second or two)
BLOCK = 1 << 20


def _file_digest(fs: pafs.FileSystem, path: str, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with fs.open_input_file(path) as f:
        if size <= FULL_HASH_BYTES:
            while chunk := f.read(BLOCK):
                h.update(chunk)
        else:
            for i in range(SAMPLES):
                f.seek((size - BLOCK) * i // (SAMPLES - 1))
                h.update(f.read(BLOCK))
    return h.hexdigest()[:16]


def content_stamp(uri: str) -> str:
    """A digest of a file's (or a folder's files') content; copying, touching or moving it changes nothing."""
    return path_stamp(*filesystem_for(uri))


def path_stamp(fs: pafs.FileSystem, path: str) -> str:
    """content_stamp of a path on a given filesystem."""
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return _file_digest(fs, path, int(info.size or 0))
    if info.type == pafs.FileType.Directory:
        files = sorted(
            (i for i in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File),
            key=lambda i: i.path,
        )
        h = hashlib.sha256()
        for i in files:
            h.update(f"{posixpath.relpath(i.path, path)}:{_file_digest(fs, i.path, int(i.size or 0))}\n".encode())
        return h.hexdigest()[:16]
    raise FileNotFoundError(f"input not found: {path}")
