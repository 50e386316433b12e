"""Config builders: the demo config at a run directory, the demo cut small, a config of only inputs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from helpers.paths import DEMO, DEMO_CONFIG
from xqg.config import Config, load_config


def demo_config(run_dir: Path | str, *overrides: str) -> Config:
    """configs/demo.yaml with its run directory at run_dir and the further --set overrides."""
    return load_config(DEMO_CONFIG, [f"run_dir={run_dir}", *overrides])


def demo_subset(folder: Path, n: int, dev_on_subset: bool) -> list[str]:
    """--set overrides that cut the demo to its first n passages (of 2,000) and one dev query set, no settings and
    no tune stage; the dev set is all of the demo's, or only the questions on those passages. Files go in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    passages, dev = folder / "passages.jsonl", DEMO / "dev.jsonl"
    if not passages.exists():
        lines = (DEMO / "passages.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        passages.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if dev_on_subset:
        dev = folder / "dev.jsonl"
        if not dev.exists():
            docids = {json.loads(line)["docid"] for line in passages.read_text(encoding="utf-8").splitlines()}
            kept = [line for line in (DEMO / "dev.jsonl").read_text(encoding="utf-8").splitlines()
                    if json.loads(line)["docid"] in docids]
            dev.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return [f"corpus.path={passages}", f"queries=[{{name: dev, path: '{dev}', format: xor_tydi}}]", "settings=[]",
            "tune.query_set="]  # no held-out set: no tune stage


def ingest_config(folder: Path, corpus: Path | str | None, num_shards: int, fmt: str = "auto",
                  queries: list[dict] | None = None, run_dir: str | None = None) -> Config:
    """A config of only a corpus and query sets, written to folder/config.yaml and loaded; the run in folder/run."""
    tree = {
        "run_dir": run_dir or str(folder / "run"),
        "corpus": {"path": str(corpus) if corpus is not None else None, "num_shards": num_shards, "format": fmt},
        "queries": queries or [],
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return load_config(path)
