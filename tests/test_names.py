"""Every name that becomes a path is checked in one place: nothing a user types leads outside the run."""

from __future__ import annotations

from pathlib import Path

import pytest

from xqg.config import ConfigError, load_config
from xqg.layout import index_dir, queries_unit, run_file, run_name
from xqg.models.resolve import localize, run_ref
from xqg.names import check_name, check_run_path
from xqg.rundir import RunDir

CRAFTED = ["../x", "..", "a/b", "/abs", ".hidden", "a\\b", "nul\x00", " padded", "tab\tname", ""]


@pytest.mark.parametrize("bad", CRAFTED)
def test_crafted_names_are_refused_everywhere(bad):
    with pytest.raises(ValueError, match="plain name"):
        check_name("index", bad)
    for make in (index_dir, queries_unit, lambda n: run_file(n), lambda n: run_name("baseline", n, "dev")):
        with pytest.raises(ValueError):
            make(bad)


def test_config_names_are_checked_when_the_config_loads():
    with pytest.raises(ConfigError, match="fuse.name"):
        load_config(None, ["fuse.name=../../etc"])
    with pytest.raises(ConfigError, match="queries.0.name"):
        load_config(None, ["queries=[{name: ../../etc, path: q.jsonl}]"])
    with pytest.raises(ConfigError, match="search.query_set"):
        load_config(None, ["search.query_set=../../etc"])


def test_plain_names_pass_and_reserved_ones_do_not():
    assert check_name("index", "xqg-a0.02_k3") == "xqg-a0.02_k3"
    assert index_dir("passages") == "index/baseline" and run_name("xqg", "extra", "dev") == "xqg.extra"
    with pytest.raises(ConfigError, match="reserved"):
        load_config(None, ["fuse.name=baseline"])


def test_model_refs_stay_inside_the_run(tmp_path: Path):
    run = RunDir(str(tmp_path / "run"))
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    for bad in ("run:../secret", "run:models/../../secret", "run:/etc", "run:"):
        with pytest.raises(ValueError, match="inside the run directory|plain name"):
            localize(bad, run)
    with pytest.raises(ValueError):
        run_ref("../secret")
    assert check_run_path("model reference", "models/ct2/abc") == "models/ct2/abc"


def test_search_with_a_crafted_index_name_writes_nothing_anywhere(tmp_path: Path):
    from xqg.search.stage import run_search

    before = sorted(tmp_path.rglob("*"))
    config = load_config(None, [f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(ValueError, match="plain name"):
        run_search(config, "../../x/index/xqg")
    assert sorted(tmp_path.rglob("*")) == before
