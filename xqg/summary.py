"""The one-screen summary every stage prints at its end."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StageSummary:
    """Counts and timings of one stage run; rows_in must equal rows_out + rejected."""

    stage: str
    rows_in: int = 0
    rows_out: int = 0
    rejected: int = 0
    units_done: int = 0
    units_skipped: int = 0
    units_stale: int = 0
    units_kept_stale: int = 0
    units_failed: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    @property
    def balanced(self) -> bool:
        """True when every input row is accounted for."""
        return self.rows_in == self.rows_out + self.rejected

    @property
    def ok(self) -> bool:
        """True when the counts add up and every planned unit is marked (exit status 0)."""
        return self.balanced and self.units_failed == 0

    def render(self) -> str:
        """A small aligned table for the terminal."""
        rows: list[tuple[str, Any]] = [
            ("units done", self.units_done),
            ("units skipped (complete)", self.units_skipped),
            ("units redone (inputs changed)", self.units_stale),
            ("rows in", self.rows_in),
            ("rows out", self.rows_out),
            ("rows rejected", self.rejected),
            ("wall time", f"{self.seconds:.1f} s"),
        ]
        if self.units_kept_stale:
            rows.append(("units kept stale (--keep-stale)", self.units_kept_stale))
        if self.units_failed:
            rows.append(("units FAILED (left unmarked)", self.units_failed))
        if self.seconds > 0 and self.rows_out:
            rows.append(("throughput", f"{self.rows_out / self.seconds:,.1f} rows/s"))
        rows += [(k, _fmt(v)) for k, v in self.extra.items()]
        width = max(len(k) for k, _ in rows)
        head = f"== {self.stage} summary " + "=" * max(0, 40 - len(self.stage))
        lines = [head, *(f"  {k:<{width}}  {v}" for k, v in rows)]
        check = "ok" if self.balanced else "MISMATCH"
        lines.append(f"  {'rows in = out + rejected':<{width}}  {check}")
        if self.message:  # last, so that e.g. the pipeline ends on the report table
            lines.append(self.message)
        if self.units_failed:  # the last line says what the exit status will say
            lines.append(f"{self.stage} FAILED: {self.units_failed} unit(s) left unmarked; rerun to redo them")
        elif not self.balanced:
            lines.append(f"{self.stage} FAILED: rows in != rows out + rows rejected")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form, written next to the stage's markers."""
        return {
            "stage": self.stage, "rows_in": self.rows_in, "rows_out": self.rows_out, "rejected": self.rejected,
            "units_done": self.units_done, "units_skipped": self.units_skipped, "units_stale": self.units_stale,
            "units_kept_stale": self.units_kept_stale, "units_failed": self.units_failed, "seconds": round(self.seconds, 3),
            "extra": self.extra, "message": self.message,
        }


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
