"""Turn a config model reference into something from_pretrained loads."""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from xqg.names import check_run_path

if TYPE_CHECKING:
    from xqg.config import ModelRef, ScratchModel
    from xqg.rundir import RunDir

RUN_PREFIX = "run:"


def run_ref(rel: str) -> str:
    """A model reference relative to the run directory ("run:models/qg"), resolved per process by localize."""
    return RUN_PREFIX + check_run_path("model reference", rel)


def localize(ref: str, run: RunDir) -> str:
    """A folder from_pretrained can load: a "run:" ref downloaded to this node once; others unchanged."""
    if ref.startswith(RUN_PREFIX):
        return run.local_dir(check_run_path("model reference", ref[len(RUN_PREFIX):]))
    return ref


def scratch_rel(spec: ScratchModel) -> str:
    """The run-relative folder of a from-scratch spec (one folder per distinct spec)."""
    return posixpath.join("models", "scratch", f"{spec.scratch}-{spec.fingerprint()}")


def scratch_dir(run: RunDir, spec: ScratchModel) -> str:
    """Where a from-scratch spec lives: its folder for a local run, else its run-relative path."""
    rel = scratch_rel(spec)
    return run.path(rel) if run.is_local else rel


def read_text_files(paths: list[str]) -> Iterable[str]:
    """Texts of tokenizer training files: every string value of JSON lines, or raw lines of other files."""
    import json

    for p in paths:
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if p.endswith((".jsonl", ".json")):
                    try:
                        yield from _strings(json.loads(line))
                    except json.JSONDecodeError:
                        yield line
                else:
                    yield line


def _strings(obj: object) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def resolve_model(ref: ModelRef, run: RunDir, default_texts: Callable[[], Iterable[str]]) -> str:
    """A hub name or local folder as given; a scratch spec built once into the run and returned as a folder
    (a local run) or a "run:" ref (any other run: pass it on and localize it where the model is loaded).

    default_texts supplies tokenizer training text when the spec names no files; call this on the
    driver before starting actors so that only one process builds the model.
    """
    if isinstance(ref, str):
        return ref
    rel = scratch_rel(ref)
    if run.exists(rel, "config.json"):
        return run.path(rel) if run.is_local else run_ref(rel)
    from xqg.models.tiny import build_scratch

    texts = read_text_files(ref.tokenizer_texts) if ref.tokenizer_texts else default_texts()
    if run.is_local:
        out = run.path(rel)
        build_scratch(ref, texts, out)
        return out
    with tempfile.TemporaryDirectory(prefix="xqg-scratch-") as tmp:
        local = str(Path(tmp) / "model")
        build_scratch(ref, texts, local)
        run.publish_dir(local, rel)
    return run_ref(rel)
