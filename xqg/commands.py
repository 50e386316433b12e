"""The command registry: every stage's command line (its selectors) and the function it runs.

`xqg <command>` (xqg.cli.main) and `python jobs/<command>.py` (xqg.cli.job_main) both read COMMANDS, so a stage
reaches both with one `register(Command(...))` here and a two-line jobs/<name>.py for `ray job submit`.
Stage code is imported inside each run function: `xqg --help` and config errors import no torch or Ray.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from dataclasses import dataclass

from xqg.config import Config, ConfigError
from xqg.selectors import parse_languages, parse_shards
from xqg.summary import StageSummary

StageResult = StageSummary | list[StageSummary]


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


def _positive_int(value: str) -> int:
    """argparse type: a whole number >= 1 (anything else is a usage error, exit 2)."""
    if not value.strip().isascii() or not value.strip().isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return int(value)


# ---- ingest, train_qg ---------------------------------------------------------------------------------------
def _ingest(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.ingest.stage import run_ingest

    return run_ingest(config)


def _train_qg(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.train.qg import run_train_qg

    return run_train_qg(config)


# ---- generate ----------------------------------------------------------------------------------------------
def _generate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--languages", type=LANGUAGES,
                   help="comma-separated codes to generate for (default: config languages)")
    p.add_argument("--shards", type=SHARDS, help="corpus shards to work on, e.g. 0-9,12 (default: all)")
    p.add_argument("--encode", action="store_true",
                   help="also encode each unit's queries as soon as it is generated (one pipeline; both stages marked)")


def _generate(config: Config, args: argparse.Namespace) -> StageResult:
    languages, shards = args.languages, args.shards
    if args.encode:
        from xqg.generate_encode import run_generate_encode

        return run_generate_encode(config, languages, shards)
    from xqg.generate.stage import run_generate

    return run_generate(config, languages, shards)


# ---- train_dr, encode, fuse ----------------------------------------------------------------------------------
def _train_dr(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.train.dr import run_train_dr

    return run_train_dr(config)


def _encode_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=["passages", "generated", "queries", "all"], default="all",
                   help="what to encode (default: all three with one pool of encoder actors)")
    p.add_argument("--languages", type=LANGUAGES, help="generated target: only these languages, e.g. ar,fi")
    p.add_argument("--shards", type=SHARDS, help="only these corpus shards, e.g. 0-9,12")
    p.add_argument("--num-queries", type=_positive_int,
                   help="generated target: first k queries of each list (embeddings/generated-k{k})")


def _encode(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.encode import run_encode

    if args.num_queries is not None:
        config.encode.num_queries = args.num_queries
    return run_encode(config, args.target, args.languages, args.shards)


def _tune(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.tune import run_tune

    return run_tune(config)


def _fuse(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.tune import run_fuse_sets

    return run_fuse_sets(config)


# ---- index, search -----------------------------------------------------------------------------------------
def _index_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", action="append",
                   help="'passages' (= the baseline index) or a fused set's name; repeatable. "
                        "Default: baseline, plus fuse.name and its tuned set when they are fused")


def _index(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.index import run_index
    from xqg.layout import BASELINE, FUSE, fused_set, tuned_set
    from xqg.rundir import RunDir

    names = args.name
    if not names:
        names = [BASELINE]
        done = RunDir(config.run_dir).done_units(FUSE)
        for fused in (fused_set(config), tuned_set(config)):  # the paper's fused set, then the tuned one
            if any(u.startswith(f"{fused}/") for u in done):
                names.append(fused)
    return [run_index(config, n) for n in names]


def _search_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--index", action="append",
                   help="index name (baseline, or a fused set's name); repeatable. "
                        "Default: baseline, plus fuse.name and its tuned set when they are indexed")
    p.add_argument("--queries", help="query set (default: search.query_set, else the first configured set)")


def _search(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.index.build import MANIFEST
    from xqg.layout import BASELINE, fused_set, index_dir, tuned_set
    from xqg.rundir import RunDir
    from xqg.search import run_search

    names = args.index
    if not names:
        names = [BASELINE]
        for fused in (fused_set(config), tuned_set(config)):  # the paper's fused set, then the tuned one
            if RunDir(config.run_dir).exists(index_dir(fused), MANIFEST):
                names.append(fused)
    return [run_search(config, n, args.queries) for n in names]


# ---- evaluate, export ----------------------------------------------------------------------------------------
def _evaluate(config: Config, args: argparse.Namespace) -> StageResult:
    from xqg.evaluate.stage import run_evaluate

    return run_evaluate(config)


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
    from xqg.layout import STAGES

    stages = [s.strip() for s in value.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        what = f"unknown stage(s) {', '.join(map(repr, unknown))}" if unknown else f"no stage in {value!r}"
        raise argparse.ArgumentTypeError(f"{what}; stages are: {', '.join(STAGES)}")
    return stages


def _pipeline_arguments(p: argparse.ArgumentParser) -> None:
    from xqg.layout import STAGES

    p.add_argument("--from", dest="start", choices=STAGES, help="run this stage and every later one")
    p.add_argument("--only", type=_stage_list, help=f"comma-separated stages to run, of: {','.join(STAGES)}")


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


# One line per command, in pipeline order; a new stage adds its line here (and jobs/<name>.py for ray job submit).
register(Command("ingest", "Ingest a passage corpus into hash-sharded Parquet and the query sets into Parquet.",
                 _ingest, needs_ray=False))
register(Command("train_qg", "Fine-tune the cross-lingual query generator (mT5) on Ray Train; resumes from its "
                 "checkpoints.", _train_qg))
register(Command("generate", "Generate n queries per passage per language (xQG).", _generate, _generate_arguments))
register(Command("train_dr", "Contrastive fine-tuning of the bi-encoder (xDR) on Ray Train; resumes from its "
                 "checkpoints.", _train_dr))
register(Command("encode", "Encode passages, generated queries (one summed vector per passage and language) and "
                 "query sets.", _encode, _encode_arguments))
register(Command("tune", "Choose the fusion (alpha, reduction) on the held-out query set tune.query_set, never dev.",
                 _tune))
register(Command("fuse", "Fuse passage embeddings with their generated-query sums: "
                 "e'(p) = (1 - alpha) e(p) + alpha sum_q e(q); with tune.query_set also the tuned fused set.", _fuse))
register(Command("index", "Build FAISS indexes: the baseline over the passage embeddings and the fused set's.",
                 _index, _index_arguments))
register(Command("search", "Search a query set against indexes; writes runs/<name>.tsv and runs/<name>.trec.",
                 _search, _search_arguments))
register(Command("evaluate", "Score the baseline and +xQG runs (R@2kt / R@5kt, significance); write the report.",
                 _evaluate, needs_ray=False))
register(Command("export", "Write runs in XOR-TyDi's official prediction format (runs/<run>.xor.json).",
                 _export, _export_arguments, needs_ray=False))
register(Command("run", "Run the whole pipeline (ingest -> ... -> evaluate); complete units are skipped.",
                 _pipeline, _pipeline_arguments, aliases=("pipeline",)))
# After a run: asking its indexes (docs/ask.md); each parses its own command line.
register(Command("ask", "Ask a finished run's index questions in any language, in-process (docs/ask.md).",
                 _own_command_line, needs_ray=False, main=_ask_main))
register(Command("serve", "Serve a finished run's indexes over HTTP (POST /search) with Ray Serve (docs/ask.md).",
                 _own_command_line, main=_serve_main))
