"""The whole method as one job: every stage in order, each skipping what is already complete."""

from __future__ import annotations

import time
from dataclasses import replace

from xqg.config import Config
from xqg.stages import Stage, get_stage, stages
from xqg.summary import StageSummary


def setting_configs(config: Config) -> list[Config]:
    """The config of every bi-encoder setting: the main one, then each of config.settings (unless one is chosen)."""
    if config.setting is not None:
        return [config]
    return [config, *(config.for_setting(s.name) for s in config.settings)]


def select_steps(start: str | None = None, only: list[str] | None = None) -> list[Stage]:
    """The stages to run, in order: all, from one stage on (--from), or a chosen few (--only)."""
    for name in [start, *(only or [])]:
        if name is not None:
            get_stage(name)  # ValueError naming the stages
    every = list(stages())
    if only:
        return [s for s in every if s.name in only]
    if start:
        return every[[s.name for s in every].index(start):]
    return every


def _labelled(summaries: list[StageSummary], setting: str | None) -> list[StageSummary]:
    """A named setting's summaries say which setting they are of."""
    return summaries if setting is None else [replace(s, stage=f"{s.stage} [{setting}]") for s in summaries]


def run_pipeline(config: Config, start: str | None = None, only: list[str] | None = None) -> list[StageSummary]:
    """Run the selected stages in order, printing each stage's summary; return them plus an overall one."""
    began = time.perf_counter()
    summaries: list[StageSummary] = []
    report = ""
    for stage in select_steps(start, only):
        print(f"\n>>> {stage.name}", flush=True)
        configs = setting_configs(config) if stage.per_setting else [config]
        for s in (s for c in configs for s in _labelled(stage.run_in_pipeline(c), c.setting)):
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
