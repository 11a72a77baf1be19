"""The receptive-field view of a model (``cnnlab rf``, the explorer): every layer's field (size, jump,
start; input pixel centres at 0.5, 1.5, ...) and, for one unit of one layer, the input region it sees.

Built on a :class:`~cnnlab.analysis.summary.Summary`; both faces only print or draw a :class:`FieldReport`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cnnlab.analysis.receptive_field import unit_region
from cnnlab.analysis.summary import LayerRow, Summary
from cnnlab.errors import CnnlabError

__all__ = ["FieldError", "FieldReport", "field_report"]


class FieldError(CnnlabError):
    """A layer or unit that does not exist in the model's table; the message names the valid ones."""


@dataclass(frozen=True)
class FieldReport:
    """``layers``: one dict per layer with an output (index, name, type, map_size, receptive_field, note);
    ``unit``: the region one unit sees ({layer, index, unit, regions}, one region per spatial axis) or None."""

    model: str
    input_size: tuple[int, ...]
    layers: list[dict[str, Any]]
    unit: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "input": list(self.input_size), "layers": self.layers, "unit": self.unit}

    def text(self) -> str:
        """The aligned table (and the unit's region) that ``cnnlab rf`` prints."""
        fmt = lambda v: ", ".join(f"{x:g}" for x in v)  # noqa: E731
        head = ("", "layer", "type", "map size", "start", "jump", "receptive field")
        body = []
        for t in self.layers:
            rf = t["receptive_field"]
            body.append((str(t["index"]), t["name"], t["type"], str(t["map_size"]), fmt(rf["start"]) if rf else "",
                         fmt(rf["jump"]) if rf else "", fmt(rf["size"]) if rf else "all"))
        widths = [max(len(c) for c in col) for col in zip(head, *body)]
        lines = [f"{self.model}, input {'x'.join(map(str, self.input_size))}: input pixel centres at 0.5, 1.5, ..."]
        lines += ["  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in (head, *body)]
        if self.unit is not None:
            regions = self.unit["regions"]
            names = ["rows", "columns"] if len(regions) == 2 else [f"axis {i}" for i in range(len(regions))]
            bounds = ", ".join(f"({r['bounds'][0]:g}, {r['bounds'][1]:g})" for r in regions)
            unclipped = ", ".join(f"({r['unclipped'][0]:g}, {r['unclipped'][1]:g})" for r in regions)
            pixels = ", ".join(f"{n} {r['pixels'][0]}-{r['pixels'][1]}" if r["pixels"] else f"{n}: none"
                               for n, r in zip(names, regions))
            lines += ["", f"layer {self.unit['index']} ({self.unit['layer']}), unit {tuple(self.unit['unit'])}: sees "
                          f"input {pixels} (bounds [{bounds}], unclipped [{unclipped}])"]
        return "\n".join(lines)


def _layer_dict(index: int, row: LayerRow) -> dict[str, Any]:
    rf = row.receptive_field_dict()
    shape = row.output_shape
    note = None if rf else "every input pixel" + (f": {row.rf.note}" if row.rf and row.rf.note else "")
    return {"index": index, "name": row.name, "type": row.type, "map_size": list(shape[1:]) if len(shape) > 1 else [],
            "receptive_field": rf, "note": note}


def field_report(summary: Summary, *, layer: str | int | None = None,
                 unit: Sequence[int] | None = None) -> FieldReport:
    """Every layer's receptive field and, when ``layer`` or ``unit`` is given, the input region of
    ``unit`` (a position in the layer's map; default the first) of ``layer`` (a name or an index in
    the table; default the last layer)."""
    rows = [r for r in summary.rows if r.output_shape is not None]
    table = [_layer_dict(i, r) for i, r in enumerate(rows)]
    size = tuple(summary.input_size)
    if layer is None and unit is None:
        return FieldReport(summary.model, size, table)
    key = table[-1]["name"] if layer is None else str(layer)
    match = [t for t in table if t["name"] == key or str(t["index"]) == key]
    if not match:
        raise FieldError(f"unknown layer {layer!r}; valid: {', '.join(t['name'] for t in table)} "
                         f"(or an index 0-{len(table) - 1})")
    row = match[0]
    spatial = len(size) - 1
    pos = tuple(unit) if unit is not None else (0,) * spatial
    if len(pos) != spatial or not all(isinstance(p, int) and not isinstance(p, bool) for p in pos):
        raise FieldError(f"unit must be {spatial} integers (a position in layer {row['name']!r}'s map), "
                         f"got {list(pos)}")
    rf = rows[row["index"]].rf
    if rf is None or rf.is_global or not rf.axes:
        raise FieldError(f"layer {row['name']!r} has no spatial map: each of its units sees every input pixel")
    axes = rf.ordered()
    extent = row["map_size"][-spatial:]
    if len(axes) != spatial or any(not 0 <= p < m for p, m in zip(pos, extent)):
        raise FieldError(f"unit {list(pos)} is outside layer {row['name']!r}'s map {'x'.join(map(str, extent))}")
    regions = [unit_region(af, p, n) for af, p, n in zip(axes, pos, size[1:])]
    return FieldReport(summary.model, size, table,
                       {"layer": row["name"], "index": row["index"], "unit": list(pos), "regions": regions})
