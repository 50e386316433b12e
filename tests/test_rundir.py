"""RunDir on a local path and on a non-local (fsspec memory://) filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest

from xqg.rundir import RunDir, parse_shard, shard_name


@pytest.fixture(params=["local", "memory"])
def run(request: pytest.FixtureRequest, tmp_path: Path) -> RunDir:
    if request.param == "local":
        return RunDir(str(tmp_path / "run"))
    return RunDir(f"memory://xqg-test-{os.getpid()}-{id(tmp_path)}")


def test_tables_markers_rejects(run: RunDir) -> None:
    run.write_table("corpus/shard=00001/part-00000.parquet", pa.table({"docid": ["a", "b"]}))
    run.write_table("corpus/shard=00001/part-00001.parquet", pa.table({"docid": ["c"]}))
    assert run.count_rows("corpus/shard=00001") == 3
    assert run.read_dir("corpus/shard=00001").column("docid").to_pylist() == ["a", "b", "c"]
    assert not run.is_done("ingest", "shard=00001")
    run.mark_done("ingest", "shard=00001", rows_out=3)
    run.mark_done("generate", "lang=ar/shard=00001", rows_out=3)
    assert run.done_units("generate") == {"lang=ar/shard=00001"}
    assert run.corpus_shards() == [1] and run.corpus_shard_rows(1) == 3
    assert run.write_rejects("ingest", "shard=00001", [{"key": "x", "reason": "empty text", "raw": ""}]) == 1
    rej = run.read_rejects("ingest")
    assert rej.num_rows == 1 and rej.column("reason").to_pylist() == ["empty text"]
    assert run.read_rejects("generate").num_rows == 0
    run.remove("corpus")
    assert not run.exists("corpus")


def test_publish_and_local_copy_of_a_model_folder(run: RunDir, tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "sub" / "w.bin").write_bytes(b"123")
    run.publish_dir(str(src), "models/qg")
    local = Path(run.local_dir("models/qg", cache_root=str(tmp_path / "cache")))
    assert (local / "config.json").read_text() == "{}" and (local / "sub" / "w.bin").read_bytes() == b"123"


def test_shard_names() -> None:
    assert shard_name(42) == "shard=00042" and parse_shard("shard=00042") == 42
    with pytest.raises(ValueError):
        parse_shard("lang=ar")


def test_local_copy_follows_a_republished_folder(tmp_path: Path) -> None:
    run = RunDir(f"memory://xqg-republish-{os.getpid()}")
    src = tmp_path / "m"
    src.mkdir()
    (src / "w.bin").write_bytes(b"old")
    run.publish_dir(str(src), "models/dr")
    first = Path(run.local_dir("models/dr", cache_root=str(tmp_path / "cache")))
    (src / "w.bin").write_bytes(b"retrained")
    run.publish_dir(str(src), "models/dr")
    second = Path(run.local_dir("models/dr", cache_root=str(tmp_path / "cache")))
    assert (first / "w.bin").read_bytes() == b"old" and (second / "w.bin").read_bytes() == b"retrained"


def test_rejects_stream_to_parquet_a_row_group_at_a_time(run: RunDir) -> None:
    import pyarrow.parquet as pq

    writer = run.reject_writer("streamed", "corpus", rows_per_group=100)
    for i in range(25):  # 250 rejects in blocks of 10, two reasons
        writer.add([{"key": f"k{i}-{j}", "reason": "empty text" if j % 2 else "no docid", "raw": "x" * 50}
                    for j in range(10)])
        assert len(writer._buffer) < 100, "the driver holds at most one row group of rejects"
    assert writer.close() == 250 and writer.close() == 250  # idempotent
    assert writer.reasons == {"empty text": 125, "no docid": 125} and len(writer.sample) == 100
    table = run.read_rejects("streamed")
    assert table.num_rows == 250 and table["key"].to_pylist()[:2] == ["k0-0", "k0-1"]
    with run.fs.open_input_file(run.path("rejects/streamed/corpus.parquet")) as f:
        assert pq.ParquetFile(f).metadata.num_row_groups == 3
    empty = run.reject_writer("streamed", "none")
    assert empty.close() == 0 and not run.exists("rejects/streamed/none.parquet"), "no rejects: no file"
