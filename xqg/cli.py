"""The shared job convention: --config, --set overrides, connect to Ray, run a stage, print a summary."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
from collections.abc import Callable

from xqg.config import Config, ConfigError, load_config
# The pieces every command line shares live in xqg.jobargs (xqg.ask uses them without importing this module,
# which imports the command registry); re-exported here, where the stages' code has always found them.
from xqg.jobargs import REPO_ROOT, base_parser, check_run_dir, init_ray  # noqa: F401
from xqg.summary import StageSummary


def run_stage(
    args: argparse.Namespace,
    stage: Callable[[Config, argparse.Namespace], StageSummary | list[StageSummary]],
    needs_ray: bool = True,
) -> int:
    """Load the config named by parsed arguments, connect to Ray, run the stage, print its summary; the exit status.

    0 done; 1 a unit failed or the stage raised; 2 a config or usage error; 3 rows did not add up; 4 another job
    holds the stage's lease on this run directory.
    """
    from xqg.lease import LeaseHeldError  # here, not at the top: `xqg --help` loads no pyarrow

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        if args.keep_stale:
            config.keep_stale = True
        check_run_dir(config.run_dir)
        if needs_ray:
            init_ray(config)
        result = stage(config, args)
    except ConfigError as e:
        print_error(e)
        return 2
    except LeaseHeldError as e:  # another job is running this stage on this run directory
        print_error(e)
        return 4
    except (FileNotFoundError, ValueError, OSError) as e:
        print_error(e)
        return 1
    except Exception:  # noqa: BLE001 - the job's exit code must say it failed, with the traceback
        traceback.print_exc()
        return 1
    summaries = result if isinstance(result, list) else [result]
    for s in summaries:
        print(s.render())
    if not all(s.balanced for s in summaries):
        return 3
    return 0 if all(s.ok for s in summaries) else 1


def print_error(error: BaseException) -> None:
    """Each line of an error message as its own 'error: ...' line on stderr (one line per bad config key)."""
    for line in str(error).splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)


def run_job(
    description: str,
    stage: Callable[[Config, argparse.Namespace], StageSummary | list[StageSummary]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    needs_ray: bool = True,
    argv: list[str] | None = None,
) -> int:
    """Parse arguments, load the config, connect to Ray, run the stage, print its summary; return the exit code."""
    parser = base_parser(description)
    if add_arguments:
        add_arguments(parser)
    return run_stage(parser.parse_args(argv), stage, needs_ray)


def job_main(name: str, argv: list[str] | None = None) -> int:
    """jobs/<name>.py: the registered command's arguments without the subcommand word (for `ray job submit`)."""
    from xqg.commands import get_command

    command = get_command(name)
    if command.main is not None:
        return command.main(argv)
    return run_job(command.help, command.run, command.add_arguments, command.needs_ray, argv)


def build_parser() -> argparse.ArgumentParser:
    """`xqg <command> ...`: one subcommand per registered command, each with the shared options and its selectors."""
    from xqg.commands import COMMANDS

    parser = argparse.ArgumentParser(
        prog="xqg",
        description="Cross-lingual query generation for dense retrieval, as batch jobs on Ray. "
        "Exit status: 0 done, 1 a unit or the stage failed, 2 config or usage error, 3 rows do not add up, "
        "4 another job holds the stage on this run directory.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for command in COMMANDS.values():
        if command.main is not None:  # listed here; main() hands it its arguments before this parser runs
            sub.add_parser(command.name, aliases=list(command.aliases), help=command.help, add_help=False)
            continue
        p = sub.add_parser(
            command.name, aliases=list(command.aliases), help=command.help, description=command.help,
            parents=[base_parser(command.help, add_help=False)],
        )
        if command.add_arguments:
            command.add_arguments(p)
        p.set_defaults(_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `xqg` console script: `xqg <stage> --config FILE [--set key=value ...] [selectors]`, or `xqg run`."""
    from xqg.commands import get_command

    words = list(sys.argv[1:] if argv is None else argv)
    if words and not words[0].startswith("-"):
        try:
            own = get_command(words[0]).main
        except KeyError:
            own = None
        if own is not None:  # ask, serve: their own command line
            return own(words[1:])
    args = build_parser().parse_args(argv)
    command = args._command
    return run_stage(args, command.run, command.needs_ray)


if __name__ == "__main__":
    raise SystemExit(main())
