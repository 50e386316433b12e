"""The job convention: exit codes and messages of jobs/<stage>.py, stage selection of the pipeline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xqg.cli import parse_languages, parse_shards
from xqg.config import ConfigError
from xqg.pipeline import STAGES, select_steps

REPO = Path(__file__).resolve().parent.parent


def _job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_bad_config_key_exits_2_and_names_the_key(tmp_path: Path) -> None:
    out = _job("jobs/ingest.py", "--config", "configs/demo.yaml", "--set", f"run_dir={tmp_path}", "--set", "corpus.shards=3")
    assert out.returncode == 2
    assert "corpus.shards: unknown key" in out.stderr


def test_missing_input_exits_nonzero_with_a_message(tmp_path: Path) -> None:
    out = _job("jobs/ingest.py", "--set", f"run_dir={tmp_path}", "--set", f"corpus.path={tmp_path / 'nope.jsonl'}")
    assert out.returncode != 0 and "nope.jsonl" in out.stderr


def test_stage_selection() -> None:
    assert [s.stage for s in select_steps()] == list(STAGES)
    assert [s.stage for s in select_steps(start="fuse")] == ["fuse", "index", "search", "evaluate"]
    assert [s.stage for s in select_steps(only=["evaluate", "ingest"])] == ["ingest", "evaluate"]
    with pytest.raises(ValueError, match="unknown stage 'fusion'"):
        select_steps(only=["fusion"])


def test_selectors() -> None:
    assert parse_shards("0-3,7") == {0, 1, 2, 3, 7}
    assert parse_languages(" SW,id") == ["sw", "id"]
    with pytest.raises(ConfigError, match="--shards"):
        parse_shards("a-b")
    with pytest.raises(ConfigError, match="unknown language code"):
        parse_languages("sw,klingon")


def test_run_dir_that_is_a_file_is_one_readable_line(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run")
    out = _job("jobs/fuse.py", "--set", f"run_dir={a_file}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"error: run_dir {str(a_file)!r} is a file, not a folder: choose a folder for the run directory"]


def test_set_value_that_is_not_yaml_is_taken_as_the_string() -> None:
    from xqg.config import load_config

    config = load_config(None, ["generate.template={language} {text}", "fuse.alpha=0.5"])
    assert config.generate.template == "{language} {text}" and config.fuse.alpha == 0.5
    with pytest.raises(ConfigError, match="generate.template"):  # still validated: {text} is required
        load_config(None, ["generate.template={language} {title"])


def test_a_failed_unit_is_the_last_line_and_the_exit_status(tmp_path: Path, capsys) -> None:
    from xqg.cli import run_job
    from xqg.rundir import RunDir
    from xqg.runner import StageRunner, Unit

    def work(unit: Unit) -> dict:
        if unit.name == "b":
            raise ValueError("corrupt input")
        return {"rows_in": 2, "rows_out": 2, "rejected": 0}

    def stage(config, args):
        runner = StageRunner(RunDir(config.run_dir), "fuse")
        runner.run_local([Unit("a", {}), Unit("b", {}), Unit("c", {})], work)
        return runner.close()

    assert run_job("test", stage, needs_ray=False, argv=["--set", f"run_dir={tmp_path / 'run'}"]) == 1
    assert RunDir(str(tmp_path / "run")).done_units("fuse") == {"a", "c"}, "the others go on"
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == "fuse FAILED: 1 unit(s) left unmarked; rerun to redo them"
