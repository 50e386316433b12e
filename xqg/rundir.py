"""The run directory: the only contract between stages (local path or any pyarrow/fsspec URI)."""

from __future__ import annotations

import json
import posixpath
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from xqg.config import Config

MARKERS = "_done"
REJECT_SCHEMA = pa.schema(
    [("unit", pa.string()), ("key", pa.string()), ("reason", pa.string()), ("raw", pa.string())]
)


def filesystem_for(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path) for a local path, a pyarrow URI (s3://, gs://, hdfs://) or any fsspec URI."""
    if "://" not in uri:
        local = pafs.LocalFileSystem()
        import os

        return local, os.path.abspath(uri)
    try:
        fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    return _fewer_requests(fs), path


def _fewer_requests(fs: pafs.FileSystem) -> pafs.FileSystem:
    """S3 with delayed open: a small file (a marker, a lease) is written with one PUT instead of a multipart upload's
    three requests (create, part, complete); larger files still go up in parts."""
    s3 = getattr(pafs, "S3FileSystem", None)
    if s3 is None or not isinstance(fs, s3):
        return fs
    rebuild, args = fs.__reduce__()
    options = dict(args[0])
    if options.get("allow_delayed_open"):
        return fs
    options["allow_delayed_open"] = True
    return rebuild(options)


def shard_name(shard: int) -> str:
    """The folder name of a shard: shard=00042."""
    return f"shard={shard:05d}"


def parse_shard(name: str) -> int:
    """shard=00042 -> 42."""
    if not name.startswith("shard="):
        raise ValueError(f"not a shard folder: {name}")
    return int(name.split("=", 1)[1])


def _leaves(type_: pa.DataType, path: str) -> list[tuple[str, pa.DataType]]:
    """(Parquet column path, type) of every leaf under one Arrow field, as pyarrow names them when writing."""
    if pa.types.is_struct(type_):
        fields = [type_.field(i) for i in range(type_.num_fields)]
        return [leaf for f in fields for leaf in _leaves(f.type, f"{path}.{f.name}")]
    if pa.types.is_map(type_):
        return _leaves(type_.key_type, f"{path}.key_value.key") + _leaves(type_.item_type, f"{path}.key_value.value")
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return _leaves(type_.value_type, f"{path}.list.element")
    return [(path, type_)]


def encodings(schema: pa.Schema) -> dict[str, Any]:
    """write_table options: float leaves (embeddings) byte-stream-split and without a dictionary, the rest as
    pyarrow's defaults. A dictionary of vector values never pays (it bloated a 1,000-row float32 shard by 41%),
    and split sign/exponent bytes compress where whole floats do not (lossless)."""
    leaves = [leaf for field in schema for leaf in _leaves(field.type, field.name)]
    floats = [path for path, type_ in leaves if pa.types.is_floating(type_)]
    if not floats:
        return {}
    return {"use_byte_stream_split": floats, "use_dictionary": [path for path, _ in leaves if path not in floats]}


class RunDir:
    """Paths, Parquet I/O, completion markers and rejects under one run directory."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.fs, self.root = filesystem_for(uri)

    def path(self, *parts: str) -> str:
        """A path under the run directory, as the filesystem wants it."""
        return posixpath.join(self.root, *parts) if parts else self.root

    def local_path(self, *parts: str) -> str:
        """A path that plain open()/from_pretrained can use; only for local run directories."""
        if not isinstance(self.fs, pafs.LocalFileSystem):
            raise NotImplementedError(f"{self.uri} is not local; models must be staged locally")
        return self.path(*parts)

    @property
    def worker_uri(self) -> str:
        """The run's address for other processes: an absolute path for a local run (a Ray Train worker's
        working directory is not the driver's, so a relative path would land elsewhere)."""
        return self.root if self.is_local else self.uri

    @property
    def is_local(self) -> bool:
        """True when the run directory is on the local filesystem."""
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def is_object_store(self) -> bool:
        """True on S3 or GCS: no directories, and a PUT is atomic (an object appears whole or not at all)."""
        return isinstance(self.fs, tuple(t for t in (getattr(pafs, "S3FileSystem", None),
                                                      getattr(pafs, "GcsFileSystem", None)) if t is not None))

    def local_dir(self, rel: str, cache_root: str | None = None) -> str:
        """A local folder holding rel (e.g. a model): rel itself for a local run, else a cached download."""
        if self.is_local:
            return self.path(rel)
        import hashlib
        import os
        import tempfile

        # The key covers every file's size and mtime, so a retrained model is fetched again, not served stale.
        listing = self.fs.get_file_info(pafs.FileSelector(self.path(rel), recursive=True))
        stamp = sorted(f"{i.path}:{i.size}:{i.mtime_ns}" for i in listing if i.type == pafs.FileType.File)
        key = hashlib.sha256("\n".join([self.uri, rel, *stamp]).encode()).hexdigest()[:16]
        local = os.path.join(cache_root or os.path.join(tempfile.gettempdir(), "xqg-cache"), key)
        if not os.path.exists(os.path.join(local, ".complete")):
            tmp = f"{local}.tmp-{os.getpid()}"
            os.makedirs(tmp, exist_ok=True)  # copy_files creates subfolders only, not the destination itself
            pafs.copy_files(self.path(rel), tmp, source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            open(os.path.join(tmp, ".complete"), "w").close()
            try:
                os.rename(tmp, local)
            except OSError:  # another process on this node finished the same download first
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        return local

    def publish_dir(self, local: str, rel: str) -> None:
        """Copy a local folder into the run at rel (replacing it); nothing to do when it is already there."""
        import os

        if self.is_local and os.path.abspath(local) == self.path(rel):
            return
        self.remove(rel)
        self.fs.create_dir(self.path(rel), recursive=True)  # a local destination is not created by copy_files
        pafs.copy_files(local, self.path(rel), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)

    # ---- filesystem ---------------------------------------------------------------
    def exists(self, *parts: str) -> bool:
        """True when the path exists."""
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def makedirs(self, *parts: str) -> str:
        """Create a directory (and parents); return its path."""
        p = self.path(*parts)
        self.fs.create_dir(p, recursive=True)
        return p

    def remove(self, *parts: str) -> None:
        """Remove a file or a directory tree if it exists."""
        p = self.path(*parts)
        info = self.fs.get_file_info(p)
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(p)
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(p)

    def list_files(self, rel: str) -> dict[str, tuple[int, int]]:
        """run-relative path -> (size, mtime_ns) of every file under a folder, from one recursive listing
        ({} when it does not exist). On an object store that is one LIST request per 1,000 files."""
        base = self.path(rel)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return {
            posixpath.relpath(i.path, self.root): (int(i.size or 0), int(i.mtime_ns or 0))
            for i in infos if i.type == pafs.FileType.File
        }

    def delete_files(self, rels: Iterable[str], listing: dict[str, set[str]] | None = None, threads: int = 32) -> int:
        """Delete run-relative files, in parallel (a thread pool); files already gone are fine. Returns how many.

        listing (folder or file -> the files at or under it, as a bulk listing saw them): on an object store, a
        folder all of whose files go is emptied with batched deletes (a LIST and one request per 1,000 files)
        instead of a HEAD, a DELETE and a PUT per file (what pyarrow's S3 delete_file costs)."""
        todo = sorted(set(rels))
        if not todo:
            return 0
        folders: list[str] = []
        if listing and self.is_object_store:
            gone = set(todo)
            whole: set[str] = set()
            goes: dict[str, bool] = {}  # folder -> every file under it goes (each folder checked once)

            def all_go(node: str) -> bool:
                if node not in goes:
                    goes[node] = node in listing and listing[node] <= gone
                return goes[node]

            for rel in todo:  # the highest folder above each file whose every file goes
                node, top = posixpath.dirname(rel), None
                while node and node not in (".", "/") and all_go(node):
                    top, node = node, posixpath.dirname(node)
                if top is not None:
                    whole.add(top)
            folders = sorted(whole)
            covered = set().union(*(listing[f] for f in folders)) if folders else set()
            todo = [r for r in todo if r not in covered]

        def delete(path: str) -> None:
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass

        def empty(path: str) -> None:
            self.fs.delete_dir_contents(path, missing_dir_ok=True)

        jobs = [(empty, self.path(f)) for f in folders] + [(delete, self.path(r)) for r in todo]
        if len(jobs) == 1:
            jobs[0][0](jobs[0][1])
        else:
            with ThreadPoolExecutor(max_workers=min(threads, len(jobs))) as pool:
                list(pool.map(lambda job: job[0](job[1]), jobs))  # list(): raise the first real error
        return len(set(rels))

    def listdir(self, *parts: str) -> list[str]:
        """Sorted names directly under a directory ([] when it does not exist)."""
        p = self.path(*parts)
        if self.fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(p, recursive=False))
        return sorted(posixpath.basename(i.path) for i in infos)

    def write_text(self, rel: str, text: str) -> None:
        """Write a small text file atomically where the filesystem allows (write then move)."""
        final = self.path(rel)
        if self.is_object_store:
            # One PUT: it is atomic by itself, and an object store has no folders to create. write-then-move cost
            # a folder check, a PUT, a copy and a delete (5-7 requests where 1 does).
            with self.fs.open_output_stream(final) as f:
                f.write(text.encode("utf-8"))
            return
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as f:
            f.write(text.encode("utf-8"))
        self.fs.move(tmp, final)

    def read_text(self, rel: str) -> str:
        """Read a small text file."""
        with self.fs.open_input_stream(self.path(rel)) as f:
            return f.read().decode("utf-8")

    def write_json(self, rel: str, obj: Any) -> None:
        """Write JSON (sorted keys, UTF-8)."""
        self.write_text(rel, json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=1))

    def read_json(self, rel: str) -> Any:
        """Read JSON."""
        return json.loads(self.read_text(rel))

    # ---- parquet ------------------------------------------------------------------
    def write_table(self, rel: str, table: pa.Table) -> None:
        """Write one Parquet file (parents created)."""
        p = self.path(rel)
        if not self.is_object_store:  # an object store has no folders: creating one only costs requests
            self.fs.create_dir(posixpath.dirname(p), recursive=True)
        pq.write_table(table, p, filesystem=self.fs, compression="zstd", **encodings(table.schema))

    def read_dir(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """Read every Parquet file under a folder as one table (hive folders are not turned into columns)."""
        files = self.parquet_files(rel)
        if not files:
            raise FileNotFoundError(f"no parquet files under {self.path(rel)}")
        return pads.dataset(files, filesystem=self.fs, format="parquet").to_table(columns=columns)

    def _row_groups(self, rel: str) -> Iterator[tuple[pq.ParquetFile, int, int, int]]:
        """(file, row group, first row, rows) of every row group of a folder, in read_dir's order."""
        files = self.parquet_files(rel)
        if not files:
            raise FileNotFoundError(f"no parquet files under {self.path(rel)}")
        offset = 0
        for f in files:
            pf = pq.ParquetFile(f, filesystem=self.fs)
            for g in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(g).num_rows
                yield pf, g, offset, n
                offset += n

    def read_rows(self, rel: str, lo: int, hi: int, columns: list[str] | None = None) -> pa.Table:
        """Rows [lo, hi) of a folder (in read_dir's order), reading only the row groups that hold them."""
        parts, end = [], 0
        for pf, g, offset, n in self._row_groups(rel):
            end = offset + n
            a, b = max(lo, offset), min(hi, end)
            if a < b:
                parts.append(pf.read_row_group(g, columns=columns).slice(a - offset, b - a))
        if lo < 0 or hi > end:
            raise IndexError(f"rows [{lo}, {hi}) asked of {self.path(rel)}, which holds {end}")
        return pa.concat_tables(parts) if parts else self.read_dir(rel, columns).slice(0, 0)

    def take_rows(self, rel: str, rows: Any, columns: list[str] | None = None) -> pa.Table:
        """The given rows (sorted ints, in read_dir's order) of a folder, reading only the row groups that hold them."""
        import numpy as np

        want = np.asarray(rows, dtype=np.int64)
        parts, end = [], 0
        for pf, g, offset, n in self._row_groups(rel):
            end = offset + n
            a, b = np.searchsorted(want, [offset, end])
            if b > a:
                parts.append(pf.read_row_group(g, columns=columns).take(pa.array(want[a:b] - offset)))
        if len(want) and (want[0] < 0 or want[-1] >= end):
            raise IndexError(f"row {int(want[-1])} asked of {self.path(rel)}, which holds {end}")
        return pa.concat_tables(parts) if parts else self.read_dir(rel, columns).slice(0, 0)

    def parquet_files(self, rel: str) -> list[str]:
        """Sorted Parquet files under a folder, recursively."""
        p = self.path(rel)
        if self.fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(p, recursive=True))
        return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet"))

    def count_rows(self, rel: str) -> int:
        """Rows under a folder from Parquet metadata alone."""
        return sum(pq.ParquetFile(f, filesystem=self.fs).metadata.num_rows for f in self.parquet_files(rel))

    # ---- markers ------------------------------------------------------------------
    def marker_path(self, stage: str, unit: str) -> str:
        """Relative path of a unit's completion marker."""
        return posixpath.join(MARKERS, stage, f"{unit}.json")

    def is_done(self, stage: str, unit: str) -> bool:
        """True when the unit has its completion marker."""
        return self.exists(self.marker_path(stage, unit))

    def mark_done(self, stage: str, unit: str, **info: Any) -> dict[str, Any]:
        """Write a unit's completion marker; call only after its output is complete and counted."""
        marker = {"unit": unit, "finished_at": time.time(), **info}
        self.write_json(self.marker_path(stage, unit), marker)
        return marker

    def read_marker(self, stage: str, unit: str) -> dict[str, Any]:
        """The info saved with a unit's marker."""
        return self.read_json(self.marker_path(stage, unit))

    def unmark(self, stage: str, unit: str) -> None:
        """Remove a unit's marker (before its output is redone)."""
        self.remove(self.marker_path(stage, unit))

    def done_units(self, stage: str) -> set[str]:
        """Units of a stage that have a marker (one listing; unit names may contain '/' as folders)."""
        return set(self._marker_listing(stage))

    def markers(self, stage: str, known: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
        """Every marker of a stage, read in bulk: one listing, one cache file, parallel reads of new markers only.

        The cache (_done/<stage>.cache.json) maps each marker to its size and mtime when it was read; markers
        whose file is unchanged come from it, so a rerun over thousands of complete units costs a constant
        number of filesystem calls however many units there are. `known` holds markers this process wrote itself
        (no need to read them back).
        """
        listing = self._marker_listing(stage)
        cache_rel = posixpath.join(MARKERS, f"{stage}.cache.json")
        cached: dict[str, Any] = {}
        if listing and self.exists(cache_rel):
            try:
                cached = self.read_json(cache_rel)
            except (OSError, ValueError):
                cached = {}
        out: dict[str, dict[str, Any]] = {}
        todo: list[str] = []
        for unit, stamp in listing.items():
            hit = cached.get(unit)
            if hit is not None and hit.get("stamp") == stamp:
                out[unit] = hit["marker"]
            elif known is not None and unit in known:
                out[unit] = known[unit]
            else:
                todo.append(unit)
        if todo:
            with ThreadPoolExecutor(max_workers=min(32, len(todo))) as pool:
                for unit, marker in zip(todo, pool.map(self._read_marker_or_none, [(stage, u) for u in todo])):
                    if marker is not None:  # gone between listing and read: not done
                        out[unit] = marker
        if len(cached) != len(out) or any(cached[u].get("stamp") != listing[u] for u in out if u in cached):
            self.write_json(cache_rel, {u: {"stamp": listing[u], "marker": m} for u, m in out.items()})
        return out

    def _read_marker_or_none(self, key: tuple[str, str]) -> dict[str, Any] | None:
        try:
            return self.read_marker(*key)
        except (FileNotFoundError, OSError, ValueError):
            return None

    def _marker_listing(self, stage: str) -> dict[str, list[int]]:
        """unit -> [size, mtime_ns] of every marker file of a stage, from one recursive listing."""
        base = self.path(MARKERS, stage)
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return {
            posixpath.relpath(i.path, base)[: -len(".json")]: [int(i.size or 0), int(i.mtime_ns or 0)]
            for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".json") and ".tmp-" not in i.path
        }

    def clear_markers(self, stage: str) -> None:
        """Forget every marker of a stage (a forced redo)."""
        self.remove(MARKERS, stage)
        self.remove(MARKERS, f"{stage}.cache.json")

    # ---- rejects ------------------------------------------------------------------
    @staticmethod
    def reject_table(unit: str, rows: list[dict[str, Any]]) -> pa.Table:
        """Rejected rows (key, reason, raw) as a table of REJECT_SCHEMA (raw cut to 10,000 characters)."""
        return pa.Table.from_pylist(
            [{"unit": unit, "key": str(r.get("key", "")), "reason": str(r["reason"]), "raw": str(r.get("raw", ""))[:10_000]}
             for r in rows],
            schema=REJECT_SCHEMA,
        )

    def write_rejects(self, stage: str, unit: str, rows: Iterable[dict[str, Any]]) -> int:
        """Write a unit's rejected rows (unit, key, reason, raw) to rejects/<stage>/<unit>.parquet; return the count."""
        rows = list(rows)
        rel = posixpath.join("rejects", stage, f"{unit}.parquet")
        self.remove(rel)
        if not rows:
            return 0
        self.write_table(rel, self.reject_table(unit, rows))
        return len(rows)

    def reject_writer(self, stage: str, unit: str, rows_per_group: int = 65_536) -> RejectWriter:
        """A streaming writer of a unit's rejects to rejects/<stage>/<unit>.parquet (replacing it)."""
        return RejectWriter(self, posixpath.join("rejects", stage, f"{unit}.parquet"), unit, rows_per_group)

    def read_rejects(self, stage: str) -> pa.Table:
        """Every reject of a stage (an empty table when there is none)."""
        if not self.parquet_files(posixpath.join("rejects", stage)):
            return REJECT_SCHEMA.empty_table()
        return self.read_dir(posixpath.join("rejects", stage))

    # ---- config -------------------------------------------------------------------
    def write_config(self, config: Config, stage: str) -> None:
        """Record the resolved config of a stage run: config.yaml (latest) and _configs/<stage>.yaml."""
        text = config.to_yaml()
        self.write_text("config.yaml", text)
        self.write_text(posixpath.join("_configs", f"{stage}.yaml"), text)

    # ---- shards -------------------------------------------------------------------
    def corpus_shards(self) -> list[int]:
        """Shard numbers of the ingested corpus, from the ingest markers (only complete shards)."""
        shards = sorted(parse_shard(u) for u in self.done_units("ingest") if u.startswith("shard="))
        if not shards:
            raise FileNotFoundError(f"no ingested corpus in {self.uri}: run jobs/ingest.py first")
        return shards

    def corpus_shard_rows(self, shard: int) -> int:
        """Rows of a corpus shard, as its ingest marker recorded them."""
        return int(self.read_marker("ingest", shard_name(shard))["rows_out"])

    def iter_corpus(self, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """Each corpus shard as a table, in shard order."""
        for shard in self.corpus_shards():
            yield self.read_dir(posixpath.join("corpus", shard_name(shard)), columns=columns)


class RejectWriter:
    """Rejected rows streamed to one Parquet file as they come, a row group at a time: memory holds one group, the
    reasons' counts and the first `sample` rows (for messages), never every reject. The file exists only once a
    reject was written (no rejects: no file, as write_rejects)."""

    def __init__(self, run: RunDir, rel: str, unit: str, rows_per_group: int = 65_536, sample: int = 100) -> None:
        import collections

        self.run, self.rel, self.unit, self.rows_per_group, self.sample_size = run, rel, unit, rows_per_group, sample
        self.count = 0
        self.reasons: collections.Counter[str] = collections.Counter()
        self.sample: list[dict[str, Any]] = []
        self._buffer: list[dict[str, Any]] = []
        self._writer: pq.ParquetWriter | None = None
        self._stream: Any = None
        run.remove(rel)

    def add(self, rows: Iterable[dict[str, Any]]) -> None:
        """Take rejected rows (key, reason, raw); written once a row group is full."""
        for r in rows:
            self.count += 1
            self.reasons[str(r["reason"])] += 1
            if len(self.sample) < self.sample_size:
                self.sample.append(r)
            self._buffer.append(r)
            if len(self._buffer) >= self.rows_per_group:  # inside the loop: a huge block is not held whole either
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            path = self.run.path(self.rel)
            if not self.run.is_object_store:
                self.run.fs.create_dir(posixpath.dirname(path), recursive=True)
            self._stream = self.run.fs.open_output_stream(path)
            self._writer = pq.ParquetWriter(self._stream, REJECT_SCHEMA, compression="zstd")
        self._writer.write_table(RunDir.reject_table(self.unit, self._buffer))
        self._buffer = []

    def close(self) -> int:
        """Write what is buffered and close the file; return how many rejects were written."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._writer = self._stream = None
        return self.count
