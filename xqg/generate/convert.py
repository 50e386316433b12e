"""Convert a Hugging Face generator to CTranslate2 once (cached, locked against concurrent converters); publish it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xqg.rundir import RunDir

log = logging.getLogger(__name__)

SOURCE_FILE = "xqg_source.json"
# How models are converted: a change here converts cached models again (v2: mT5's output scale as transformers').
CONVERT_RULES = "mt5-output-scale-v2"
# Types CTranslate2 can store weights in; 'auto'/'default' keep the saved precision and pick at load time.
_QUANTIZATIONS = {"int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"}


def source_fingerprint(model: str) -> dict[str, object]:
    """What identifies the source model: the hub name, or the local folder's files with sizes and mtimes."""
    path = Path(model)
    if not path.is_dir():
        return {"model": model, "rules": CONVERT_RULES}
    files = {
        p.name: [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(path.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }
    return {"model": str(path.resolve()), "files": files, "rules": CONVERT_RULES}


def ct2_dir_for(model: str, cache_root: str | Path, compute_type: str) -> Path:
    """Cache folder of a model's conversion: <cache_root>/<name>-<hash of its location>-<compute_type>."""
    where = str(Path(model).resolve()) if Path(model).is_dir() else model
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(model.rstrip("/")).name or "model")
    digest = hashlib.sha256(where.encode()).hexdigest()[:8]
    return Path(cache_root) / f"{name}-{digest}-{compute_type}"


def mt5_scales_tied_outputs() -> bool:
    """Whether transformers' MT5ForConditionalGeneration scales decoder outputs by d_model**-0.5 before lm_head."""
    import inspect

    from transformers import MT5ForConditionalGeneration

    return "model_dim**-0.5" in inspect.getsource(MT5ForConditionalGeneration.forward).replace(" ", "")


@contextlib.contextmanager
def _mt5_outputs_as_transformers() -> Iterator[None]:
    """Convert mT5 with the output scaling transformers applies, for the duration of the block.

    CTranslate2's MT5 loader (its T5 one) scales decoder outputs by d_model**-0.5 whenever the config says
    tie_word_embeddings; transformers 5 forces that flag on for mT5 but no longer scales. Argmax is unchanged
    (greedy decoding agrees), but every logit is d_model**-0.5 too small: top-k sampling of a d_model-128 model
    drew near-uniformly from the 10 best tokens and wrote mixed-script garbage. The loader is swapped in
    CTranslate2's registry only while converting (on the driver, under the conversion lock).
    """
    from ctranslate2.converters import transformers as ct2_hf
    from ctranslate2.specs import model_spec

    original = ct2_hf._MODEL_LOADERS.get("MT5Config")
    if original is None or mt5_scales_tied_outputs():
        yield
        return

    class UnscaledMT5Loader(type(original)):  # type: ignore[misc]
        def get_model_spec(self, model: Any) -> Any:
            spec = super().get_model_spec(model)
            spec.decoder.scale_outputs = model_spec.OPTIONAL  # as transformers' forward: lm_head on the unscaled decoder output
            return spec

    ct2_hf._MODEL_LOADERS["MT5Config"] = UnscaledMT5Loader()
    try:
        yield
    finally:
        ct2_hf._MODEL_LOADERS["MT5Config"] = original


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
        with _mt5_outputs_as_transformers():
            TransformersConverter(model, trust_remote_code=trust_remote_code).convert(str(tmp), quantization=quantization)
        (tmp / SOURCE_FILE).write_text(json.dumps(fingerprint, sort_keys=True), encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    return str(out)


def convert_for_run(run: RunDir, model_path: str, compute_type: str, trust_remote_code: bool) -> str:
    """The run's conversion of model_path: a folder under models/ct2, or a "run:" ref for a non-local run."""
    if run.is_local:
        # The lock in ensure_ct2_model guards against a concurrent job converting the same model.
        target = ct2_dir_for(model_path, run.path("models", "ct2"), compute_type)
        return ensure_ct2_model(model_path, target, compute_type, trust_remote_code)
    return publish_ct2(run, model_path, compute_type, trust_remote_code)


def publish_ct2(run: RunDir, model_path: str, compute_type: str, trust_remote_code: bool) -> str:
    """A non-local run: convert in a local temp folder, publish to models/ct2/<name>; return its "run:" ref."""
    from xqg.models.resolve import localize, run_ref

    source = localize(model_path, run)
    rel = posixpath.join("models", "ct2", ct2_dir_for(model_path, "", compute_type).name)
    marker = posixpath.join(rel, SOURCE_FILE)
    # Reuse a published conversion of the same source files (same node cache: same paths and mtimes).
    if run.exists(rel, "model.bin") and run.exists(marker) and run.read_json(marker) == source_fingerprint(source):
        return run_ref(rel)
    with tempfile.TemporaryDirectory(prefix="xqg-ct2-") as tmp:
        out = ensure_ct2_model(source, Path(tmp) / "ct2", compute_type, trust_remote_code)
        run.publish_dir(out, rel)
    return run_ref(rel)
