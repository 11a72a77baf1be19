"""``cnnlab lecture``: every section of the lecture run in its order, then one page (``index.html``: inline CSS,
relative images, no remote resources), ``lecture.json`` (every check) and ``lecture.md``, and a scoreboard.

The sections are functions ``(section, context) -> None`` (:data:`SECTIONS`) that record checks through the
:class:`~cnnlab.lecture.checks.Section` they are given; the page is rendered from those records only.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cnnlab._env import machine_info
from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab._outdir import LECTURE, claim_output
from cnnlab.errors import CnnlabError
from cnnlab.experiments import run_fmnist
from cnnlab.lecture import (backprop, conv_layer, convolution, dims, fashion_mnist, pooling, reduced, structures,
                             visualization)
from cnnlab.lecture.checks import VERDICTS, Section

__all__ = ["BUDGETS", "LectureContext", "LectureError", "SECTIONS", "format_scoreboard", "run_lecture"]

BUDGETS = ("quick", "full")
#: What the quick budget trains the Fashion-MNIST models on: a look in a few minutes, its numbers marked.
FMNIST_QUICK = {"epochs": 2, "subset": 10_000}


class LectureError(CnnlabError):
    """A bad setting of the lecture report (an unknown budget or section)."""


@dataclass
class LectureContext:
    """What sections share: where the report goes, the budget, whether finished runs are reused, the data."""

    out: Path
    budget: str = "full"
    reuse: bool = True
    data_dir: str | None = None
    catsdogs: str | None = None
    log: Callable[[str], None] = print
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def quick(self) -> bool:
        return self.budget == "quick"

    @property
    def budget_note(self) -> str | None:
        """What a check trained on says of its budget (None for the full budget)."""
        return f"quick budget: {FMNIST_QUICK['epochs']} epochs on {FMNIST_QUICK['subset']:,} images" if self.quick \
            else None

    def fmnist(self) -> dict[str, Any]:
        """The lecture's CNN and MLP on Fashion-MNIST (``cnnlab experiment fmnist`` into ``OUT/fmnist``), trained
        once per report, reused when finished with the same recipe (unless ``reuse`` is off); a run of another
        recipe there (an older cnnlab's) is trained again."""
        if "fmnist" not in self.cache:
            overrides: dict[str, Any] = dict(FMNIST_QUICK) if self.quick else {}
            if self.data_dir is not None:
                overrides["data_dir"] = self.data_dir
            self.cache["fmnist"] = run_fmnist(self.out / "fmnist", overwrite=not self.reuse, replace_stale=True,
                                              overrides=overrides, log=self.log, progress=False)
        return self.cache["fmnist"]

    def fmnist_command(self) -> str:
        extra = f" --epochs {FMNIST_QUICK['epochs']} --subset {FMNIST_QUICK['subset']}" if self.quick else ""
        return f"cnnlab experiment fmnist --out {self.out / 'fmnist'}{extra}"


#: (key, title, function) in the lecture's order.
SECTIONS: list[tuple[str, str, Callable[[Section, LectureContext], None]]] = [
    ("convolution", "Basic 2D convolution operations", convolution.run),
    ("conv-layer", "The PyTorch Conv2d layer", conv_layer.run),
    ("pooling", "Pooling and stride", pooling.run),
    ("fashion-mnist", "The Fashion-MNIST example", fashion_mnist.run),
    ("visualization", "Visualization methods", visualization.run),
    ("structures", "Some common CNN structures", structures.run),
    ("reduced", "Reduced complexity CNN architectures", reduced.run),
    ("backprop", "Outline of back-propagation for CNNs", backprop.run),
    ("dims", "1D and 3D convolutions", dims.run),
]


def run_lecture(out: str | Path = "runs/lecture", *, budget: str = "full", reuse: bool = True,
                data_dir: str | None = None, catsdogs: str | None = None, sections: Sequence[str] | None = None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the lecture's sections (all, or the ``sections`` keys given) and write the report into ``out``."""
    if budget not in BUDGETS:
        raise LectureError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    known = [key for key, _, _ in SECTIONS]
    chosen = list(sections) if sections else known
    unknown = [s for s in chosen if s not in known]
    if unknown:
        raise LectureError(f"unknown section {unknown[0]!r}; valid: {', '.join(known)}")
    out = Path(out)
    started = time.time()
    with claim_output(out, LECTURE):
        ctx = LectureContext(out, budget, reuse, data_dir, catsdogs, log)
        done = []
        for key, title, fn in SECTIONS:
            if key not in chosen:
                continue
            section = Section(key, title, out / "figures", budget).run(lambda s: fn(s, ctx))
            counts = Counter(c.verdict for c in section.checks)
            log(f"{title}: {len(section.checks)} checks ({_counts(counts)}) in {section.seconds:.1f}s")
            done.append(section)
        result = {"budget": budget, "date": time.strftime("%Y-%m-%d %H:%M"), "seconds": round(time.time() - started, 1),
                  "machine": machine_info(), "sections": [s.to_dict() for s in done]}
        result["scoreboard"] = dict(Counter(c["verdict"] for s in result["sections"] for c in s["checks"]))
        atomic_write_json(out / "lecture.json", result)
        atomic_write_text(out / "lecture.md", _markdown(result))
        atomic_write_text(out / "index.html", _html(result))
    result["index"] = str(out / "index.html")
    return result


def _counts(counts: Counter) -> str:
    return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v]) or "none"


def format_scoreboard(result: dict[str, Any]) -> str:
    """The lines ``cnnlab lecture`` prints: one per section, then the totals."""
    lines = []
    total: Counter = Counter()
    for s in result["sections"]:
        c = Counter(x["verdict"] for x in s["checks"])
        total += c
        lines.append(f"{s['title']:<40} {len(s['checks']):>3} checks  {_counts(c)}")
    lines.append(f"{'the lecture':<40} {sum(total.values()):>3} checks  {_counts(total)}"
                 + (f"  ({result['budget']} budget)" if result["budget"] != "full" else ""))
    failed = [f"  failed: {s['title']}: {x['statement']}: {x['explanation']}" for s in result["sections"]
              for x in s["checks"] if x["verdict"] == "failed"]
    return "\n".join(lines + failed)


#: Items of a list shown in the page's table; the rest are counted (lecture.json keeps every one).
_SHOWN_ITEMS = 12


def _fmt(v: Any) -> str:
    """A value as the page's table shows it: numbers with separators, a matrix row by row (``[1, 2; 3, 4]``),
    a mapping as ``key: value``, and a long list cut to its first items and a count of the rest."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        if v and all(isinstance(r, (list, tuple)) and r and not isinstance(r[0], (list, tuple, dict)) for r in v):
            inner = [", ".join(_fmt(x) for x in r) for r in v]  # a matrix: its rows, split by ;
            return "[" + "; ".join(inner[:_SHOWN_ITEMS]) + _more(len(v), "more rows") + "]"
        return "[" + ", ".join(_fmt(x) for x in v[:_SHOWN_ITEMS]) + _more(len(v), "more") + "]"
    return str(v)


def _more(n: int, what: str) -> str:
    return f", ... ({n - _SHOWN_ITEMS} {what})" if n > _SHOWN_ITEMS else ""


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"# The lecture, reproduced ({result['budget']} budget)", "",
             f"{result['date']}, {result['machine'].get('cpu', '')}; "
             f"{result['seconds']} s.", "", "```", format_scoreboard(result), "```", ""]
    for s in result["sections"]:
        lines += [f"## {s['title']}", "", "| statement | lecture | cnnlab | verdict | command |", "|---|---|---|---|---|"]
        for c in s["checks"]:
            verdict = c["verdict"] + (f" ({c['tolerance']})" if c.get("tolerance") else "")
            why = f"<br>{c['explanation']}" if c.get("explanation") else ""
            cells = [c["statement"], _fmt(c["lecture"]), _fmt(c["measured"]), verdict + why,
                     f"`{c['command']}`" if c.get("command") else ""]
            lines.append("| " + " | ".join(str(x).replace("|", "\\|").replace("\n", " ") for x in cells) + " |")
        lines += [f"![{f['caption']}]({f['file']})" for f in s["figures"]] + [""]
    return "\n".join(lines)


_CSS = ("body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1150px;color:#222;padding:0 1em}"
        "table{border-collapse:collapse;width:100%;margin:.5em 0 1em}td,th{border:1px solid #ddd;padding:4px 7px;"
        "vertical-align:top;font-size:92%}th{background:#f4f4f4;text-align:left}code{font-size:90%}"
        ".v-reproduced{background:#e6f4e6}.v-within{background:#eef6e0}.v-explained{background:#fff6dc}"
        ".v-cited{background:#eef0f6}.v-failed{background:#fbe3e3}figure{display:inline-block;margin:.5em 1em .5em 0;"
        "max-width:100%}figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:88%;color:#444}"
        "nav a{margin-right:1em}.why{color:#555;font-size:90%}pre{background:#f7f7f7;padding:.6em;overflow:auto}")


def _html(result: dict[str, Any]) -> str:
    e = html.escape
    parts = [f"<h1>The lecture, reproduced</h1><p>{e(result['date'])}; budget <b>{e(result['budget'])}</b>; "
             f"{e(str(result['seconds']))} s on {e(str(result['machine'].get('cpu', '')))}.</p>",
             f"<pre>{e(format_scoreboard(result))}</pre><nav>"
             + "".join(f'<a href="#{e(s["key"])}">{e(s["title"])}</a>' for s in result["sections"]) + "</nav>"]
    for s in result["sections"]:
        rows = []
        for c in s["checks"]:
            why = f'<div class="why">{e(c["explanation"])}</div>' if c.get("explanation") else ""
            tol = f" ({e(c['tolerance'])})" if c.get("tolerance") else ""
            budget = f" <i>{e(c['budget'])}</i>" if c.get("budget") else ""
            rows.append(f'<tr class="v-{e(c["verdict"])}"><td>{e(c["statement"])}</td><td>{e(_fmt(c["lecture"]))}</td>'
                        f'<td>{e(_fmt(c["measured"]))}</td><td>{e(c["verdict"])}{tol}{budget}{why}</td>'
                        f'<td><code>{e(c.get("command") or "")}</code></td></tr>')
        figures = "".join(f'<figure><img src="{e(f["file"])}" alt="{e(f["caption"])}"><figcaption>{e(f["caption"])}'
                          f"</figcaption></figure>" for f in s["figures"])
        parts.append(f'<section id="{e(s["key"])}"><h2>{e(s["title"])}</h2><p class="why">{len(s["checks"])} checks '
                     f'in {s["seconds"]} s</p><table><tr><th>statement</th><th>lecture</th><th>cnnlab</th>'
                     f"<th>verdict</th><th>command</th></tr>{''.join(rows)}</table>{figures}</section>")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cnnlab: the lecture, reproduced'
            f"</title><style>{_CSS}</style></head><body>{''.join(parts)}</body></html>\n")
