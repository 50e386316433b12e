"""`ask`: question(s) in any language against a finished run's index, in-process (no Ray): rank, docid, title,
score, the start of the passage and, for an xQG index, the generated queries that brought it close.

Exit status: 0 answered; 2 bad input (empty or over-long question, unknown index, a run whose index or encoder is
missing or stale, a config error); 1 anything else.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, TextIO

from xqg.ask.searcher import AskError


def parser() -> argparse.ArgumentParser:
    """The ask command's arguments (the shared --config / --set, plus its own)."""
    from xqg.jobargs import base_parser

    p = base_parser("Ask a finished run's index questions (one per argument, or one per line of --file / stdin).")
    p.add_argument("question", nargs="*", help="question(s); none: read --file, else stdin, one per line")
    p.add_argument("--file", "-f", help="questions one per line ('-' = stdin); blank lines are skipped")
    p.add_argument("--index", help="index to ask (default: ask.index, else the fused set when built, else baseline)")
    p.add_argument("--top", "-k", type=int, help="passages per question (default: ask.top_k)")
    p.add_argument("--lang", help="the questions' language (default: guessed from the script, when it tells)")
    p.add_argument("--why", type=int, help="generated queries shown per passage of an xQG index (default: ask.why)")
    p.add_argument("--json", action="store_true", help="one JSON object per question per line (the HTTP app's)")
    return p


def read_questions(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    """Positional questions, else the lines of --file ('-' = stdin), else the lines of stdin."""
    if args.question:
        return list(args.question)
    if args.file and args.file != "-":
        with open(args.file, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.strip()]
    return [line.rstrip("\n") for line in stdin if line.strip()]


def render(answer: dict[str, Any]) -> str:
    """One answer as text: the question, then per hit rank, docid, score, title, passage start and why."""
    lang = f", lang {answer['lang']}" if answer.get("lang") else ""
    lines = [f"? {answer['question']}   [index {answer['index']}{lang}]"]
    if not answer["hits"]:
        lines.append("  (no passage)")
    for h in answer["hits"]:
        lines.append(f"{h['rank']:>3}  {h['docid']}  {h['score']:.4f}  {h['title']}")
        if h.get("passage"):
            lines.append(f"     {h['passage']}")
        for w in h.get("why") or []:
            lines.append(f"     why [{w['lang']}] {w['query']}  ({w['score']:.4f})")
    return "\n".join(lines)


def answer_all(searcher: Any, asks: list[Any], out: TextIO, as_json: bool, batch: int = 32) -> None:
    """Answer in batches (one encoder call per batch), printing each answer as soon as its batch is done."""
    for lo in range(0, len(asks), batch):
        for answer in searcher.search(asks[lo:lo + batch]):
            print(json.dumps(answer, ensure_ascii=False) if as_json else render(answer) + "\n", file=out, flush=True)


def main(argv: list[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Parse arguments, load the run's encoder and index once, answer every question; return the exit status."""
    from xqg.ask.searcher import Searcher, check_question, complete_indexes, default_index
    from xqg.jobargs import check_run_dir
    from xqg.config import ConfigError, load_config
    from xqg.rundir import RunDir

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a weights-loading bar on stderr at every call is noise here
    try:
        config = load_config(args.config, args.overrides)
        overrides = {"why": args.why, "top_k": args.top}
        for key, value in overrides.items():
            if value is not None:
                setattr(config.ask, key, value)  # validated on assignment
        check_run_dir(config.run_dir)
        questions = read_questions(args, stdin)
        if not questions:
            raise AskError("no question: pass one as an argument, or one per line with --file or on stdin")
        # Checked before anything loads: a bad question costs no model load.
        texts = [check_question(q, config.ask.max_question_chars) for q in questions]
        # Only the index asked is loaded (the default one when none is named): the first answer comes sooner.
        name = args.index or default_index(config, complete_indexes(RunDir(config.run_dir)))
        searcher = Searcher(config, [name])
        asks = [searcher.check(q, config.ask.top_k, args.index, args.lang) for q in texts]
        answer_all(searcher, asks, stdout, args.json)
    except (AskError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:  # a run folder that is not there; --top / --why out of range
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
