"""The command registry: every command's line (its selectors) and the function it runs.

`xqg <command>` (xqg.cli.main) and `python jobs/<command>.py` (xqg.cli.job_main) both read COMMANDS: first one
command per registered stage (xqg/stages/<name>.py, in pipeline order), then the commands that are no stage
(export, run, ask, serve), registered here. Stage code is imported inside each run function: `xqg --help` and
config errors import no torch or Ray.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from xqg.config import Config
from xqg.stages import StageResult, stage_names, stages


@dataclass(frozen=True)
class Command:
    """One subcommand: its name (= jobs/<name>.py), one-line help, selectors and the stage function it runs."""

    name: str
    help: str
    run: Callable[[Config, argparse.Namespace], StageResult]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    needs_ray: bool = True
    aliases: tuple[str, ...] = ()
    # A command with a command line of its own (ask, serve: questions, no stage summary): `xqg <name> ...` and
    # jobs/<name>.py hand it their arguments and return its exit status; `run` is then never called.
    main: Callable[[list[str] | None], int] | None = None


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add a command to the registry (its name and aliases must be new)."""
    for name in (command.name, *command.aliases):
        if name in COMMANDS or any(name in c.aliases for c in COMMANDS.values()):
            raise ValueError(f"command {name!r} is registered twice")
    COMMANDS[command.name] = command
    return command


def get_command(name: str) -> Command:
    """The command registered under name or one of its aliases."""
    for command in COMMANDS.values():
        if name == command.name or name in command.aliases:
            return command
    raise KeyError(f"no command {name!r}; commands are: {', '.join(COMMANDS)}")


# ---- export ------------------------------------------------------------------------------------------------
def _export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", action="append",
                   help="index whose run to export (baseline, or a fused set's name); repeatable. "
                        "Default: baseline and fuse.name, the two runs evaluate scores")
    p.add_argument("--queries", help="query set of the run (default: search.query_set, else the first configured set)")


def _export(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.evaluate.export import export_runs

    return export_runs(config, args.index, args.queries)


# ---- the whole pipeline --------------------------------------------------------------------------------------
def _stage_list(value: str) -> list[str]:
    """argparse type of --only: 'fuse,index' -> ['fuse', 'index']; an unknown or no stage is a usage error."""
    names = stage_names()
    chosen = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in names]
    if unknown or not chosen:
        what = f"unknown stage(s) {', '.join(map(repr, unknown))}" if unknown else f"no stage in {value!r}"
        raise argparse.ArgumentTypeError(f"{what}; stages are: {', '.join(names)}")
    return chosen


def _pipeline_arguments(p: argparse.ArgumentParser) -> None:
    names = stage_names()
    p.add_argument("--from", dest="start", choices=names, help="run this stage and every later one")
    p.add_argument("--only", type=_stage_list, help=f"comma-separated stages to run, of: {','.join(names)}")


def _pipeline(config: Config, args: argparse.Namespace) -> StageResult:
    """The per-stage summaries print as they finish; the overall one is the command's summary."""
    from xqg.pipeline import run_pipeline

    return run_pipeline(config, start=args.start, only=args.only)[-1]


def _ask_main(argv: list[str] | None) -> int:
    """`xqg ask`: xqg/ask/cli.py (in-process: no Ray)."""
    from xqg.ask.cli import main

    return main(argv)


def _serve_main(argv: list[str] | None) -> int:
    """`xqg serve`: xqg/ask/serve.py (Ray Serve)."""
    from xqg.ask.serve import main

    return main(argv)


def _own_command_line(config: Config, args: argparse.Namespace) -> StageResult:
    """Never called: a command with its own main runs that instead of a stage."""
    raise NotImplementedError("this command runs its own main")


# Every stage is a command (`xqg <stage>`, jobs/<stage>.py), in pipeline order; then the commands that are no stage.
for _stage in stages():
    register(Command(_stage.name, _stage.help, _stage.run, _stage.add_arguments, needs_ray=_stage.needs_ray))
register(Command("export", "Write runs in XOR-TyDi's official prediction format (runs/<run>.xor.json).",
                 _export, _export_arguments, needs_ray=False))
register(Command("run", "Run the whole pipeline (ingest -> ... -> evaluate); complete units are skipped.",
                 _pipeline, _pipeline_arguments, aliases=("pipeline",)))
# After a run: asking its indexes (docs/ask.md); each parses its own command line.
register(Command("ask", "Ask a finished run's index questions in any language, in-process (docs/ask.md).",
                 _own_command_line, needs_ray=False, main=_ask_main))
register(Command("serve", "Serve a finished run's indexes over HTTP (POST /search) with Ray Serve (docs/ask.md).",
                 _own_command_line, main=_serve_main))
