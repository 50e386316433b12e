"""docs/configuration.md, generated from the config models: every option with its type, default and meaning.

    python -m xqg.docs_config > docs/configuration.md

The meanings are the models' Field descriptions (xqg/config.py), so the page cannot drift from the code: a test
compares the committed file with render().
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from xqg.config import Choices, Config, ScratchModel

COMMAND = "python -m xqg.docs_config > docs/configuration.md"

INTRO = f"""\
# Configuration

Every option of a run's config, its default and what it does. A config is a YAML file
(`xqg <stage> --config FILE`); `--set key=value` overrides any option, by its dotted key (`--set
generate.num_queries=3`; a list item by index: `--set queries.0.path=dev.jsonl`). Options left out take the
defaults below, which follow the paper (Zhuang, Shou & Zuccon, SIGIR 2023) and the code it builds on (DSI-QG,
Tevatron).

A config is checked before any work starts, and every problem is one line naming its key (exit status 2): an
unknown key, a value of the wrong type (an integer option takes no `true` and no `2.0`), a number out of range,
an infinite or NaN number, a list index past the list's end.

Generated from the field descriptions in `xqg/config.py` by `{COMMAND}`;
edit those, not this page.
"""


def type_name(annotation: Any) -> str:
    """A reader's name for a field type: 'integer', '"cls" or "mean"', 'list of string or null', ..."""
    if annotation is type(None):
        return "null"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if annotation is ScratchModel:
        return "scratch model"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(annotation, str(annotation))


def field_type(field: FieldInfo) -> str:
    """type_name of a field; the registered choices of a Choices option (backends, corpus formats)."""
    choices = next((m for m in field.metadata if isinstance(m, Choices)), None)
    return " or ".join(json.dumps(n) for n in choices.names()) if choices else type_name(field.annotation)


def bounds(field: FieldInfo) -> str:
    """The field's numeric range, e.g. '>= 1, <= 16' ('' when unbounded)."""
    out = []
    for m in field.metadata:  # annotated_types' Ge(ge=1), Le(le=16), ... as pydantic keeps them
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sign} {getattr(m, attr)}")
    return ", ".join(out)


def default_text(field: FieldInfo) -> str:
    """The default as it would be written in YAML ('required' when there is none)."""
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _text(text: str) -> str:
    """Model text as Markdown: '<name>' would be read as an HTML tag and vanish."""
    return text.replace("<", "&lt;")


def _cell(text: str) -> str:
    """Model text in a table cell: one line, no column separators."""
    return _text(text).replace("|", "\\|").replace("\n", " ")


def _model_of(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(section model, whether a list of them) for a field holding a section or a list of sections."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], BaseModel):
        return args[0], True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    return None, False


def sections(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, type[BaseModel], bool]]:
    """(dotted key, model, is a list) of the top level and every nested section, in field order."""
    if not prefix:
        yield "", model, False
    for name, field in model.model_fields.items():
        sub, is_list = _model_of(field.annotation)
        if sub is not None:
            key = f"{prefix}{name}"
            yield key, sub, is_list
            yield from sections(sub, f"{key}[]." if is_list else f"{key}.")
    if not prefix:
        yield "<model>", ScratchModel, False  # train_qg.model, generate.model, ... may be a scratch spec


def options(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    """(name, field) of a model's own options (nested sections have their own table)."""
    for name, field in model.model_fields.items():
        if _model_of(field.annotation)[0] is None:
            yield name, field


def render() -> str:
    """The whole page, Markdown."""
    parts = [INTRO]
    for key, model, is_list in sections():
        title = "Top level" if not key else ("Scratch models" if key == "<model>" else f"`{key}`")
        doc = inspect.cleandoc(model.__doc__ or "")
        if key == "<model>":
            doc += ("\n\nA `model` option (train_qg, generate, train_dr, encode) takes a hub name, a local folder or "
                    "this mapping, e.g. `model: {scratch: bert, d_model: 64}`.")
        elif is_list:
            doc += f"\n\n`{key}` is a list; each item has these options."
        parts.append(f"## {title}\n\n{_text(doc)}\n")
        rows = ["| Option | Type | Default | Meaning |", "|---|---|---|---|"]
        for name, field in options(model):
            dotted = f"{key}{'[]' if is_list else ''}.{name}" if key else name
            kind = field_type(field) + (f" ({bounds(field)})" if bounds(field) else "")
            rows.append(f"| `{dotted}` | {_cell(kind)} | {_cell(default_text(field))} | {_cell(field.description or '')} |")
        parts.append("\n".join(rows) + "\n")
    return "\n".join(parts)


def main() -> None:
    """Write the page to stdout."""
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
