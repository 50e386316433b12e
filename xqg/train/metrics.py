"""The metrics log of a training: JSON lines in <run>/metrics/<stage>.jsonl, written by rank 0.

Events: "start" (step resumed from), "step" (loss, lr, steps/s, examples/s), "epoch" (mean loss of the epoch),
"checkpoint". On resume, lines past the resumed step (work lost with the crash) are removed, so the log is the
trajectory of the final model.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from xqg.rundir import RunDir


def metrics_rel(stage: str) -> str:
    """Run-relative path of a training's metrics log."""
    return f"metrics/{stage}.jsonl"


class MetricsLog:
    """JSON lines under the run directory (appends locally; rewrites the small file on object stores)."""

    def __init__(self, run_uri: str, rel: str) -> None:
        self.run = RunDir(run_uri)
        self.rel = rel

    def read(self) -> list[dict[str, Any]]:
        """Every complete line so far (a line torn by a crash mid-write is skipped)."""
        if not self.run.exists(self.rel):
            return []
        rows = []
        for line in self.run.read_text(self.rel).splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
        return rows

    def truncate_after(self, step: int) -> None:
        """Drop lines of steps after `step` (work a crash lost and the resumed run redoes)."""
        rows = self.read()
        keep = [r for r in rows if int(r.get("step", 0)) <= step]
        if len(keep) != len(rows):
            self.run.write_text(self.rel, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep))

    def append(self, *rows: dict[str, Any]) -> None:
        """Add lines."""
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if not self.run.is_local:
            self.run.write_text(self.rel, (self.run.read_text(self.rel) if self.run.exists(self.rel) else "") + text)
            return
        path = self.run.path(self.rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)


def summarize_metrics(rows: list[dict[str, Any]], driver_id: str) -> dict[str, Any]:
    """Loss by epoch, throughput and resumes of the training, from its metrics log."""
    epochs = [r for r in rows if r.get("event") == "epoch"]
    steps = [r for r in rows if r.get("event") == "step"]
    starts = [r for r in rows if r.get("event") == "start" and r.get("driver_id") == driver_id]
    out: dict[str, Any] = {}
    if epochs:
        out["first_epoch_loss"] = round(float(epochs[0]["mean_loss"]), 4)
        out["last_epoch_loss"] = round(float(epochs[-1]["mean_loss"]), 4)
    if steps:
        out["final_loss"] = round(float(steps[-1]["loss"]), 4)
        eps = [float(r["examples_per_s"]) for r in steps]
        out["examples_per_s"] = round(float(np.median(eps)), 1)
        out["steps_per_s"] = round(float(np.median([float(r["steps_per_s"]) for r in steps])), 3)
    out["attempts"] = len(starts)
    out["resumed_from_steps"] = [int(r["step"]) for r in starts if int(r["step"]) > 0]
    return out
