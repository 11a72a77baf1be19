"""``cnnlab models`` (the registry), ``cnnlab summary MODEL`` (the layer table) and ``cnnlab rf MODEL``
(receptive fields, and the input region of one unit)."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli._types import BadInput, _key_value, _positive_int
from cnnlab.errors import CnnlabError

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("models", help="list the registered models")
    p.add_argument("--zoo", action="store_true", help="also list torchvision's models (tv:NAME; names only)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)

    p = subparsers.add_parser("summary", help="layer table: output shapes, parameters, MACs, receptive fields",
                              description="One row per layer of any registered or torchvision (tv:NAME) model: output "
                                          "shape, parameters, MACs and the receptive field of its units; totals.")
    _add_anatomy_args(p)
    p.add_argument("--keras", action="store_true",
                   help="count BatchNorm running statistics as non-trainable parameters (as the lecture's tables)")
    p.add_argument("--depth", type=_positive_int, help="fold layers below this nesting depth into their block")
    p.add_argument("--dense-equivalent", action="store_true",
                   help="for each conv, the parameters of a dense layer with the same input and output sizes")
    p.add_argument("--all", action="store_true", help="also rows for view/permute/... operations")
    p.set_defaults(func=run)

    p = subparsers.add_parser("rf", help="receptive fields layer by layer, and the input region one unit sees",
                              description="The receptive field (size, jump, start; input pixel centres at 0.5) of "
                                          "every layer, and with --layer/--unit the input region one output unit "
                                          "sees.")
    _add_anatomy_args(p)
    p.add_argument("--layer", help="a layer name or its index in the table (e.g. 2)")
    p.add_argument("--unit", help="I,J: the unit's position in that layer's map (default: 0,0)")
    p.set_defaults(func=run)


def _add_anatomy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model (`cnnlab models`) or tv:NAME (`cnnlab models --zoo`)")
    p.add_argument("--input", help="C,H,W (default: the size the model is built for)")
    p.add_argument("--model-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument for the model (JSON value), repeatable")
    p.add_argument("--weights", help="a local state dict to load (.safetensors, or .pth read with weights_only)")
    p.add_argument("--json", action="store_true")


def run(a: argparse.Namespace) -> int:
    return {"models": _models, "summary": _summary, "rf": _rf}[a.command](a)


def _models(a: argparse.Namespace) -> int:
    from cnnlab.models import ZOO_PREFIX, count_parameters, create_model, list_models, model_entrypoint, model_info

    rows = []
    for name in list_models(zoo=a.zoo):
        info = model_info(name)
        doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()
        row = {"name": name, "input_size": list(info.input_size), "num_classes": info.num_classes,
               "description": doc[0] if doc else ""}
        if not name.startswith(ZOO_PREFIX):  # building 80 torchvision models takes a while: names only
            m = create_model(name)
            row |= {"params": count_parameters(m), "trainable_params": count_parameters(m, trainable_only=True)}
        rows.append(row)
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        w = max(len(r["name"]) for r in rows)
        for r in rows:
            params = f"{r['params']:>12,}" if "params" in r else " " * 12
            size = "x".join(map(str, r["input_size"]))
            print(f"{r['name']:<{w}}  {params}  {size:>11}  {r['description']}")
    return 0


def _anatomy_model(a: argparse.Namespace):
    """The model and input size for summary/rf. ``--input`` also sets the factory's ``in_channels``
    and ``image_size`` (when it has them and ``--model-arg`` does not), so a model built for 28x28
    can be looked at on 3x32x32."""
    import inspect

    from cnnlab.models import create_model, model_entrypoint, model_info

    info = model_info(a.model)
    size = info.input_size
    kwargs = dict(a.model_arg)
    if a.input is not None:
        try:
            size = tuple(int(v) for v in a.input.replace("x", ",").split(","))
        except ValueError:
            size = ()
        if len(size) not in (2, 3, 4) or min(size) < 1:
            raise BadInput(f"--input must be C,H,W (or C,L / C,D,H,W) positive integers; got {a.input!r}")
        accepted = inspect.signature(model_entrypoint(a.model)).parameters
        if "in_channels" in accepted:
            kwargs.setdefault("in_channels", size[0])
        if "image_size" in accepted and len(size) == 3:
            kwargs.setdefault("image_size", size[1] if size[1] == size[2] else list(size[1:]))
    try:
        model = create_model(a.model, weights=a.weights, **kwargs)
    except CnnlabError:
        raise
    except (TypeError, ValueError) as e:
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise BadInput(f"cannot build {a.model} with {args or 'its defaults'}: {str(e).splitlines()[0]}") from None
    return model, size


def _summary(a: argparse.Namespace) -> int:
    from cnnlab.analysis import summarize

    model, size = _anatomy_model(a)
    s = summarize(model, size, keras=a.keras, depth=a.depth, model_name=a.model, include_quiet=a.all)
    if a.json:
        print(json.dumps(s.to_dict()))
    else:
        print(s.table(dense_equivalent=a.dense_equivalent))
    return 0


def _rf(a: argparse.Namespace) -> int:
    from cnnlab.analysis import unit_region
    from cnnlab.analysis.summary import summarize

    model, size = _anatomy_model(a)
    s = summarize(model, size, model_name=a.model)
    rows = [r for r in s.rows if r.output_shape is not None]
    table = []
    for i, r in enumerate(rows):
        rf = r.receptive_field_dict()
        table.append({"index": i, "name": r.name, "type": r.type, "map_size": list(r.output_shape[1:]) if
                      len(r.output_shape) > 1 else [], "receptive_field": rf,
                      "note": None if rf else ("every input pixel" + (f": {r.rf.note}" if r.rf and r.rf.note else ""))})
    unit = None
    if a.layer is not None or a.unit is not None:
        key = a.layer if a.layer is not None else table[-1]["name"]
        match = [t for t in table if t["name"] == key or str(t["index"]) == key]
        if not match:
            raise BadInput(f"unknown layer {key!r}; valid: {', '.join(t['name'] for t in table)} "
                           f"(or an index 0-{len(table) - 1})")
        row = match[0]
        rf = rows[row["index"]].rf
        try:
            pos = tuple(int(v) for v in (a.unit or "0,0").split(","))
        except ValueError:
            pos = ()
        spatial = len(size) - 1
        if len(pos) != spatial:
            raise BadInput(f"--unit must be {spatial} comma-separated integers (a position in the map); got {a.unit!r}")
        if rf is None or rf.is_global or not rf.axes:
            raise BadInput(f"layer {row['name']!r} has no spatial map: each of its units sees every input pixel")
        axes = rf.ordered()
        if len(axes) != spatial or any(not 0 <= p < m for p, m in zip(pos, row["map_size"][-spatial:])):
            raise BadInput(f"--unit {a.unit} is outside layer {row['name']!r}'s map "
                           f"{'x'.join(map(str, row['map_size'][-spatial:]))}")
        regions = [unit_region(af, p, extent) for af, p, extent in zip(axes, pos, size[1:])]
        unit = {"layer": row["name"], "index": row["index"], "unit": list(pos), "regions": regions}
    if a.json:
        print(json.dumps({"model": a.model, "input": list(size), "layers": table, "unit": unit}))
        return 0
    print(f"{a.model}, input {'x'.join(map(str, size))}: input pixel centres at 0.5, 1.5, ...")
    head = ("", "layer", "type", "map size", "start", "jump", "receptive field")
    body = []
    for t in table:
        rf = t["receptive_field"]
        fmt = lambda v: ", ".join(f"{x:g}" for x in v)  # noqa: E731
        body.append((str(t["index"]), t["name"], t["type"], str(t["map_size"]), fmt(rf["start"]) if rf else "",
                     fmt(rf["jump"]) if rf else "", fmt(rf["size"]) if rf else "all"))
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    for cells in (head, *body):
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip())
    if unit is not None:
        names = ["rows", "columns"] if len(unit["regions"]) == 2 else [f"axis {i}" for i in range(len(unit["regions"]))]
        bounds = ", ".join(f"({r['bounds'][0]:g}, {r['bounds'][1]:g})" for r in unit["regions"])
        unclipped = ", ".join(f"({r['unclipped'][0]:g}, {r['unclipped'][1]:g})" for r in unit["regions"])
        pixels = ", ".join(f"{n} {r['pixels'][0]}-{r['pixels'][1]}" if r["pixels"] else f"{n}: none"
                           for n, r in zip(names, unit["regions"]))
        print(f"\nlayer {unit['index']} ({unit['layer']}), unit {tuple(unit['unit'])}: sees input {pixels} "
              f"(bounds [{bounds}], unclipped [{unclipped}])")
    return 0
