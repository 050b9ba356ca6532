"""What every suite returns: figures, checks against the issue's targets, a table, one JSON line."""

from __future__ import annotations

import json
import operator
import platform
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Check", "Report"]

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    "<": operator.lt,
    ">=": operator.ge,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True, slots=True)
class Check:
    """One target of the issue, computed from the same run's results.

    ``value`` is None when the run could not measure it (``note`` says why): not met.
    """

    name: str
    value: float | None
    op: str
    limit: float
    note: str = ""

    @property
    def met(self) -> bool:
        return self.value is not None and _OPS[self.op](self.value, self.limit)

    def as_json(self) -> dict[str, object]:
        made: dict[str, object] = {
            "name": self.name,
            "value": None if self.value is None else round(self.value, 4),
            "op": self.op,
            "limit": self.limit,
            "met": self.met,
        }
        if self.note:
            made["note"] = self.note
        return made


@dataclass
class Report:
    """A suite's results: ``rows`` make the table, ``results`` and ``checks`` the JSON."""

    suite: str
    columns: tuple[str, ...]
    rows: list[tuple[object, ...]] = field(default_factory=list)
    results: dict[str, float | None] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, name: str, value: float | None, op: str, limit: float, note: str = "") -> Check:
        made = Check(name, value, op, limit, note)
        self.checks.append(made)
        return made

    def print(self) -> None:
        cells = [tuple(str(c) for c in self.columns)]
        cells += [tuple(_cell(c) for c in row) for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        print(f"# {self.suite} — Python {platform.python_version()} on {platform.machine()}")
        for index, row in enumerate(cells):
            print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))
            if index == 0:
                print("  ".join("-" * width for width in widths))
        for note in self.notes:
            print(f"note: {note}")
        print()
        for made in self.checks:
            mark = "met " if made.met else "MISS"
            shown = "missing" if made.value is None else f"{made.value:.4g}"
            because = f" ({made.note})" if made.note else ""
            print(f"[{mark}] {made.name}: {shown} {made.op} {made.limit:g}{because}")
        print(
            json.dumps(
                {
                    "suite": self.suite,
                    "results": {
                        k: None if v is None else round(v, 4) for k, v in self.results.items()
                    },
                    "checks": [c.as_json() for c in self.checks],
                }
            )
        )


def _cell(value: object) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
    return str(value)
