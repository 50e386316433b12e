"""The stage registry: every module of this package declares one pipeline stage as `STAGE = Stage(...)`.

A stage is one file here, named after the stage (xqg/stages/generate.py declares `generate`, which users run as
`xqg generate` or `python jobs/generate.py`). The pipeline (`xqg run`), the `xqg` command line and jobs/ read the
stages from `stages()`, which finds the modules of this package by listing it: adding a stage touches no other
module. A declaration is light (it imports its stage's code inside its run functions), so `xqg --help` imports
no torch, Ray or pyarrow. The package itself imports none of its modules by name; they import only this file's
types, so reading the registry creates no import cycle.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from xqg.summary import StageSummary

if TYPE_CHECKING:
    from xqg.config import Config

StageResult = StageSummary | list[StageSummary]


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: its name, its place in the pipeline, how it runs from a config, its command line."""

    name: str  # = its module xqg/stages/<name>.py, jobs/<name>.py, `xqg <name>`, markers/<name>/
    order: int  # the pipeline runs stages by ascending order (gaps leave room for a stage in between)
    help: str  # one line: `xqg --help`, the stage's --help and its jobs/<name>.py
    run: Callable[[Config, argparse.Namespace], StageResult]  # `xqg <name> ...` with its parsed arguments
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None  # its selectors (--shards, ...)
    needs_ray: bool = True
    per_setting: bool = False  # a bi-encoder stage: `xqg run` runs it once per setting (config.settings)
    # How `xqg run` runs it, when that differs from its command with default arguments (e.g. a stage it skips).
    in_pipeline: Callable[[Config], StageResult] | None = None

    def default_arguments(self) -> argparse.Namespace:
        """The stage's selectors as its command line has them when none is given."""
        parser = argparse.ArgumentParser(prog=self.name, add_help=False)
        if self.add_arguments:
            self.add_arguments(parser)
        return parser.parse_args([])

    def run_in_pipeline(self, config: Config) -> list[StageSummary]:
        """The stage's summaries as `xqg run` runs it for one config."""
        result = self.in_pipeline(config) if self.in_pipeline else self.run(config, self.default_arguments())
        return result if isinstance(result, list) else [result]


def discover(package: str) -> tuple[Stage, ...]:
    """The STAGE of each module of a package, in pipeline order; a module without one, a module not named after
    its stage, or two stages of the same order is an error."""
    found: list[Stage] = []
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        module = importlib.import_module(f"{package}.{info.name}")
        stage = getattr(module, "STAGE", None)
        if not isinstance(stage, Stage):
            raise TypeError(f"{module.__name__} declares no STAGE = Stage(...): every module of {package} is a stage")
        if stage.name != info.name:
            raise ValueError(f"{module.__name__} declares stage {stage.name!r}: a stage's module is named after it")
        found.append(stage)
    found.sort(key=lambda s: s.order)
    for a, b in zip(found, found[1:]):
        if a.order == b.order:
            raise ValueError(f"stages {a.name!r} and {b.name!r} have the same order {a.order}: the pipeline needs one")
    return tuple(found)


@functools.cache
def stages() -> tuple[Stage, ...]:
    """Every registered stage in pipeline order: the STAGE of each module of this package."""
    return discover(__name__)


def stage_names() -> tuple[str, ...]:
    """The stages' names in pipeline order."""
    return tuple(s.name for s in stages())


def get_stage(name: str) -> Stage:
    """The stage registered under name; ValueError naming every stage otherwise."""
    for stage in stages():
        if stage.name == name:
            return stage
    raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(stage_names())}")
