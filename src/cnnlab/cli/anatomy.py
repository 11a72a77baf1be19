"""``cnnlab models`` (the registry), ``cnnlab summary MODEL`` (the layer table) and ``cnnlab rf MODEL``
(receptive fields, and the input region of one unit)."""

from __future__ import annotations

import argparse
import json

from cnnlab.cli._types import _input_size, _ints, _key_value, _positive_int, add_pretrained_arg

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
    p.add_argument("--unit", type=_ints, help="I,J: the unit's position in that layer's map (default: 0,0)")
    p.set_defaults(func=run)


def _add_anatomy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a registered model (`cnnlab models`) or tv:NAME (`cnnlab models --zoo`)")
    p.add_argument("--input", type=_input_size, help="C,H,W (default: the size the model is built for)")
    p.add_argument("--model-arg", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                   help="constructor argument for the model (JSON value), repeatable")
    p.add_argument("--weights", help="a local state dict to load (.safetensors, or .pth read with weights_only)")
    add_pretrained_arg(p)
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


def _model(a: argparse.Namespace):
    """The model and input size for summary/rf: ``--input`` also sets the constructor's ``in_channels`` and
    ``image_size`` (:func:`cnnlab.models.input_kwargs`), so a model built for 28x28 can be looked at on 3x32x32."""
    from cnnlab.models import build_for_input, model_info

    model = build_for_input(a.model, a.input, weights=a.weights, pretrained=a.pretrained, **dict(a.model_arg))
    return model, a.input or model_info(a.model).input_size


def _summary(a: argparse.Namespace) -> int:
    from cnnlab.analysis import summarize

    model, size = _model(a)
    s = summarize(model, size, keras=a.keras, depth=a.depth, model_name=a.model, include_quiet=a.all)
    print(json.dumps(s.to_dict()) if a.json else s.table(dense_equivalent=a.dense_equivalent))
    return 0


def _rf(a: argparse.Namespace) -> int:
    from cnnlab.analysis import field_report, summarize

    model, size = _model(a)
    report = field_report(summarize(model, size, model_name=a.model), layer=a.layer, unit=a.unit)
    print(json.dumps(report.to_dict()) if a.json else report.text())
    return 0
