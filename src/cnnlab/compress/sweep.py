"""``cnnlab compress RUN --sweep``: every method over a range of settings, as a table and a Pareto plot."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab._outdir import SWEEP as SWEEP_OUTPUT, claim_output
from cnnlab._plot import new_figure, save_figure
from cnnlab.compress.run import compress_run, read_compression, setting_name

__all__ = ["SWEEP", "compress_sweep", "format_sweep", "plot_sweep"]

#: (method, settings) in the order they run: cheap first.
SWEEP: list[tuple[str, dict[str, Any]]] = [
    ("quantize", {}),
    ("cluster", {"bits": 2}), ("cluster", {"bits": 3}), ("cluster", {"bits": 4}), ("cluster", {"bits": 6}),
    ("cluster", {"bits": 8}),
    ("prune", {"sparsity": 0.5}), ("prune", {"sparsity": 0.8}), ("prune", {"sparsity": 0.9}),
    ("prune", {"sparsity": 0.95}),
    ("prune", {"sparsity": 0.9, "steps": 3}),
    ("prune", {"sparsity": 0.375, "structured": True}), ("prune", {"sparsity": 0.5, "structured": True}),
    ("inq", {"bits": 3}), ("inq", {"bits": 5}),
    ("binarize", {"mode": "bwn"}), ("binarize", {"mode": "xnor"}),
]


def compress_sweep(run: str | os.PathLike, out: str | os.PathLike | None = None, *,
                   configs: list[tuple[str, dict[str, Any]]] | None = None, overwrite: bool = False,
                   threads: int = 2, log: Callable[[str], None] = print, **kwargs: Any) -> dict[str, Any]:
    """Run :func:`~cnnlab.compress.run.compress_run` for each of ``configs`` (default :data:`SWEEP`) into
    ``out/<name>`` (default ``<run>-sweep``); a finished one there is reused. Writes ``sweep.json``,
    ``sweep.md`` and ``sweep.png`` in ``out``. ``kwargs`` go to every ``compress_run`` call."""
    run = Path(run)
    out = Path(out) if out is not None else run.parent / f"{run.name}-sweep"
    with claim_output(out, SWEEP_OUTPUT, inputs=(run,)):  # one writer; a folder of cnnlab's
        rows = []
        for method, settings in configs if configs is not None else SWEEP:
            name = setting_name(method, settings)
            path = out / name
            if (path / "compression.json").is_file() and not overwrite:
                log(f"{name}: reusing {path}")
                record = read_compression(path)
            else:
                record = compress_run(run, method, settings=settings, out=path, overwrite=True, threads=threads,
                                      log=log, **kwargs)
            rows.append({"name": name, **{k: v for k, v in record.items() if k not in ("report", "machine")}})
        result = {"run": str(run), "rows": rows, "threads": threads}
        atomic_write_json(out / "sweep.json", result)
        atomic_write_text(out / "sweep.md", format_sweep(result, markdown=True))
        plot_sweep(result, out / "sweep.png")
        log(f"wrote {out / 'sweep.json'}, {out / 'sweep.md'}, {out / 'sweep.png'}")
        return result


def _pareto(rows: list[dict[str, Any]], cost: str) -> set[str]:
    """Names of rows no other row beats on both ``cost`` (lower) and accuracy (higher)."""
    pts = [(r[cost], r["test_accuracy"], r["name"]) for r in rows if r.get(cost) is not None]
    return {n for c, a, n in pts if not any(c2 <= c and a2 >= a and (c2, a2) != (c, a) for c2, a2, _ in pts)}


def format_sweep(result: dict[str, Any], markdown: bool = False) -> str:
    rows = result["rows"]
    if not rows:
        return "no rows"
    first = rows[0]
    head = ["setting", "test acc", "vs float (points)", "stored bytes", "smaller", "ms b1", "ms b256", "speed-up b256",
            "Pareto (size)"]
    front = _pareto(rows, "size_bytes")
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    body = [["float32 (baseline)", f"{100 * first['baseline_test_accuracy']:.2f}%", "0.00",
             f"{first['baseline_size_bytes']:,}", "1.0x", fmt(first.get("baseline_latency_ms_b1"), ".2f"),
             fmt(first.get("baseline_latency_ms_b256"), ".1f"), "1.00x", ""]]
    for r in rows:
        body.append([r["name"], f"{100 * r['test_accuracy']:.2f}%", f"{-r['accuracy_drop_points']:+.2f}",
                     f"{r['size_bytes']:,}", f"{r['size_ratio']:.1f}x", fmt(r.get("latency_ms_b1"), ".2f"),
                     fmt(r.get("latency_ms_b256"), ".1f"),
                     "-" if r.get("speedup_b256") is None else f"{r['speedup_b256']:.2f}x",
                     "yes" if r["name"] in front else ""])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(b) + " |" for b in body]
    else:
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)) for row in [head, *body]]
    return "\n".join(lines)


def plot_sweep(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Accuracy against stored size (log scale) and against b256 latency, Pareto fronts drawn."""
    rows = result["rows"]
    fig, axes = new_figure(1, 2, figsize=(12, 4.8))
    for ax, cost, base_key, label in ((axes[0], "size_bytes", "baseline_size_bytes", "stored bytes (log)"),
                                      (axes[1], "latency_ms_b256", "baseline_latency_ms_b256",
                                       f"CPU latency, batch 256 (ms, {result.get('threads')} threads)")):
        pts = [r for r in rows if r.get(cost) is not None]
        for r in pts:
            ax.scatter(r[cost], 100 * r["test_accuracy"], s=28)
            ax.annotate(r["name"], (r[cost], 100 * r["test_accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        if rows and rows[0].get(base_key) is not None:
            ax.scatter(rows[0][base_key], 100 * rows[0]["baseline_test_accuracy"], marker="*", s=120, c="k")
            ax.annotate("float32", (rows[0][base_key], 100 * rows[0]["baseline_test_accuracy"]), fontsize=8,
                        xytext=(3, -10), textcoords="offset points")
        front = sorted((r[cost], 100 * r["test_accuracy"]) for r in pts if r["name"] in _pareto(rows, cost))
        if front:
            ax.plot(*zip(*front), "k--", lw=0.8, label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        if cost == "size_bytes":
            ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"compression of {result['run']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
