"""The whole method as one job: every stage in order, each skipping what is already complete."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from xqg.config import Config
from xqg.layout import STAGES, index_names
from xqg.summary import StageSummary


@dataclass(frozen=True)
class Step:
    """One stage of the pipeline and how to run it; a bi-encoder stage runs once per setting (config.settings)."""

    stage: str
    run: Callable[[Config], list[StageSummary]]
    per_setting: bool = False


def setting_configs(config: Config) -> list[Config]:
    """The config of every bi-encoder setting: the main one, then each of config.settings (unless one is chosen)."""
    if config.setting is not None:
        return [config]
    return [config, *(config.for_setting(s.name) for s in config.settings)]


def _ingest(config: Config) -> list[StageSummary]:
    from xqg.ingest.stage import run_ingest

    return [run_ingest(config)]


def _train_qg(config: Config) -> list[StageSummary]:
    if config.generate.model is not None:  # a given generator (e.g. the paper's released one) needs no training
        return [StageSummary(stage="train_qg", message=f"skipped: generate.model is {config.generate.model!r}")]
    from xqg.train.qg import run_train_qg

    return [run_train_qg(config)]


def _generate(config: Config) -> list[StageSummary]:
    from xqg.generate.stage import run_generate

    return [run_generate(config)]


def _train_dr(config: Config) -> list[StageSummary]:
    if config.encode.model is not None:
        return [StageSummary(stage="train_dr", message=f"skipped: encode.model is {config.encode.model!r}")]
    from xqg.train.dr import run_train_dr

    return [run_train_dr(config)]


def _encode(config: Config) -> list[StageSummary]:
    from xqg.encode.stage import run_encode

    # One pool of encoder actors for passages, generated queries and query sets: each actor loads the encoder once,
    # not once per target (three pools would start, scale out and load the models three times).
    return [run_encode(config, "all")]


def _tune(config: Config) -> list[StageSummary]:
    from xqg.tune import run_tune

    return [run_tune(config)]


def _fuse(config: Config) -> list[StageSummary]:
    from xqg.tune import run_fuse_sets

    return run_fuse_sets(config)


def _index(config: Config) -> list[StageSummary]:
    from xqg.index.stage import run_index

    return [run_index(config, name) for name in index_names(config)]


def _search(config: Config) -> list[StageSummary]:
    from xqg.search.stage import run_search

    return [run_search(config, name) for name in index_names(config)]


def _evaluate(config: Config) -> list[StageSummary]:
    from xqg.evaluate.stage import run_evaluate

    return [run_evaluate(config)]


PIPELINE: tuple[Step, ...] = (
    Step("ingest", _ingest),
    Step("train_qg", _train_qg),
    Step("generate", _generate),
    Step("train_dr", _train_dr, per_setting=True),
    Step("encode", _encode, per_setting=True),
    Step("tune", _tune, per_setting=True),  # a summary saying it is skipped when no tune.query_set is configured
    Step("fuse", _fuse, per_setting=True),
    Step("index", _index, per_setting=True),
    Step("search", _search, per_setting=True),
    Step("evaluate", _evaluate),  # one report of every setting
)


def select_steps(start: str | None = None, only: list[str] | None = None) -> list[Step]:
    """The steps to run: all, from one stage on (--from), or a chosen few (--only)."""
    for name in [start, *(only or [])]:
        if name is not None and name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    if only:
        return [s for s in PIPELINE if s.stage in only]
    if start:
        return list(PIPELINE[STAGES.index(start):])
    return list(PIPELINE)


def _labelled(summaries: list[StageSummary], setting: str | None) -> list[StageSummary]:
    """A named setting's summaries say which setting they are of."""
    return summaries if setting is None else [replace(s, stage=f"{s.stage} [{setting}]") for s in summaries]


def run_pipeline(config: Config, start: str | None = None, only: list[str] | None = None) -> list[StageSummary]:
    """Run the selected stages in order, printing each stage's summary; return them plus an overall one."""
    began = time.perf_counter()
    summaries: list[StageSummary] = []
    report = ""
    for step in select_steps(start, only):
        print(f"\n>>> {step.stage}", flush=True)
        configs = setting_configs(config) if step.per_setting else [config]
        for s in (s for c in configs for s in _labelled(step.run(c), c.setting)):
            if s.stage == "evaluate":  # the report table goes last, under the overall summary
                report, s = s.message, replace(s, message="")
            print(s.render(), flush=True)
            if not s.balanced:
                raise RuntimeError(f"{s.stage}: rows in != rows out + rejected; stopping the pipeline")
            if not s.ok:
                raise RuntimeError(f"{s.stage}: {s.units_failed} unit(s) failed and are unmarked; stopping the pipeline")
            summaries.append(s)
    done = sum(s.units_done for s in summaries)
    overall = StageSummary(
        stage="pipeline",
        units_done=done,
        units_skipped=sum(s.units_skipped for s in summaries),
        units_stale=sum(s.units_stale for s in summaries),
        seconds=time.perf_counter() - began,
        message="\n".join(
            m for m in ("nothing to do: every stage was already complete" if done == 0 else "", report) if m
        ),
    )
    return [*summaries, overall]
