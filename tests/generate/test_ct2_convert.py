"""CTranslate2 conversion: done once, reused, redone when the source model changes, serialised by a lock."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path

from xqg.generate.convert import ct2_dir_for, ensure_ct2_model


def test_conversion_is_cached_and_redone_only_when_the_source_changes(tiny_mt5_dir, tmp_path, caplog):
    model = tmp_path / "model"
    shutil.copytree(tiny_mt5_dir, model)
    out = ct2_dir_for(str(model), tmp_path / "ct2", "int8")
    assert out.name.startswith("model-") and out.name.endswith("-int8")
    with caplog.at_level(logging.INFO, logger="xqg.generate.convert"):
        assert ensure_ct2_model(str(model), out, "int8") == str(out)
        first = (out / "model.bin").stat().st_mtime_ns
        ensure_ct2_model(str(model), out, "int8")
        assert (out / "model.bin").stat().st_mtime_ns == first
        assert sum("to CTranslate2" in r.message for r in caplog.records) == 1
        (model / "generation_config.json").write_text((model / "generation_config.json").read_text() + "\n")
        ensure_ct2_model(str(model), out, "int8")  # e.g. train_qg wrote a newer model in place
        assert sum("to CTranslate2" in r.message for r in caplog.records) == 2
    assert not list(tmp_path.glob("ct2/*.tmp-*")), "no half-written conversion left behind"


def test_concurrent_callers_convert_once(tiny_mt5_dir, tmp_path, caplog):
    out = ct2_dir_for(tiny_mt5_dir, tmp_path / "ct2", "float32")
    results: list[str] = []
    with caplog.at_level(logging.INFO, logger="xqg.generate.convert"):
        threads = [threading.Thread(target=lambda: results.append(ensure_ct2_model(tiny_mt5_dir, out, "float32"))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == [str(out)] * 3 and Path(out, "model.bin").is_file()
    assert sum("to CTranslate2" in r.message for r in caplog.records) == 1
