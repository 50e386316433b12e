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
from xqg.lease import LeaseHeldError
from xqg.summary import StageSummary

REPO_ROOT = Path(__file__).resolve().parent.parent


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with --config and repeatable --set key=value."""
    p = argparse.ArgumentParser(description=description)
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


def parse_languages(value: str | None) -> list[str] | None:
    """'sw,id' -> ['sw', 'id'] (normalised); None stays None."""
    if value is None:
        return None
    from xqg.languages import normalise_code

    try:
        return [normalise_code(c) for c in value.split(",") if c.strip()]
    except ValueError as e:
        raise ConfigError(f"--languages: {e}") from None


def parse_shards(value: str | None) -> set[int] | None:
    """'0-9,12' -> {0..9, 12}; None stays None."""
    if value is None:
        return None
    out: set[int] = set()
    try:
        for part in value.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = part.split("-", 1)
                out.update(range(int(lo), int(hi) + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise ConfigError(f"--shards expects ranges like 0-9,12, got {value!r}") from None
    return out


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
    args = parser.parse_args(argv)
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
        print(f"error: {e}", file=sys.stderr)
        return 2
    except LeaseHeldError as e:  # another job is running this stage on this run directory
        print(f"error: {e}", file=sys.stderr)
        return 4
    except (FileNotFoundError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
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
