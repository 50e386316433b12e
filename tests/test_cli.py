"""The job convention: exit codes and messages of `xqg <stage>` and jobs/<stage>.py, stage selection of the
pipeline, the command registry both read."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import DEMO_CONFIG, REPO
from xqg.config import ConfigError, load_config
from xqg.pipeline import select_steps
from xqg.stages import stage_names

STAGES = stage_names()


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
    assert [s.name for s in select_steps()] == list(STAGES)
    assert [s.name for s in select_steps(start="fuse")] == ["fuse", "index", "search", "evaluate"]
    assert [s.name for s in select_steps(only=["evaluate", "ingest"])] == ["ingest", "evaluate"]
    with pytest.raises(ValueError, match="unknown stage 'fusion'"):
        select_steps(only=["fusion"])


def test_run_dir_that_is_a_file_is_one_readable_line(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run")
    out = _job("jobs/fuse.py", "--set", f"run_dir={a_file}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [f"error: run_dir {str(a_file)!r} is a file, not a folder: choose a folder for the run directory"]


def test_set_value_that_is_not_yaml_is_taken_as_the_string() -> None:
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


# ---- the `xqg` console script and the command registry --------------------------------------------------------
def _xqg() -> str:
    """The installed console script: next to this interpreter (the venv's bin/), else on PATH."""
    found = shutil.which("xqg", path=str(Path(sys.executable).parent)) or shutil.which("xqg")
    assert found, "no `xqg` console script: pip install -e . (pyproject.toml [project.scripts])"
    return found


def _run_xqg(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([_xqg(), *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_xqg_help_lists_every_registered_command() -> None:
    from xqg.commands import COMMANDS

    out = _run_xqg("--help")
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^    (\w+)", out.stdout, flags=re.M)
    assert listed == list(COMMANDS)  # ingest ... export, run: built from the registry, in its order
    assert "2 config or usage error" in out.stdout


def _usage(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """xqg.cli.main in-process (what the console script runs) for --help and usage errors: (status, out, err)."""
    from xqg.cli import main

    with pytest.raises(SystemExit) as exited:
        main(argv)
    captured = capsys.readouterr()
    return exited.value.code, captured.out, captured.err


@pytest.mark.parametrize(
    ("command", "selectors"),
    [
        ("generate", ["--languages", "--shards", "--encode"]),
        ("encode", ["--target", "--languages", "--shards", "--num-queries"]),
        ("index", ["--name"]),
        ("search", ["--index", "--queries"]),
        ("export", ["--index", "--queries"]),
        ("run", ["--from", "--only"]),
        ("pipeline", ["--from", "--only"]),
        ("fuse", []),
    ],
)
def test_stage_help_lists_its_selectors_and_the_shared_options(
    command: str, selectors: list[str], capsys: pytest.CaptureFixture
) -> None:
    status, out, _ = _usage([command, "--help"], capsys)
    assert status == 0
    option_lines = [ln for ln in out.split("options:", 1)[1].splitlines() if ln.startswith("  -")]
    options = {o for ln in option_lines for o in re.findall(r"(?<![\w-])--[\w-]+", ln)}
    assert options == {"--help", "--config", "--keep-stale", "--set", *selectors}


def test_the_installed_script_shows_a_stage_help() -> None:
    out = _run_xqg("generate", "--help")
    assert out.returncode == 0 and out.stdout.startswith("usage: xqg generate ")
    assert "--shards SHARDS" in out.stdout and "--languages LANGUAGES" in out.stdout


def test_xqg_runs_a_stage_as_its_job_script_does(tmp_path: Path) -> None:
    # ingest needs no Ray: the console script end to end, from arguments to the stage's summary and exit 0
    run_dir = tmp_path / "run"
    out = _run_xqg("ingest", "--config", str(DEMO_CONFIG), "--set", f"run_dir={run_dir}")
    assert out.returncode == 0, out.stderr
    assert "ingest" in out.stdout and "rows in" in out.stdout
    shards = load_config(DEMO_CONFIG).corpus.num_shards
    assert sorted(p.name for p in (run_dir / "corpus").iterdir()) == [f"shard={i:05d}" for i in range(shards)]


def test_xqg_bad_config_exits_2_with_one_line_per_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\ngenerate:\n  num_queries: true\ncorpus:\n  num_shards: 2.0\n")
    out = _run_xqg("ingest", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"error: {cfg}: corpus.num_shards: expected an integer, got 2.0",
        f"error: {cfg}: generate.num_queries: expected an integer, got a boolean (true)",
    ]
    assert not (tmp_path / "run").exists()


def test_xqg_config_file_that_is_not_utf8_exits_2_naming_it(tmp_path: Path) -> None:
    cfg = tmp_path / "latin1.yaml"
    cfg.write_bytes(b"run_dir: caf\xe9\n")
    out = _run_xqg("ingest", "--config", str(cfg), cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.splitlines() == [f"error: config {cfg} is not UTF-8 text (byte 12: b'\\xe9'): save it as UTF-8"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("queries.3.path=x", "error: --set queries.3.path: index 3 is out of range: queries has 0 item(s)"),
        ("queries.name=x", "error: --set queries.name: queries is a list: address its items by index"),
    ],
)
def test_set_into_a_list_exits_2_not_a_traceback(tmp_path: Path, override: str, message: str) -> None:
    out = _job("jobs/ingest.py", "--set", f"run_dir={tmp_path / 'run'}", "--set", override)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith(message) and len(out.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--shards", "9-3"], "argument --shards: the range '9-3' is reversed (write 3-9)"),
        (["encode", "--shards", ","], "argument --shards: names no shard: ','"),
        (["generate", "--languages", ","], "argument --languages: names no language: ','"),
        (["run", "--only", "fusion"], "argument --only: unknown stage(s) 'fusion'"),
        (["run", "--only", ","], "argument --only: no stage in ','"),
        (["encode", "--num-queries", "0"], "argument --num-queries: expected a whole number >= 1, got '0'"),
    ],
)
def test_selectors_that_select_nothing_are_usage_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    status, _, err = _usage(args, capsys)
    assert status == 2 and message in err


def test_a_reversed_shard_range_exits_2_before_any_work(tmp_path: Path) -> None:
    # the same parser behind `xqg generate` and jobs/generate.py: both exit 2 before Ray starts or a file is written
    for out in (_run_xqg("generate", "--shards", "9-3", "--set", f"run_dir={tmp_path / 'run'}", cwd=tmp_path),
                _job("jobs/generate.py", "--shards", "9-3", "--set", f"run_dir={tmp_path / 'run'}")):
        assert out.returncode == 2
        assert out.stderr.splitlines()[-1].endswith("error: argument --shards: the range '9-3' is reversed (write 3-9)")
    assert not (tmp_path / "run").exists()


def test_every_stage_and_every_job_script_is_a_registered_command() -> None:
    # a new stage is one xqg/stages/<name>.py plus its thin jobs/<name>.py
    from xqg.commands import COMMANDS, get_command

    assert set(STAGES) <= set(COMMANDS)
    scripts = {}
    for path in sorted((REPO / "jobs").glob("*.py")):
        found = re.findall(r'job_main\("(\w+)"\)', path.read_text(encoding="utf-8"))
        assert len(found) == 1, f"{path.name}: a job script calls job_main(<command>) once"
        scripts[path.stem] = get_command(found[0]).name
    assert sorted(scripts.values()) == sorted(COMMANDS), "every command has a jobs/<name>.py for ray job submit"
    assert all(stem in (command, *get_command(command).aliases) for stem, command in scripts.items())


def test_a_command_name_is_registered_once() -> None:
    from xqg.commands import COMMANDS, Command, register

    with pytest.raises(ValueError, match="registered twice"):
        register(Command("pipeline", "again", COMMANDS["run"].run))  # an alias of `run`
