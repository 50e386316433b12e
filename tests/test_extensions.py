"""A generation backend and a corpus format are each one file: docs/add-a-backend.md's examples, saved into their
packages, work through the config, the registries and the code that uses them, with no other file changed."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.paths import REPO
from xqg.config import ConfigError, load_config
from xqg.registry import Registry, import_package

PAGE = REPO / "docs" / "add-a-backend.md"


def example(n: int) -> str:
    """The n-th Python block of the page (0: the backend, 1: the corpus format), as a whole file."""
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)[n]


def installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str, registry: Registry, name: str, text: str
) -> Iterator[None]:
    """text as module `name` of package, for one test: a folder added to the package's path, the registry
    restored afterwards."""
    import_package(package)  # the shipped ones register first: the copy restored afterwards must hold them
    folder = tmp_path / package
    folder.mkdir()
    (folder / f"{name}.py").write_text(text, encoding="utf-8")
    pkg = importlib.import_module(package)
    monkeypatch.setattr(pkg, "__path__", [*pkg.__path__, str(folder)])
    monkeypatch.setattr(registry, "registered", dict(registry.registered))
    importlib.invalidate_caches()
    yield
    sys.modules.pop(f"{package}.{name}", None)


@pytest.fixture
def last_words(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from xqg.generate.backends.base import BACKENDS

    yield from installed(tmp_path, monkeypatch, "xqg.generate.backends", BACKENDS, "last_words", example(0))


@pytest.fixture
def lines_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from xqg.ingest.formats.base import FORMATS

    yield from installed(tmp_path, monkeypatch, "xqg.ingest.formats", FORMATS, "lines", example(1))


def test_a_backend_is_one_file(last_words: None, tiny_mt5_dir: str, tmp_path: Path) -> None:
    from xqg.docs_config import render
    from xqg.generate.backends import backend_names, make_backend, prepare_backend
    from xqg.generate.backends.base import SamplingSettings
    from xqg.rundir import RunDir

    assert backend_names() == ["ctranslate2", "hf", "last_words", "vllm"]
    sets = ["generate.backend=last_words", f"generate.model={tiny_mt5_dir}", "generate.num_queries=2"]
    gen = load_config(None, sets).generate
    with pytest.raises(ConfigError, match="generate.backend 'last_words' computes nothing: compute_type 'int8'"):
        load_config(None, [*sets, "generate.compute_type=int8"])  # the backend's own config-time check
    assert '| `generate.backend` | "ctranslate2" or "hf" or "last_words" or "vllm" |' in render()
    extra = prepare_backend(gen, RunDir(str(tmp_path / "run")), tiny_mt5_dir, use_gpu=False)
    assert extra == {"prefix": "Q:"}
    backend = make_backend(gen.backend, tiny_mt5_dir, SamplingSettings.from_config(gen), threads=1, **extra)
    ids = backend.tokenize(["Generate a Finnish question for this passage: Helsinki is the capital"])
    assert backend.generate(ids, seeds=[7]) == [["Q: capital", "Q: the capital"]]


def test_an_unknown_backend_is_a_config_error_naming_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"--set generate.backend: unknown generation backend 'last_words'; "
                                          r"choose one of \['ctranslate2', 'hf', 'vllm'\]"):
        load_config(None, ["generate.backend=last_words"])


def test_a_corpus_format_is_one_file(lines_format: None, tmp_path: Path) -> None:
    from xqg.docs_config import render
    from xqg.ingest.corpus import detect_format, format_names, read_passages

    assert format_names() == ["dpr_tsv", "jsonl", "lines", "parquet", "xquad"]
    path = tmp_path / "corpus.lines.txt"
    path.write_bytes(b"first passage\n\n   \nbad \xff byte\nlast one\n")
    assert load_config(None, [f"corpus.path={path}"]).corpus.format == "auto"
    assert load_config(None, ["corpus.format=lines"]).corpus.format == "lines"
    assert '"auto" or "dpr_tsv" or "jsonl" or "lines" or "parquet" or "xquad"' in render()
    assert detect_format(str(path)) == "lines"
    blocks = list(read_passages(str(path)))
    rows = [r for b in blocks for r in b.table.to_pylist()]
    assert rows == [
        {"docid": "0", "title": "", "text": "first passage"}, {"docid": "3", "title": "", "text": "last one"},
    ]
    assert [(r["key"], r["reason"]) for b in blocks for r in b.rejects] == [
        ("row 2", "undecodable line (bad UTF-8)"), ("1", "empty text"),
    ]


def test_an_unknown_corpus_format_is_a_config_error_naming_the_registered_ones(tmp_path: Path) -> None:
    from xqg.ingest.corpus import detect_format

    with pytest.raises(ConfigError, match=r"--set corpus.format: unknown corpus format 'lines'; "
                                          r"choose one of \['auto', 'dpr_tsv', 'jsonl', 'parquet', 'xquad'\]"):
        load_config(None, ["corpus.format=lines"])
    (tmp_path / "corpus.lines.txt").write_text("a passage\n")
    with pytest.raises(ValueError, match=r"name it \.tsv/\.tsv\.gz, \.jsonl/\.jsonl\.gz or \.parquet, point at a "
                                         r"folder holding xquad\.en\.json, or set corpus\.format"):
        detect_format(str(tmp_path / "corpus.lines.txt"))


def test_a_second_backend_under_a_taken_name_is_refused() -> None:
    from xqg.generate.backends import backend_class
    from xqg.generate.backends.base import register

    hf = backend_class("hf")

    class Imposter(hf):  # type: ignore[valid-type, misc]
        name = "hf"

    with pytest.raises(ValueError, match="two generation backends named 'hf'"):
        register(Imposter)
    assert backend_class("hf") is hf
