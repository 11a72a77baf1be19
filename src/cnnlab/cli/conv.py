"""``cnnlab conv``: a 2D correlation, convolution or pooling on a small matrix with the reference math
(``ops.trace2d``): the output, ``--steps``, ``--json``, or ``--animate``."""

from __future__ import annotations

import argparse
import json
import sys

from cnnlab.cli._types import BadInput, _finite_float, _positive_float

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "conv", help="convolution arithmetic: a 2D correlation/convolution/pooling step by step, or animated",
        description="Compute a 2D correlation (deep learning's convolution), convolution or pooling on a "
                    "small matrix with cnnlab's reference math: the output, each position's products "
                    "(--steps), or an animation of the kernel sliding (--animate).",
        epilog='example: cnnlab conv --input "3 3 2 1 0; 0 0 1 3 1; 3 1 2 2 3; 2 0 0 2 2; 2 0 0 0 1" '
               '--kernel "0 1 2; 2 2 0; 0 1 2" --steps')
    _add_conv_args(p)
    p.set_defaults(func=run)


def _add_conv_args(p: argparse.ArgumentParser) -> None:
    from cnnlab.ops import OPS, PADDING_MODES
    from cnnlab.ops.examples import EXAMPLES

    p.add_argument("--example", metavar="NAME",
                   help=f"one of the lecture's worked examples: {', '.join(EXAMPLES)} (or 'list')")
    p.add_argument("--input", help='the matrix: "3 3 2; 0 1 2" (rows by ;), or a .npy / .csv file')
    p.add_argument("--kernel", help="the kernel matrix (same forms); for pooling only its shape is used")
    p.add_argument("--op", choices=OPS, default=None,
                   help="correlate (deep learning's convolution, default), convolve (kernel flipped), max, avg")
    p.add_argument("--size", help="pooling window: K or KH,KW (default: the kernel's shape)")
    p.add_argument("--stride", help="S or SH,SW (default 1; pooling: the window size)")
    p.add_argument("--padding", help="P, PH,PW, TOP,BOTTOM,LEFT,RIGHT, or valid / same / full (default 0)")
    p.add_argument("--dilation", help="D or DH,DW (default 1)")
    p.add_argument("--padding-mode", choices=PADDING_MODES, default=None, help="how to pad (default zeros)")
    p.add_argument("--value", type=_finite_float, default=None, help="the constant for --padding-mode constant")
    p.add_argument("--ceil-mode", action="store_true", help="pooling: round the output size up")
    p.add_argument("--exclude-pad", action="store_true", help="avg pooling: divide by real pixels only")
    p.add_argument("--steps", action="store_true", help="print every position's products and sum")
    p.add_argument("--json", action="store_true", help="print the whole trace as JSON")
    p.add_argument("--animate", metavar="PATH", help="draw the kernel sliding: PATH.gif, or PATH.png frames")
    p.add_argument("--fps", type=_positive_float, default=1.5, help="animation frames per second (1.5)")


#: The flag of each parameter of ``ops.conv_setup`` (its errors name parameters; this command's name flags).
_FLAGS = {"x": "--input", "kernel": "--kernel", "example": "--example", "op": "--op", "kernel_size": "--size",
          "stride": "--stride", "padding": "--padding", "dilation": "--dilation", "padding_mode": "--padding-mode",
          "value": "--value", "ceil_mode": "--ceil-mode", "count_include_pad": "--exclude-pad"}


def run(a: argparse.Namespace) -> int:
    from cnnlab.ops import OptionsError, conv_setup, parse_ints, parse_padding, trace2d
    from cnnlab.ops.examples import EXAMPLES
    from cnnlab.ops.matrix import format_matrix, load_matrix
    from cnnlab.ops.steps import check_trace2d

    if a.example == "list":
        for name, ex in EXAMPLES.items():
            print(f"{name:15s} {ex.description}")
        return 0
    try:
        padding = parse_padding(a.padding)
        setup = conv_setup(None if a.input is None else load_matrix(a.input, "--input"),
                           None if a.kernel is None else load_matrix(a.kernel, "--kernel"), a.op,
                           example=a.example, kernel_size=parse_ints(a.size, "kernel_size"), stride=parse_ints(a.stride, "stride"),
                           padding=padding, dilation=parse_ints(a.dilation, "dilation"), padding_mode=a.padding_mode,
                           value=a.value, ceil_mode=a.ceil_mode, count_include_pad=not a.exclude_pad)
        x, kernel, op, options, example = setup
        if a.json:  # the trace, its dict and the JSON text, before any of them is made
            check_trace2d(x, kernel, op, as_json=True, **options)
        trace = trace2d(x, kernel, op, **options)
        frames = []
        if a.animate:
            from cnnlab.ops.animation import AnimationPathError, animate

            try:
                frames = animate(trace, a.animate, fps=a.fps)
            except AnimationPathError as e:
                raise BadInput(f"--animate {e}") from None
    except OptionsError as e:
        raise BadInput(e.message(_FLAGS)) from None
    except ValueError as e:
        raise BadInput(str(e)) from None
    for note in trace.notes:
        print(f"note: {note}", file=sys.stderr)

    if a.json:
        d = trace.to_dict()
        if example is not None:
            d["example"] = {"name": a.example, "matches_lecture": not example.check(trace.output)}
        if frames:
            d["animation"] = [str(f) for f in frames]
        print(json.dumps(d))
        return 0
    if example is not None:
        print(f"{a.example}: {example.description}")
    names = {"correlate": "correlation", "convolve": "convolution", "max": "max pooling", "avg": "average pooling"}
    (t, b), (l, r) = trace.pads
    pair = lambda v: str(v[0]) if v[0] == v[1] else f"{v[0]},{v[1]}"  # noqa: E731
    padding = "none" if not (t or b or l or r) else (
        f"{t}" if t == b == l == r else f"top {t}, bottom {b}, left {l}, right {r}") + f" ({trace.padding_mode})"
    print(f"{names[trace.op]}: input {trace.input.shape[0]}x{trace.input.shape[1]}, window "
          f"{trace.kernel_size[0]}x{trace.kernel_size[1]}, stride {pair(trace.stride)}, padding {padding}, "
          f"dilation {pair(trace.dilation)} -> output {trace.output.shape[0]}x{trace.output.shape[1]}")
    if a.steps:
        for step in trace.steps:
            print(f"  [{step.index[0]},{step.index[1]}] {step.formula(trace.op)}")
    print(format_matrix(trace.output))
    if example is not None:
        problems = example.check(trace.output)
        print("matches the lecture" if not problems else "DIFFERS from the lecture: " + "; ".join(problems))
    for f in frames[:1]:
        print(f"animation: {f}" + (f" (+{len(frames) - 1} more frames)" if len(frames) > 1 else ""))
    return 0
