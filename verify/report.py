"""The verifier's report: one row per check, a verdict, and a readable print-out."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field


def _num(v: float | None) -> str:
    return f"{v:9.2e}" if v is not None else f"{'-':>9}"


class GradcheckError(AssertionError):
    """Raised by Report.raise_if_failed; its message is the printed report."""


@dataclass
class Row:
    check: str  # what was compared, e.g. "dx vs staged graph"
    passed: bool
    max_abs: float | None = None  # max |ours - reference|
    rel: float | None = None  # cs231n rel_error: max |a - b| / max(1e-8, |a| + |b|)
    where: str = ""  # the worst element and what it means, e.g. "[1, 3, 0] n=1, channel 3"
    tol: float | None = None  # the tolerance at the worst element (the one furthest outside its own)
    ratio: float | None = None  # error / tolerance at the worst element: above 1 fails
    cause: str = ""  # the likely mistake, when a hypothesis reproduces the tensor
    hypothesis: str = ""  # its changes, by key ("var_divisor=23+no_mean_path"), for programs
    detail: str = ""  # anything else worth saying (shapes, counts, steps, exceptions)
    estimate: float | None = None  # finite-difference rows: the error estimate at the worst element
    warn: bool = False  # passed, but worth a look (printed WARN)

    @property
    def verdict(self) -> str:
        return "FAIL" if not self.passed else "WARN" if self.warn else "PASS"


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    diagnosis: str = ""  # what the failures add up to, when the diagnosis found it

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.rows)

    @property
    def failures(self) -> list[Row]:
        return [r for r in self.rows if not r.passed]

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, check: str) -> Row | None:
        return next((r for r in self.rows if r.check == check), None)

    def to_dict(self) -> dict:
        return {
            "title": self.title,
            "passed": self.passed,
            "notes": list(self.notes),
            "diagnosis": self.diagnosis,
            "rows": [asdict(r) for r in self.rows],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def raise_if_failed(self) -> None:
        if not self.passed:
            raise GradcheckError(str(self))

    def __str__(self) -> str:
        width = max([len(r.check) for r in self.rows] + [5])
        lines = [
            f"{self.title}: {'PASS' if self.passed else 'FAIL'} "
            f"({len(self.rows) - len(self.failures)}/{len(self.rows)} checks pass)"
        ]
        lines += [f"  note: {n}" for n in self.notes]
        head = (
            f"  {'check':<{width}}  {'max abs':>9}  {'rel err':>9}  {'allowed':>9}  {'err/allowed':>11}  result  where"
        )
        lines += [head, "  " + "-" * (len(head) + 20)]
        pad = f"  {'':<{width}}    "
        for r in self.rows:
            ratio = f"{r.ratio:11.2g}" if r.ratio is not None else f"{'-':>11}"
            lines.append(
                f"  {r.check:<{width}}  {_num(r.max_abs)}  {_num(r.rel)}  {_num(r.tol)}  {ratio}  "
                f"{r.verdict:<6}  {r.where if r.verdict != 'PASS' else ''}".rstrip()
            )
            if r.detail and r.verdict != "PASS":
                lines.append(pad + r.detail)
            if r.cause:
                lines.append(pad + f"likely cause: {r.cause}")
        if self.diagnosis:
            lines.append(f"  diagnosis: {self.diagnosis}")
        return "\n".join(lines)


class Progress:
    """A one-line progress bar on a terminal; silent when stderr is a file or a pipe."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.live = sys.stderr.isatty()

    def step(self, label: str) -> None:
        self.done += 1
        if self.live:
            filled = int(30 * self.done / self.total)
            sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {label:<48.48}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.live:
            sys.stderr.write("\r" + " " * 90 + "\r")
