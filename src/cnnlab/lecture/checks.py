"""What the lecture report is made of: :class:`Check` (one checkable statement of the lecture, with cnnlab's value
and a verdict) and :class:`Section` (the checks and figures of one part of the lecture, recorded as it runs).

A check is made only through a :class:`Section` method that decides its verdict, so a check without a verdict
cannot exist; a value given as a function is computed inside the check, and if it raises the check is
``failed`` with that one line, and the rest of the report goes on.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from cnnlab._plot import save_figure
from cnnlab.ops import animate

__all__ = ["Check", "Section", "VERDICTS"]

#: reproduced: cnnlab's value is the lecture's; within: inside a stated tolerance; explained: it differs and the
#: report says precisely why; cited: the lecture's number needs what a laptop does not have (ImageNet, a GPU);
#: failed: it differs unexplained, or computing it raised.
VERDICTS = ("reproduced", "within", "explained", "cited", "failed")


@dataclass
class Check:
    """One of the lecture's checkable statements."""

    section: str
    statement: str
    lecture: Any
    measured: Any
    verdict: str
    command: str | None = None
    tolerance: str | None = None
    explanation: str | None = None
    figure: str | None = None
    budget: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def _jsonable(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


@dataclass
class Section:
    """The checks and figures of one section, recorded as its function runs."""

    key: str
    title: str
    figures_dir: Path
    budget: str = "full"
    checks: list[Check] = field(default_factory=list)
    figures: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    # ---------------------------------------------------------------------------------------- values
    def _value(self, statement: str, value: Any, **about: Any) -> tuple[bool, Any]:
        """``(ok, value)``: a callable is computed here; if it raises, a failed check is recorded."""
        if not callable(value):
            return True, _jsonable(value)
        try:
            return True, _jsonable(value())
        except Exception as e:  # one check's error is that check's verdict, not the report's end
            self._add(statement, about.get("lecture"), None, "failed", explanation=f"failed: {_one_line(e)}",
                      command=about.get("command"), figure=about.get("figure"))
            self.notes.append(f"{statement}: {traceback.format_exception_only(type(e), e)[-1].strip()}")
            return False, None

    def _add(self, statement: str, lecture: Any, measured: Any, verdict: str, **about: Any) -> Check:
        assert verdict in VERDICTS, verdict
        check = Check(self.key, statement, _jsonable(lecture), _jsonable(measured), verdict, **about)
        self.checks.append(check)
        return check

    # ---------------------------------------------------------------------------------------- verdicts
    def exact(self, statement: str, lecture: Any, measured: Any, *, command: str, differs: str | None = None,
              figure: str | None = None, budget: str | None = None) -> Check | None:
        """Reproduced when cnnlab's value equals the lecture's; otherwise explained by ``differs`` (why they
        differ, precisely), or failed."""
        ok, value = self._value(statement, measured, lecture=lecture, command=command, figure=figure)
        if not ok:
            return None
        same = value == _jsonable(lecture)
        verdict = "reproduced" if same else "explained" if differs else "failed"
        return self._add(statement, lecture, value, verdict, command=command, figure=figure, budget=budget,
                         explanation=None if same else differs or "differs from the lecture's value")

    def within(self, statement: str, lecture: float, measured: Any, *, tolerance: float, command: str,
               relative: bool = False, differs: str | None = None, figure: str | None = None,
               budget: str | None = None) -> Check | None:
        """Within when ``|measured - lecture|`` is at most ``tolerance`` (a fraction of the lecture's value
        with ``relative``); otherwise explained by ``differs``, or failed."""
        ok, value = self._value(statement, measured, lecture=lecture, command=command, figure=figure)
        if not ok:
            return None
        limit = tolerance * abs(lecture) if relative else tolerance
        inside = value is not None and abs(float(value) - float(lecture)) <= limit
        stated = f"±{tolerance:.0%}" if relative else f"±{tolerance:g}"
        verdict = "within" if inside else "explained" if differs else "failed"
        return self._add(statement, lecture, value, verdict, command=command, figure=figure, budget=budget,
                         tolerance=stated, explanation=None if inside else differs or f"outside {stated}")

    def explained(self, statement: str, lecture: Any, measured: Any, *, why: str, command: str,
                  figure: str | None = None, budget: str | None = None) -> Check | None:
        """The lecture's number differs from cnnlab's for a known reason, given in ``why``."""
        ok, value = self._value(statement, measured, lecture=lecture, command=command, figure=figure)
        if not ok:
            return None
        return self._add(statement, lecture, value, "explained", command=command, explanation=why, figure=figure,
                         budget=budget)

    def cited(self, statement: str, lecture: Any, *, why: str) -> Check:
        """A number that needs what a laptop does not have; reported as the lecture's, with the reason."""
        return self._add(statement, lecture, None, "cited", explanation=why)

    def shown(self, statement: str, measured: Any, *, command: str, figure: str | None = None,
              lecture: Any = None, budget: str | None = None) -> Check | None:
        """A figure or table the lecture shows without a number to compare (reproduced when it is computed)."""
        ok, value = self._value(statement, measured, lecture=lecture, command=command, figure=figure)
        if not ok:
            return None
        return self._add(statement, lecture, value, "reproduced", command=command, figure=figure, budget=budget)

    # ---------------------------------------------------------------------------------------- figures
    def figure(self, name: str, fig, caption: str) -> str:
        """Save a matplotlib figure as ``figures/<section>-<name>.png``; returns its path relative to the page."""
        file = f"{self.key}-{name}.png"
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        save_figure(fig, self.figures_dir / file, dpi=100)
        rel = f"figures/{file}"
        self.figures.append({"file": rel, "caption": caption})
        return rel

    def animation(self, name: str, trace, caption: str) -> str:
        """The kernel or window of an ``ops.trace2d`` trace sliding step by step, as ``figures/<section>-<name>.gif``
        (what ``cnnlab conv --animate`` writes); returns its path relative to the page."""
        file = f"{self.key}-{name}.gif"
        self.figures_dir.mkdir(parents=True, exist_ok=True)
        animate(trace, self.figures_dir / file, fps=1.5, dpi=60)
        rel = f"figures/{file}"
        self.figures.append({"file": rel, "caption": caption})
        return rel

    def run(self, fn: Callable[["Section"], None]) -> "Section":
        """Run the section's function; an error outside any check becomes one failed check."""
        t0 = time.perf_counter()
        try:
            fn(self)
        except Exception as e:
            self._add(f"the section \"{self.title}\" ran to the end", None, None, "failed",
                      explanation=f"failed: {_one_line(e)}")
        self.seconds = time.perf_counter() - t0
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "seconds": round(self.seconds, 2),
                "checks": [c.to_dict() for c in self.checks], "figures": self.figures, "notes": self.notes}
