"""The lecture's worked examples, as data: each names its input, operation, settings and the output
the lecture shows, so tests and ``cnnlab conv --example NAME`` reproduce them exactly.

The padding, stride, dilation and pooling figures are Dumoulin & Visin's ("A guide to convolution
arithmetic for deep learning", 2016); the lecture states their sizes, and the pooling figures (1.5,
1.6) also show their outputs (averages to one decimal), which are checked here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnlab.ops._args import OpArgumentError

__all__ = ["Example", "EXAMPLES", "get_example"]

LECTURE_5X5 = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]
LECTURE_KERNEL = [[0, 1, 2], [2, 2, 0], [0, 1, 2]]
SHARPEN_IMAGE = [[60, 113, 56, 139, 85], [73, 121, 54, 84, 128], [131, 99, 70, 129, 127],
                 [80, 57, 115, 69, 134], [104, 126, 123, 95, 130]]
SHARPEN_KERNEL = [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]


def _grid(n: int) -> list[list[int]]:
    """A small n x n input with varied digits (the figures' inputs are arbitrary; only shapes matter)."""
    return ((np.arange(n * n).reshape(n, n) * 7) % 4).tolist()


@dataclass(frozen=True)
class Example:
    """One worked example: ``trace2d(input, kernel, op, **options)`` must give ``expected``.

    ``expected`` is the full output matrix, or (where the lecture shows only some of it) a dict
    ``{(row, col): value}``; ``shape`` is the output shape the lecture states.
    """

    description: str
    source: str  # where in the lecture
    input: Any
    op: str = "correlate"
    kernel: Any = None
    options: dict = field(default_factory=dict)
    expected: Any = None
    shape: tuple[int, int] | None = None
    atol: float = 1e-9  # the figures print averages to one decimal

    def check(self, output: np.ndarray) -> list[str]:
        """What differs between ``output`` and the lecture (empty: it matches)."""
        problems = []
        if self.shape is not None and tuple(output.shape) != tuple(self.shape):
            problems.append(f"shape {tuple(output.shape)} != lecture's {tuple(self.shape)}")
        if isinstance(self.expected, dict):
            for pos, v in self.expected.items():
                if output.shape > pos and not np.isclose(output[pos], v, rtol=0, atol=self.atol):
                    problems.append(f"output{list(pos)} = {output[pos]:g} != lecture's {v:g}")
        elif self.expected is not None:
            exp = np.asarray(self.expected, dtype=float)
            if exp.shape != output.shape or not np.allclose(output, exp, rtol=0, atol=self.atol):
                problems.append(f"output differs from the lecture's {exp.tolist()}")
        return problems


EXAMPLES: dict[str, Example] = {
    "lecture-3x3": Example(
        "3x3 kernel over the 5x5 input, no padding, stride 1 (the lecture's nine-step figure)",
        "Basic 2D convolution operations", LECTURE_5X5, "correlate", LECTURE_KERNEL,
        expected=[[12, 12, 17], [10, 17, 19], [9, 6, 14]], shape=(3, 3)),
    "sharpen": Example(
        "sharpening kernel on the zero-padded 5x5 image (\"This is what you learn!\"): first output 114",
        "Basic 2D convolution operations", SHARPEN_IMAGE, "correlate", SHARPEN_KERNEL, {"padding": 1},
        expected={(0, 0): 114}, shape=(5, 5)),
    "maxpool-10x10": Example(
        "nn.MaxPool2d(2) on arange(100).reshape(10, 10)", "Max pooling example - kernel size = (2,2)",
        np.arange(100).reshape(10, 10).tolist(), "max", options={"kernel_size": 2},
        expected=(np.arange(100).reshape(10, 10)[1::2, 1::2]).tolist(), shape=(5, 5)),
    "no-padding": Example("i=4, k=3, s=1, p=0: 4x4 -> 2x2 (figure 2.1)", "Padding", _grid(4), "correlate",
                          np.ones((3, 3), int).tolist(), shape=(2, 2)),
    "half-padding": Example("i=5, k=3, s=1, p=1: 5x5 -> 5x5, \"same\" (figure 2.3)", "Padding", _grid(5),
                            "correlate", np.ones((3, 3), int).tolist(), {"padding": 1}, shape=(5, 5)),
    "full-padding": Example("i=5, k=3, s=1, p=2: 5x5 -> 7x7, \"full\" (figure 2.4)", "Padding", _grid(5),
                            "correlate", np.ones((3, 3), int).tolist(), {"padding": 2}, shape=(7, 7)),
    "stride-2": Example("i=6, k=3, s=2, p=1: 6x6 -> 3x3; the last row and column of padding are never "
                        "covered (figure 2.7)", "Down-sampling: stride > 1", _grid(6), "correlate",
                        np.ones((3, 3), int).tolist(), {"stride": 2, "padding": 1}, shape=(3, 3)),
    "dilation-2": Example("i=7, k=3, d=2, s=1, p=0: 7x7 -> 3x3 (figure 5.1)", "Dilation in Conv2D", _grid(7),
                          "correlate", np.ones((3, 3), int).tolist(), {"dilation": 2}, shape=(3, 3)),
    "avgpool-3x3": Example("3x3 average pooling with stride 1 on a 5x5 input -> 3x3 (figure 1.5)",
                           "Down-sampling: average pooling", LECTURE_5X5, "avg",
                           options={"kernel_size": 3, "stride": 1},
                           expected=[[1.7, 1.7, 1.7], [1.0, 1.2, 1.8], [1.1, 0.8, 1.3]], shape=(3, 3), atol=0.05),
    "maxpool-3x3": Example("3x3 max pooling with stride 1 on a 5x5 input -> 3x3 (figure 1.6)",
                           "Down-sampling: max pooling", LECTURE_5X5, "max", options={"kernel_size": 3, "stride": 1},
                           expected=[[3, 3, 3], [3, 3, 3], [3, 2, 3]], shape=(3, 3)),
}


def get_example(name: str) -> Example:
    try:
        return EXAMPLES[name]
    except KeyError:
        raise OpArgumentError(f"unknown example {name!r}; choose from {', '.join(EXAMPLES)}") from None
