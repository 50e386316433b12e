"""docs/configuration.md: generated from the config models, complete, and never out of date."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from helpers.paths import REPO
from xqg.config import Config
from xqg.docs_config import COMMAND, options, render, sections

PAGE = REPO / "docs" / "configuration.md"


def test_the_committed_page_is_up_to_date() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), f"docs/configuration.md is out of date: run {COMMAND}"


@pytest.mark.parametrize("key, model", [(k, m) for k, m, _ in sections()], ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_says_what_it_does(key: str, model: type[BaseModel]) -> None:
    missing = [name for name, field in options(model) if not (field.description or "").strip()]
    assert not missing, f"{key or 'top level'}: add Field(description=...) to {missing} in xqg/config.py"


def test_every_option_of_the_config_tree_is_on_the_page() -> None:
    page = render()

    def leaves(model: type[BaseModel], prefix: str) -> list[str]:
        out = []
        for name, field in model.model_fields.items():
            sub = field.annotation
            args = getattr(sub, "__args__", ())
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out += leaves(sub, f"{prefix}{name}.")
            elif args and isinstance(args[0], type) and issubclass(args[0], BaseModel) and str(sub).startswith("list"):
                out += leaves(args[0], f"{prefix}{name}[].")
            else:
                out.append(f"{prefix}{name}")
        return out

    keys = leaves(Config, "")
    assert "generate.temperature" in keys and "queries[].path" in keys and "train_dr.xqg_pairs.ratio" in keys
    assert [k for k in keys if f"| `{k}` |" not in page] == []


def test_defaults_and_types_are_the_models_own() -> None:
    page = render()
    assert '| `fuse.alpha` | number (>= 0, &lt;= 1) | `0.01` |' in page
    assert '| `generate.backend` | "ctranslate2" or "hf" or "vllm" | `"ctranslate2"` |' in page
    assert '| `queries[].name` | string | required |' in page
