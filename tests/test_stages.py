"""The stage registry: one module per stage under xqg/stages/, read by the pipeline, the CLI and jobs/."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers.paths import REPO
from xqg.stages import Stage, discover, get_stage, stage_names, stages

ORDER = ("ingest", "train_qg", "generate", "train_dr", "encode", "tune", "fuse", "index", "search", "evaluate")


def test_the_stages_run_in_the_pipeline_order() -> None:
    assert stage_names() == ORDER
    assert {s.name for s in stages() if s.per_setting} == {"train_dr", "encode", "tune", "fuse", "index", "search"}
    assert {s.name for s in stages() if not s.needs_ray} == {"ingest", "evaluate"}


def test_every_stage_has_its_job_script_and_its_rows_in_the_docs() -> None:
    # A stage registered without its jobs/<name>.py (what `ray job submit` runs) or its row in the docs fails here.
    table = (REPO / "docs" / "stages.md").read_text(encoding="utf-8")
    listed = re.search(r"^Stages: (.*?)\n\n", (REPO / "README.md").read_text(encoding="utf-8"), re.M | re.S)
    assert listed, "README.md lists the stages on a line starting 'Stages: '"
    for stage in stages():
        script = REPO / "jobs" / f"{stage.name}.py"
        assert script.exists(), f"stage {stage.name} has no {script.relative_to(REPO)}"
        assert re.findall(r'job_main\("(\w+)"\)', script.read_text(encoding="utf-8")) == [stage.name]
        assert re.search(rf"^\| {stage.name} \| `jobs/{stage.name}\.py", table, re.M), f"docs/stages.md: no {stage.name} row"
        assert f"`{stage.name}`" in listed.group(1), f"README.md's stage list lacks {stage.name}"


def test_a_stage_runs_in_the_pipeline_as_its_command_with_no_selectors() -> None:
    assert vars(get_stage("generate").default_arguments()) == {"languages": None, "shards": None, "encode": False}
    assert vars(get_stage("encode").default_arguments()) == {
        "target": "all", "languages": None, "shards": None, "num_queries": None,
    }
    assert vars(get_stage("fuse").default_arguments()) == {}
    with pytest.raises(ValueError, match="unknown stage 'fusion'; stages are: ingest, train_qg"):
        get_stage("fusion")


def test_skipped_training_stages_say_so_in_the_pipeline() -> None:
    from xqg.config import load_config

    config = load_config(None, ["generate.model=some/generator", "encode.model=some/encoder"])
    [qg] = get_stage("train_qg").run_in_pipeline(config)
    [dr] = get_stage("train_dr").run_in_pipeline(config)
    assert qg.message == "skipped: generate.model is 'some/generator'" and qg.units_done == 0
    assert dr.message == "skipped: encode.model is 'some/encoder'" and dr.units_done == 0


def test_reading_the_registry_imports_no_heavy_module() -> None:
    # `xqg --help` reads every stage's declaration: none may pull in torch, Ray or pyarrow.
    code = (
        "import sys\nfrom xqg.cli import build_parser\nbuild_parser()\n"
        "print(sorted({'torch', 'ray', 'pyarrow', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def _package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, modules: dict[str, str]) -> str:
    """A throwaway stage package on sys.path with the given modules (name -> source)."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def _declaring(name: str, order: int) -> str:
    return f"from xqg.stages import Stage\nSTAGE = Stage({name!r}, order={order}, help='h', run=lambda c, a: [])\n"


def test_discovery_orders_the_stages_by_their_order_not_their_names(tmp_path, monkeypatch) -> None:
    package = _package(tmp_path, monkeypatch, "stages_ok", {"b": _declaring("b", 10), "a": _declaring("a", 20)})
    found = discover(package)
    assert [s.name for s in found] == ["b", "a"] and all(isinstance(s, Stage) for s in found)


@pytest.mark.parametrize(
    ("package", "modules", "error", "message"),
    [
        ("no_stage", {"a": "X = 1\n"}, TypeError, "no_stage.a declares no STAGE"),
        ("misnamed", {"a": _declaring("b", 10)}, ValueError, "declares stage 'b': a stage's module is named after it"),
        ("same_order", {"a": _declaring("a", 10), "b": _declaring("b", 10)}, ValueError,
         "'a' and 'b' have the same order 10"),
    ],
)
def test_discovery_refuses_a_module_that_is_no_well_formed_stage(
    tmp_path, monkeypatch, package: str, modules: dict[str, str], error: type, message: str
) -> None:
    with pytest.raises(error, match=re.escape(message)):
        discover(_package(tmp_path, monkeypatch, package, modules))


def test_a_stage_command_parses_its_own_selectors() -> None:
    parser = argparse.ArgumentParser()
    get_stage("encode").add_arguments(parser)  # type: ignore[misc]
    assert parser.parse_args(["--target", "queries", "--num-queries", "3"]).num_queries == 3
