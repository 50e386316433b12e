"""Tune fuse.alpha on a held-out query set (never dev): fuse, index, search and score once per alpha.

``python -m xqg.demo.sweep --config configs/demo.yaml --alphas 0.003,0.01,0.03,0.1`` runs the pipeline from the
fuse stage for each alpha with fuse.name ``alpha-<value>`` and search.query_set ``heldout`` (every setting of the
config), then prints and writes ``reports/alpha-sweep.json``: R@2kt / R@5kt averages and MRR@10 per setting and
alpha. Everything upstream (generation, trainings, encodings) must be complete; it is reused, not redone.
"""

from __future__ import annotations

import argparse
import json

from xqg.config import load_config
from xqg.layout import report_name
from xqg.rundir import RunDir


def _scores(doc: dict) -> dict[str, float]:
    base, xqg = doc["runs"]["baseline"]["metrics"], doc["runs"]["+xQG"]["metrics"]
    ir = doc.get("ir", {})
    return {
        "baseline R@2kt": base["R@2kt"]["avg"], "+xQG R@2kt": xqg["R@2kt"]["avg"],
        "baseline R@5kt": base["R@5kt"]["avg"], "+xQG R@5kt": xqg["R@5kt"]["avg"],
        "baseline mrr@10": ir.get("baseline", {}).get("mrr@10", float("nan")),
        "+xQG mrr@10": ir.get("+xQG", {}).get("mrr@10", float("nan")),
    }


def sweep(config_path: str, alphas: list[float], query_set: str, overrides: list[str]) -> dict:
    """Run fuse -> evaluate for each alpha on ``query_set``; return {alpha: {setting: scores}}."""
    from xqg.cli import init_ray
    from xqg.pipeline import run_pipeline

    out: dict[str, dict[str, dict[str, float]]] = {}
    for alpha in alphas:
        config = load_config(config_path, [*overrides, f"fuse.alpha={alpha}", f"fuse.name=alpha-{alpha:g}",
                                           f"search.query_set={query_set}"])
        init_ray(config)
        run_pipeline(config, start="fuse")
        run = RunDir(config.run_dir)
        doc = run.read_json(f"reports/{report_name(config)}.json")
        out[f"{alpha:g}"] = {"main": _scores(doc), **{s: _scores(d) for s, d in doc.get("settings", {}).items()}}
    run.write_json("reports/alpha-sweep.json", {"query_set": query_set, "alphas": out})
    return out


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--alphas", default="0.003,0.01,0.03,0.1")
    parser.add_argument("--query-set", default="heldout")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    result = sweep(args.config, [float(a) for a in args.alphas.split(",")], args.query_set, args.overrides)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
