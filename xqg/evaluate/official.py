"""XOR-TyDi's official prediction format: runs/<name>.xor.json, what evals/eval_xor_retrieve.py reads.

The official script (github.com/AkariAsai/XORQA, evals/eval_xor_retrieve.py) loads a JSON list of
``{"id": question id, "lang": language code, "ctxs": [passage text, ...]}`` with the passages in rank order,
tokenizes the ctxs with NLTK in order, keeps the first k thousand tokens and looks for the answers in them.
xQG4xDR's make_xortydi_submission.py fills ctxs with the corpus's text field (no title); xqg writes the texts
its own report scored (``evaluate.include_title``, default False: the text alone), so the official script and
the report give the same R@2kt / R@5kt. The evaluate stage writes these files for the runs it scores;
`jobs/export.py` (xqg.evaluate.export) writes them for any run.

Every question of the query set gets an entry, in the query set's order; one the run has no ranking for gets
``"ctxs": []``. The official script counts only the questions in the file, so without those entries a lost
question would vanish from its numbers instead of counting as a miss (as it does in xqg's report).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from xqg.layout import run_file
from xqg.rundir import RunDir

XOR_EXT = "xor.json"


def xor_file(name: str) -> str:
    """runs/<name>.xor.json: a run's predictions in XOR-TyDi's official format."""
    return run_file(name, XOR_EXT)


def xor_predictions(
    questions: Sequence[Mapping], ranked: Mapping[str, Sequence[str]], texts: Mapping[str, str]
) -> list[dict]:
    """[{"id", "lang", "ctxs"}] for each question ({"id", "lang"}), ctxs the ranked passages' texts in rank order.

    ranked: qid -> docids in rank order; texts: docid -> the passage text that is scored ("" when unknown).
    """
    return [
        {"id": str(q["id"]), "lang": q["lang"], "ctxs": [texts.get(d, "") for d in ranked.get(str(q["id"]), ())]}
        for q in questions
    ]


def write_xor_predictions(run: RunDir, name: str, items: list[dict]) -> str:
    """Write runs/<name>.xor.json (UTF-8, written whole then moved into place); return its path."""
    rel = xor_file(name)
    run.write_text(rel, json.dumps(items, ensure_ascii=False))
    return run.path(rel)


