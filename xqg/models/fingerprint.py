"""Content hashes of models: what a unit records of the model that made it (computed once per job and folder)."""

from __future__ import annotations

import hashlib
import os
import posixpath

import pyarrow.fs as pafs

from xqg.models.resolve import RUN_PREFIX
from xqg.names import check_run_path
from xqg.rundir import RunDir

_CHUNK = 1 << 20
_cache: dict[tuple, str] = {}


def _listing(fs: pafs.FileSystem, root: str) -> list[tuple[str, int, int]]:
    """(relative path, size, mtime_ns) of every file under root, sorted."""
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return sorted(
        (posixpath.relpath(i.path, root), int(i.size or 0), int(i.mtime_ns or 0))
        for i in infos
        if i.type == pafs.FileType.File and ".tmp-" not in i.path
    )


def _hash_folder(fs: pafs.FileSystem, root: str) -> str:
    """sha256 over every file's relative path and bytes (cached per folder while no file changes)."""
    files = _listing(fs, root)
    if not files:
        raise FileNotFoundError(f"model folder {root} is empty or missing")
    key = (id(type(fs)), root, tuple(files))
    if key not in _cache:
        h = hashlib.sha256()
        for rel, size, _ in files:
            h.update(f"{rel}\0{size}\0".encode())
            with fs.open_input_stream(posixpath.join(root, rel)) as f:
                while chunk := f.read(_CHUNK):
                    h.update(chunk)
        _cache[key] = h.hexdigest()[:16]
    return _cache[key]


def model_fingerprint(ref: str, run: RunDir) -> str:
    """A model's identity: the content hash of a local or run folder; a hub name stands for itself."""
    if ref.startswith(RUN_PREFIX):
        return "sha:" + _hash_folder(run.fs, run.path(check_run_path("model reference", ref[len(RUN_PREFIX):])))
    if os.path.isdir(ref):
        return "sha:" + _hash_folder(pafs.LocalFileSystem(), os.path.abspath(ref))
    return "hub:" + ref
