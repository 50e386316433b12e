"""Convert a Hugging Face generator to CTranslate2 once, cached, safe against concurrent converters."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE_FILE = "xqg_source.json"
# Types CTranslate2 can store weights in; 'auto'/'default' keep the saved precision and pick at load time.
_QUANTIZATIONS = {"int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"}


def source_fingerprint(model: str) -> dict[str, object]:
    """What identifies the source model: the hub name, or the local folder's files with sizes and mtimes."""
    path = Path(model)
    if not path.is_dir():
        return {"model": model}
    files = {
        p.name: [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(path.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }
    return {"model": str(path.resolve()), "files": files}


def ct2_dir_for(model: str, cache_root: str | Path, compute_type: str) -> Path:
    """Cache folder of a model's conversion: <cache_root>/<name>-<hash of its location>-<compute_type>."""
    where = str(Path(model).resolve()) if Path(model).is_dir() else model
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or "model")
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    return Path(cache_root) / f"{name}-{digest}-{compute_type}"


def ensure_ct2_model(model: str, out_dir: str | Path, compute_type: str = "auto", trust_remote_code: bool = False) -> str:
    """Convert `model` into out_dir unless an up-to-date conversion is there; return out_dir.

    A file lock next to out_dir makes concurrent callers wait for one conversion; the result appears by
    rename only when complete, and is redone when the source model's files change.
    """
    from ctranslate2.converters import TransformersConverter

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = source_fingerprint(model)
    with open(out.with_name(out.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = out / SOURCE_FILE
        if (out / "model.bin").is_file() and marker.is_file():
            if json.loads(marker.read_text(encoding="utf-8")) == fingerprint:
                return str(out)
            log.info("source of %s changed; converting again", out)
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        quantization = compute_type if compute_type in _QUANTIZATIONS else None
        log.info("converting %s to CTranslate2 (%s) in %s", model, quantization or "saved precision", out)
        TransformersConverter(model, trust_remote_code=trust_remote_code).convert(str(tmp), quantization=quantization)
        (tmp / SOURCE_FILE).write_text(json.dumps(fingerprint, sort_keys=True), encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return str(out)
