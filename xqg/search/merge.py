"""Per-shard top-k lists -> one global top-k per query, ties broken by docid; TSV and TREC run files."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from xqg.layout import run_file
from xqg.rundir import RunDir


def merge_topk(parts: list[pa.Table], depth: int) -> pa.Table:
    """Columns q, docid, score, rank: each query's best `depth` hits by score desc, then docid asc."""
    table = pa.concat_tables(parts).sort_by([("q", "ascending"), ("score", "descending"), ("docid", "ascending")])
    q = table["q"].to_numpy()
    rank = np.arange(len(q)) - np.searchsorted(q, q, side="left") + 1  # position inside the query's block
    keep = rank <= depth
    return table.filter(pa.array(keep)).append_column("rank", pa.array(rank[keep].astype(np.int32)))


class RunningTopK:
    """merge_topk over parts that arrive one at a time, holding at most depth hits per query plus one part: the
    driver's memory is bounded by queries x depth, not by the number of index shards. The order is a total one
    (score desc, docid asc), so merging as parts come gives exactly merge_topk over all of them."""

    def __init__(self, depth: int) -> None:
        self.depth, self.merged = depth, None

    def add(self, part: pa.Table) -> None:
        """Merge one shard's hits (q, docid, score) into the running top-depth."""
        part = part.select(["q", "docid", "score"])
        parts = [part] if self.merged is None else [self.merged.drop_columns(["rank"]), part]
        self.merged = merge_topk(parts, self.depth)

    def result(self) -> pa.Table:
        """Columns q, docid, score, rank (empty when no part came)."""
        if self.merged is None:
            return pa.table({"q": pa.array([], pa.int32()), "docid": pa.array([], pa.string()),
                             "score": pa.array([], pa.float32()), "rank": pa.array([], pa.int32())})
        return self.merged


def write_run(run: RunDir, name: str, qids: pa.Array, merged: pa.Table) -> tuple[str, str]:
    """Write runs/<name>.tsv (qid, docid, rank, score; header) and runs/<name>.trec; return both paths."""
    qid = qids.take(merged["q"])
    tsv = pa.table({"qid": qid, "docid": merged["docid"], "rank": merged["rank"], "score": merged["score"]})
    trec = pa.table({
        "qid": qid, "q0": pa.repeat("Q0", len(merged)), "docid": merged["docid"], "rank": merged["rank"],
        "score": merged["score"], "tag": pa.repeat(name, len(merged)),
    })
    paths = (run_file(name, "tsv"), run_file(name, "trec"))
    _write_csv(run, paths[0], tsv, "\t", header="qid\tdocid\trank\tscore\n")
    _write_csv(run, paths[1], trec, " ")
    return paths


def _write_csv(run: RunDir, rel: str, table: pa.Table, delimiter: str, header: str = "") -> None:
    """Unquoted delimited text, written to a temporary file and moved into place."""
    final = run.path(rel)
    run.makedirs(rel.rsplit("/", 1)[0])
    tmp_rel = f"{rel}.tmp-{uuid.uuid4().hex[:8]}"
    tmp = run.path(tmp_rel)
    try:
        with run.fs.open_output_stream(tmp) as f:
            f.write(header.encode())
            pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, delimiter=delimiter, quoting_style="none"))
    except pa.ArrowInvalid as e:
        run.remove(tmp_rel)
        raise ValueError(f"cannot write {rel}: an id contains {delimiter!r} or a line break ({e})") from None
    run.fs.move(tmp, final)
