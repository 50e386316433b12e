"""What every command line shares: --config / --set / --keep-stale, the selectors' argument types, the
run-directory check, connecting to Ray."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable
from pathlib import Path

from xqg.config import Config, ConfigError
from xqg.selectors import parse_languages, parse_shards

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


def _selector(parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argparse type from a selector parser: a bad value is a usage error (exit 2) before Ray starts."""

    def convert(value: str) -> object:
        try:
            return parse(value)
        except ConfigError as e:
            # argparse already says "argument --shards: "; the parser's own "--shards" would repeat it
            raise argparse.ArgumentTypeError(re.sub(r"^--[a-z-]+:? ", "", str(e))) from None

    convert.__name__ = parse.__name__.removeprefix("parse_")  # argparse names the type in its messages
    return convert


SHARDS = _selector(parse_shards)
LANGUAGES = _selector(parse_languages)


def positive_int(value: str) -> int:
    """argparse type: a whole number >= 1 (anything else is a usage error, exit 2)."""
    if not value.strip().isascii() or not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


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
