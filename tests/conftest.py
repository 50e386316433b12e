"""Shared fixtures: tiny real models built once per session, a local Ray, demo configs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.paths import DEMO, REPO, demo_texts

SHARED_DATA = REPO.parent / "shared" / "data"  # the real data sets sit beside the checkout: <repo>/../shared/data
# Set to 1 only on a machine that has no ../shared/data: its tests then skip. Otherwise a missing folder fails them.
NO_SHARED_DATA = "XQG_NO_SHARED_DATA"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray Train's controller polls its workers every 2 s by default: a tiny test training spends most of its time
# waiting on those polls (start, each report, the end). Tests poll more often and start no preemption watcher (one
# process less per training; no test preempts a node). Jobs started by tests inherit both.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """<repo>/../shared/data (XOR-TyDi, XQuAD); fails when missing unless XQG_NO_SHARED_DATA=1 says it is absent."""
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    if os.environ.get(NO_SHARED_DATA) == "1":
        pytest.skip(f"{NO_SHARED_DATA}=1: no shared data on this machine")
    pytest.fail(
        f"shared data not found at {SHARED_DATA} (the repository's ../shared/data); "
        f"set {NO_SHARED_DATA}=1 to skip the real-data tests on a machine without it",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def tiny_mt5_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised mT5 + SentencePiece tokenizer trained on the demo text."""
    from xqg.config import ScratchModel
    from xqg.models.tiny import build_scratch

    out = tmp_path_factory.mktemp("models") / "tiny-mt5"
    return str(build_scratch(ScratchModel(scratch="mt5", vocab_size=2000), demo_texts(), out))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised BERT + WordPiece tokenizer trained on the demo text."""
    from xqg.config import ScratchModel
    from xqg.models.tiny import build_scratch

    out = tmp_path_factory.mktemp("models") / "tiny-bert"
    return str(build_scratch(ScratchModel(scratch="bert", vocab_size=2000), demo_texts(), out))


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny randomly initialised Llama causal LM with the demo SentencePiece vocabulary (decoder-only generator)."""
    from xqg.config import ScratchModel
    from xqg.models.tiny import build_scratch

    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    return str(build_scratch(ScratchModel(scratch="llama", vocab_size=2000), demo_texts(), out))


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the whole session (2 CPUs, like the CI machine)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}},
        )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def ray_address(ray_local) -> str:
    """The address of the session's Ray, for job subprocesses (kill tests) to connect to instead of starting their own."""
    return ray_local.get_runtime_context().gcs_address


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON lines (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def demo_train_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 training pairs (Tevatron JSONL, 12 rounds of English + the 7 paper languages) from the earlier, smaller
    demo set, kept as test data: the small trainings' step counts and learning thresholds are written for them."""
    rows = [json.loads(line) for line in (REPO / "tests" / "data" / "demo-train-96.jsonl").read_text(encoding="utf-8").splitlines()]
    return write_jsonl(tmp_path_factory.mktemp("train-data") / "train.jsonl", rows)


@pytest.fixture
def demo_overrides(tmp_path: Path) -> list[str]:
    """--set overrides that point the demo config at a fresh run directory."""
    return [f"run_dir={tmp_path / 'run'}"]


@pytest.fixture(scope="session")
def demo_passage_rows() -> list[dict]:
    """The demo corpus rows {docid, title, text}, in file order."""
    with (DEMO / "passages.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.fixture(scope="session")
def make_corpus_run(tmp_path_factory: pytest.TempPathFactory):
    """Build an ingested-looking run: corpus shards written with RunDir.write_table plus ingest markers.

    make(rows, num_shards=2, run_dir=None) -> RunDir; rows {docid, title, text} are split into contiguous
    shards; without run_dir a fresh temporary folder is used.
    """
    import pyarrow as pa

    from xqg.rundir import RunDir, shard_name

    def make(rows: list[dict], num_shards: int = 2, run_dir: Path | str | None = None) -> RunDir:
        run = RunDir(str(run_dir or tmp_path_factory.mktemp("corpus-run") / "run"))
        for s in range(num_shards):
            part = rows[s * len(rows) // num_shards:(s + 1) * len(rows) // num_shards]
            table = pa.table(
                {k: [r.get(k) for r in part] for k in ("docid", "title", "text")},
                schema=pa.schema([("docid", pa.string()), ("title", pa.string()), ("text", pa.string())]),
            )
            run.write_table(f"corpus/{shard_name(s)}/part-00000.parquet", table)
            run.mark_done("ingest", shard_name(s), rows_out=len(part))
        return run

    return make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that starts Ray `ray` (the fast tier leaves them out); run `e2e` tests last: they shut down
    the session's in-process Ray and start a `ray start` cluster."""
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()) or item.get_closest_marker("slow") \
                or item.get_closest_marker("e2e") or "cluster" in item.path.parent.name:
            item.add_marker(pytest.mark.ray)
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
