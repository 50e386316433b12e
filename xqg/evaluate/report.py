"""Evaluation report: R@kt table (baseline vs +xQG, deltas, significance), JSON and a bar chart."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NotRequired, TypedDict

from xqg.evaluate.significance import PairedTest, compare
from xqg.evaluate.xor import XorResult, metric_name

ALPHA = 0.05
T_MARK = "†"  # paired t-test p < ALPHA
PERM_MARK = "‡"  # paired randomization test p < ALPHA
LEGEND = (
    f"{T_MARK}: p < {ALPHA} in a two-sided paired t-test against the baseline; "
    f"{PERM_MARK}: p < {ALPHA} in a paired randomization test (sign flips). "
    "Avg is the macro mean over languages; its t-test pools all questions, its "
    "randomization test is on the macro mean. n: counted questions."
)


class ReportResults(TypedDict):
    """What a report shows. The first run is the baseline the others are compared with."""

    runs: dict[str, XorResult]  # display name -> result, e.g. {"mBERT": .., "mBERT + xQG": ..}
    significance: dict[str, dict[str, dict[str, PairedTest]]]  # other run -> metric -> lang/avg -> test
    ir: NotRequired[dict[str, dict[str, float]]]  # optional: run -> {"recall@100": ..}


def make_results(
    runs: Mapping[str, XorResult],
    *,
    ir: Mapping[str, Mapping[str, float]] | None = None,
    n_permutations: int = 10_000,
    seed: int = 0,
) -> ReportResults:
    """Bundle runs (baseline first) with significance tests of every other run against it."""
    if not runs:
        raise ValueError("no runs to report")
    names = list(runs)
    baseline = runs[names[0]]
    results: ReportResults = {
        "runs": dict(runs),
        "significance": {name: compare(baseline, runs[name], n_permutations, seed) for name in names[1:]},
    }
    if ir is not None:
        results["ir"] = {name: dict(scores) for name, scores in ir.items()}
    return results


def _marks(test: PairedTest | None) -> str:
    """Significance marks for one cell."""
    if test is None:
        return ""
    return (T_MARK if test.t_p < ALPHA else "") + (PERM_MARK if test.perm_p < ALPHA else "")


def _pipe_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    """A GitHub pipe table, padded so it also reads well in a terminal.

    The first column is a label; with ``numeric`` the others are right-aligned.
    """
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if numeric and i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return "| " + " | ".join(padded) + " |"

    rule = [":" + "-" * (w + 1) if not (numeric and i) else "-" * (w + 1) + ":" for i, w in enumerate(widths)]
    return "\n".join([line(header), "|" + "|".join(rule) + "|", *(line(row) for row in rows)])


def format_table(results: ReportResults) -> str:
    """Per-language R@kt of every run with deltas and marks against the baseline, as a pipe table."""
    names = list(results["runs"])
    baseline = results["runs"][names[0]]
    header = ["Lang", "n"]
    for k in baseline.ks:
        header.append(f"{metric_name(k)} {names[0]}")
        for name in names[1:]:
            header += [f"{metric_name(k)} {name}", "Δ"]
    rows = []
    counts = baseline.counts
    for lang in [*baseline.langs, "avg"]:
        row = [lang if lang != "avg" else "Avg", str(counts[lang] if lang != "avg" else sum(counts.values()))]
        for k in baseline.ks:
            base = baseline.scores(k)[lang]
            row.append(f"{base:.1f}")
            for name in names[1:]:
                score = results["runs"][name].scores(k)[lang]
                test = results.get("significance", {}).get(name, {}).get(metric_name(k), {}).get(lang)
                row += [f"{score:.1f}{_marks(test)}", f"{score - base:+.1f}"]
        rows.append(row)
    return _pipe_table(header, rows)


def p_text(p: float) -> str:
    """A p-value to three decimals; one that rounds to 0.000 is written < 0.001 (10,000 sign flips are no proof of 0)."""
    return "< 0.001" if p < 0.0005 else f"{p:.3f}"


def format_lead_table(
    settings: Mapping[str, ReportResults], labels: Mapping[str, Mapping[str, str]] | None = None
) -> str:
    """The answer in one table: a row per setting and run (baseline first), R@2kt, R@5kt and MRR@10 (averages), and
    the paired randomization test's p of each R@kt average against the setting's own baseline."""
    header = ["Setting", "Run", "R@2kt", "R@5kt", "MRR@10", "p R@2kt", "p R@5kt"]
    rows = []
    for setting, res in settings.items():
        for run, result in res["runs"].items():
            tests = res.get("significance", {}).get(run, {})
            mrr = res.get("ir", {}).get(run, {}).get("mrr@10")
            ps = [tests.get(metric_name(k), {}).get("avg") for k in (2, 5)]
            rows.append([
                setting, (labels or {}).get(setting, {}).get(run, run),
                *(f"{result.scores(k)['avg']:.1f}" if k in result.ks else "" for k in (2, 5)),
                "" if mrr is None else f"{mrr:.3f}", *("" if t is None else p_text(t.perm_p) for t in ps),
            ])
    return _pipe_table(header, rows)


LEAD_LEGEND = (
    "R@kt: macro average over languages (XOR-TyDi's metric); MRR@10 of the gold passage; p: two-sided paired "
    "randomization test (sign flips within each language) of the run's R@kt average against its setting's baseline. "
    "+xQG paper: the paper's fusion (fuse.alpha, fuse.reduce); +xQG tuned: the fusion the tune stage chose on the "
    "held-out query set (never this one)."
)


def _escape(value: Any) -> str:
    """A value safe inside a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _settings_markdown(settings: Mapping[str, ReportResults]) -> list[str]:
    """One section per further setting: its R@kt table (+xQG against its own baseline) and IR metrics."""
    parts: list[str] = []
    for setting, res in settings.items():
        parts += ["", f"## Setting: {setting}", "", format_table(res), ""]
        if res.get("ir"):
            ir = res["ir"]
            metrics = list(dict.fromkeys(m for scores in ir.values() for m in scores))
            rows = [[run, *(f"{scores.get(m, float('nan')):.4f}" for m in metrics)] for run, scores in ir.items()]
            parts += [_pipe_table(["Run", *metrics], rows), ""]
    return parts


def _generated_markdown(generated: Mapping[str, Any]) -> list[str]:
    """The generated queries: share naming the passage's entity per language, and a few samples."""
    by_lang = generated.get("by_lang", {})
    if not by_lang:
        return []
    rows = [[lang, str(g["passages"]), str(g["queries"]), f"{g['with_entity']:.1f}"] for lang, g in by_lang.items()]
    parts = ["", "## Generated queries", "",
             f"Share of generated queries that contain their passage's entity (the title's rarest word), measured on "
             f"at most {generated.get('limit')} passages of one shard per language.", "",
             _pipe_table(["Lang", "passages", "queries", "% with entity"], rows), ""]
    samples = [[lang, _escape(s["title"]), _escape(s["query"])] for lang, g in by_lang.items() for s in g["samples"]]
    if samples:
        parts += [_pipe_table(["Lang", "Passage title", "Generated query (first of its list)"], samples, numeric=False)]
    return parts


def _markdown(
    name: str, results: ReportResults, config_summary: Mapping[str, Any],
    settings: Mapping[str, ReportResults] | None = None, generated: Mapping[str, Any] | None = None,
    lead: str | None = None,
) -> str:
    """The whole markdown report."""
    runs = results["runs"]
    heading = "## R@kt on XOR-TyDi (official metric)" + (": main setting" if settings else "")
    parts = [f"# {name}", ""]
    if lead:
        parts += ["## Every setting: baseline, +xQG (paper), +xQG (tuned)", "", lead, "", LEAD_LEGEND, ""]
    parts += [heading, "", format_table(results), "", LEGEND, ""]
    parts += _settings_markdown(settings or {})
    parts.append(f"![R@kt per language]({name}.png)")
    parts += _generated_markdown(generated or {})
    parts += ["", "## Questions", ""]
    rows = [
        [run, str(sum(r.counts.values())), str(r.n_skipped), str(r.n_missing), str(r.n_unknown)]
        for run, r in runs.items()
    ]
    parts.append(_pipe_table(["Run", "counted", "skipped (yes/no only)", "no prediction (miss)", "unknown ids"], rows))
    if results.get("ir"):
        ir = results["ir"]
        metrics = list(dict.fromkeys(m for scores in ir.values() for m in scores))
        rows = [[run, *(f"{scores.get(m, float('nan')):.4f}" for m in metrics)] for run, scores in ir.items()]
        parts += ["", "## IR metrics", "", _pipe_table(["Run", *metrics], rows)]
    if config_summary:
        rows = [[_escape(key), _escape(value)] for key, value in config_summary.items()]
        parts += ["", "## Configuration", "", _pipe_table(["Key", "Value"], rows, numeric=False)]
    return "\n".join(parts) + "\n"


def _results_doc(results: ReportResults) -> dict[str, Any]:
    """One setting's runs, significance tests and IR metrics as JSON-ready dicts."""
    return {
        "runs": {
            run: {"metrics": r.metrics(), "counts": r.counts, "n_skipped": r.n_skipped, "n_missing": r.n_missing,
                  "n_unknown": r.n_unknown}
            for run, r in results["runs"].items()
        },
        "significance": {
            run: {metric: {lang: test.to_dict() for lang, test in tests.items()} for metric, tests in by_metric.items()}
            for run, by_metric in results.get("significance", {}).items()
        },
        "ir": results.get("ir", {}),
    }


def _to_json(
    name: str, results: ReportResults, config_summary: Mapping[str, Any],
    settings: Mapping[str, ReportResults] | None = None, generated: Mapping[str, Any] | None = None,
    tuned: Mapping[str, Any] | None = None,
) -> str:
    """The report's numbers as JSON (scores, counts, tests, config; further settings, generated queries, tuning)."""
    doc: dict[str, Any] = {
        "name": name,
        "runs": {
            run: {
                "metrics": r.metrics(),
                "counts": r.counts,
                "n_skipped": r.n_skipped,
                "n_missing": r.n_missing,
                "n_unknown": r.n_unknown,
            }
            for run, r in results["runs"].items()
        },
        "significance": {
            run: {metric: {lang: test.to_dict() for lang, test in tests.items()} for metric, tests in by_metric.items()}
            for run, by_metric in results.get("significance", {}).items()
        },
        "ir": results.get("ir", {}),
        "config": dict(config_summary),
    }
    if settings:
        doc["settings"] = {setting: _results_doc(res) for setting, res in settings.items()}
    if generated:
        doc["generated_queries"] = dict(generated)
    if tuned:
        doc["tuned"] = dict(tuned)
    return json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n"


def _chart_png(results: ReportResults, settings: Mapping[str, ReportResults] | None = None) -> bytes:
    """Grouped bars per language (and avg), one panel per R@kt, one bar per run (every setting's)."""
    import numpy as np
    from matplotlib.figure import Figure  # no pyplot: no global backend state, Agg by default

    runs = dict(results["runs"])
    for setting, res in (settings or {}).items():
        runs.update({f"{setting} {run}": r for run, r in res["runs"].items()})
    baseline = next(iter(runs.values()))
    labels = [*baseline.langs, "avg"]
    x = np.arange(len(labels))
    width = 0.8 / len(runs)
    fig = Figure(figsize=(6 * len(baseline.ks), 4), layout="constrained")
    axes = fig.subplots(1, len(baseline.ks), squeeze=False)[0]
    for ax, k in zip(axes, baseline.ks):
        for i, (run, result) in enumerate(runs.items()):
            scores = result.scores(k)
            ax.bar(x + (i - (len(runs) - 1) / 2) * width, [scores[lang] for lang in labels], width, label=run)
        ax.set_xticks(x, labels)
        ax.set_ylabel("%")
        ax.set_title(metric_name(k))
        ax.set_ylim(0, 100)
        ax.legend(loc="upper left", fontsize="small")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _write(out_dir: str, filename: str, data: bytes) -> str:
    """Write one file under a local folder or an fsspec/pyarrow URI; return its path."""
    if "://" in out_dir:
        from pyarrow import fs

        filesystem, root = fs.FileSystem.from_uri(out_dir)
        filesystem.create_dir(root, recursive=True)
        with filesystem.open_output_stream(f"{root.rstrip('/')}/{filename}") as stream:
            stream.write(data)
        return f"{out_dir.rstrip('/')}/{filename}"
    path = Path(out_dir) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def write_report(
    out_dir: str, name: str, results: ReportResults, config_summary: dict,
    settings: Mapping[str, ReportResults] | None = None, generated: Mapping[str, Any] | None = None,
    lead: str | None = None, tuned: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Write ``<out_dir>/<name>.md``, ``.json`` and ``.png``; return their paths by extension.

    ``settings``: further settings (e.g. zero-shot), each compared with its own baseline; ``generated``: what
    xqg.evaluate.generated measured on the generated queries; ``lead``: the table the report opens with;
    ``tuned``: each setting's tuned fusion and its held-out scores.
    """
    md = _markdown(name, results, config_summary, settings, generated, lead)
    return {
        "md": _write(out_dir, f"{name}.md", md.encode()),
        "json": _write(out_dir, f"{name}.json", _to_json(name, results, config_summary, settings, generated, tuned).encode()),
        "png": _write(out_dir, f"{name}.png", _chart_png(results, settings)),
    }
