"""Turn a config model reference into something from_pretrained loads."""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterable
from pathlib import Path

from xqg.config import ModelRef, ScratchModel
from xqg.rundir import RunDir


def scratch_dir(run: RunDir, spec: ScratchModel) -> str:
    """Where a from-scratch spec is built inside the run (one folder per distinct spec)."""
    return run.local_path(posixpath.join("models", "scratch", f"{spec.scratch}-{spec.fingerprint()}"))


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
    """A hub name or local folder as given; a scratch spec built once into the run and returned as a folder.

    default_texts supplies tokenizer training text when the spec names no files; call this on the
    driver before starting actors so that only one process builds the model.
    """
    if isinstance(ref, str):
        return ref
    out = scratch_dir(run, ref)
    if (Path(out) / "config.json").exists():
        return out
    from xqg.models.tiny import build_scratch

    texts = read_text_files(ref.tokenizer_texts) if ref.tokenizer_texts else default_texts()
    build_scratch(ref, texts, out)
    return out
