"""The shared job convention: --config, --set overrides, connect to Ray, run a stage, print a summary."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from xqg.config import Config, ConfigError, load_config
from xqg.summary import StageSummary

REPO_ROOT = Path(__file__).resolve().parent.parent


def base_parser(description: str, add_help: bool = True) -> argparse.ArgumentParser:
    """An argument parser with --config, --keep-stale and repeatable --set key=value."""
    p = argparse.ArgumentParser(description=description, add_help=add_help)
    p.add_argument("--config", "-c", help="YAML config file (defaults when omitted)")
    p.add_argument(
        "--keep-stale", action="store_true",
        help="keep complete units whose inputs changed since they were made (they are counted, not redone)",
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set generate.num_queries=3 (repeatable)",
    )
    return p


def check_run_dir(run_dir: str) -> None:
    """A local run_dir must be a folder (or not exist yet): a file there is a config error, not a traceback."""
    if "://" not in run_dir and os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"run_dir {run_dir!r} is a file, not a folder: choose a folder for the run directory")


def init_ray(config: Config) -> None:
    """Connect to the cluster named by RAY_ADDRESS / ray.address, or start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS") or config.ray.address
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # A local Ray's workers must import xqg even when it is not installed in the environment.
        path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
        ray.init(num_cpus=config.ray.num_cpus, runtime_env={"env_vars": {"PYTHONPATH": path}}, log_to_driver=True)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the stages draw their own bar per unit of work
    ctx.print_on_execution_start = False


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
    args = build_parser().parse_args(argv)
    command = args._command
    return run_stage(args, command.run, command.needs_ray)


if __name__ == "__main__":
    raise SystemExit(main())
