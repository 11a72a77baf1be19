"""Basic 2D convolution operations: convolution against correlation, the worked 5x5 example, the sharpening
kernel, padding, stride, dilation and the padding modes, all from :mod:`cnnlab.ops` (the lecture's examples are
``cnnlab.ops.examples``)."""

from __future__ import annotations

import numpy as np
from matplotlib.patches import Rectangle

from cnnlab._plot import new_figure
from cnnlab.ops import convolve, correlate, pad, trace2d
from cnnlab.ops.examples import EXAMPLES


def _output(name: str) -> np.ndarray:
    ex = EXAMPLES[name]
    return trace2d(ex.input, ex.kernel, ex.op, **ex.options).output


def _animation(s, name: str, caption: str) -> str:
    """The example's kernel sliding step by step (``cnnlab conv --example NAME --animate``)."""
    ex = EXAMPLES[name]
    return s.animation(name, trace2d(ex.input, ex.kernel, ex.op, **ex.options), caption)


def run(s, ctx) -> None:
    rng = np.random.default_rng(0)
    x, k = rng.integers(0, 9, (6, 6)).astype(float), rng.integers(-2, 3, (3, 3)).astype(float)
    s.exact("convolution is correlation with the kernel flipped along both axes (what deep learning calls "
            "convolution is correlation)", True,
            lambda: bool(np.array_equal(convolve(x, k), correlate(x, np.flip(k)))
                         and not np.array_equal(convolve(x, k), correlate(x, k))),
            command='cnnlab conv --input "..." --kernel "..." --op convolve')

    ex = EXAMPLES["lecture-3x3"]
    gif = _animation(s, "lecture-3x3", "the 3x3 kernel sliding over the 5x5 input, step by step")
    s.exact("the 3x3 kernel over the 5x5 input (no padding, stride 1)", ex.expected,
            lambda: _output("lecture-3x3").astype(int).tolist(), command="cnnlab conv --example lecture-3x3 --steps",
            figure=gif)
    s.exact("the sharpening kernel on the zero-padded image: first output", 114,
            lambda: int(_output("sharpen")[0, 0]), command="cnnlab conv --example sharpen")

    for name, lecture, what in (("no-padding", [2, 2], "no padding: 4x4 -> 2x2"),
                                ("half-padding", [5, 5], "half (same) padding: 5x5 -> 5x5"),
                                ("full-padding", [7, 7], "full padding: 5x5 -> 7x7"),
                                ("stride-2", [3, 3], "stride 2 with padding 1: 6x6 -> 3x3"),
                                ("dilation-2", [3, 3], "dilation 2: 7x7 -> 3x3")):
        figure = _animation(s, name, f"{what} ({EXAMPLES[name].description.split(': ', 1)[0]}), step by step")
        s.exact(what, lecture, lambda name=name: list(_output(name).shape),
                command=f"cnnlab conv --example {name} --animate {name}.gif", figure=figure)

    def uncovered() -> list[int]:
        ex = EXAMPLES["stride-2"]
        t = trace2d(ex.input, ex.kernel, ex.op, **ex.options)
        rows = set().union(*(set(step.rows.tolist()) for step in t.steps))
        return [r for r in range(t.padded.shape[0]) if r not in rows]

    s.exact("stride 2 on 6x6 with padding 1: the last row (and column) of the padded 8x8 input is never covered",
            [7], uncovered, command="cnnlab conv --example stride-2 --steps")

    image = np.arange(16, dtype=float).reshape(4, 4)
    modes = {"zeros": ("zeros", 0.0), "constant (9)": ("constant", 9.0), "reflect": ("reflect", 0.0),
             "replicate": ("replicate", 0.0), "circular": ("circular", 0.0)}
    fig, axes = new_figure(1, len(modes), figsize=(2.3 * len(modes), 2.6))
    padded = {}
    for ax, (label, (mode, value)) in zip(axes, modes.items()):
        p = pad(image, ((2, 2), (2, 2)), mode, value)
        padded[label] = p
        ax.imshow(p, cmap="viridis")
        ax.add_patch(Rectangle((1.5, 1.5), 4, 4, fill=False, edgecolor="white", linewidth=1.5))
        ax.set_title(label, fontsize=9)
        ax.set_axis_off()
    fig.suptitle("one 4x4 image padded by 2 in each padding mode", fontsize=10)
    fig.tight_layout()
    file = s.figure("padding-modes", fig, "the padding modes on one 4x4 image (the image inside the white square)")
    s.exact("reflect padding mirrors without repeating the edge; replicate repeats it (first padded row)",
            [[10.0, 9.0, 8.0, 9.0, 10.0, 11.0, 10.0, 9.0], [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 3.0]],
            lambda: [padded["reflect"][0].tolist(), padded["replicate"][0].tolist()],
            command="cnnlab conv --example half-padding --padding-mode reflect", figure=file)
