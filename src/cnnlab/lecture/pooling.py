"""Pooling and stride: 3x3 average and max pooling on the lecture's 5x5 input, and ``nn.MaxPool2d(2)`` on
``arange(100)`` (the reference ops, checked against PyTorch's own layer)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from cnnlab.ops import trace2d
from cnnlab.ops.examples import EXAMPLES


def _trace(name: str):
    ex = EXAMPLES[name]
    return trace2d(ex.input, ex.kernel, ex.op, **ex.options)


def _run(name: str) -> np.ndarray:
    return _trace(name).output


def run(s, ctx) -> None:
    avg = _run("avgpool-3x3")
    avg_gif = s.animation("avgpool-3x3", _trace("avgpool-3x3"),
                          "3x3 average pooling, stride 1, on the 5x5 input, step by step (the lecture's figure 1.5)")
    max_gif = s.animation("maxpool-3x3", _trace("maxpool-3x3"),
                          "3x3 max pooling, stride 1, on the 5x5 input, step by step (the lecture's figure 1.6)")
    s.within("3x3 average pooling, stride 1, on the 5x5 input -> 3x3 (the lecture prints one decimal): "
             "largest difference from the lecture's table", 0.0,
             lambda: float(np.abs(avg - np.asarray(EXAMPLES["avgpool-3x3"].expected)).max()), tolerance=0.05,
             command="cnnlab conv --example avgpool-3x3", figure=avg_gif)
    s.exact("3x3 max pooling, stride 1, on the 5x5 input", EXAMPLES["maxpool-3x3"].expected,
            lambda: _run("maxpool-3x3").astype(int).tolist(), command="cnnlab conv --example maxpool-3x3",
            figure=max_gif)
    x = np.arange(100).reshape(10, 10)
    expected = x[1::2, 1::2].tolist()
    s.exact("nn.MaxPool2d(2) on arange(100).reshape(10, 10): the reference op", expected,
            lambda: _run("maxpool-10x10").astype(int).tolist(), command="cnnlab conv --example maxpool-10x10")
    s.exact("... and PyTorch's nn.MaxPool2d(2) itself", expected,
            lambda: nn.MaxPool2d(2)(torch.arange(100.0).reshape(1, 1, 10, 10))[0, 0].int().tolist(),
            command="cnnlab conv --example maxpool-10x10")
    s.exact("pooling with stride 2 halves each side: 10x10 -> 5x5", [5, 5],
            lambda: list(_run("maxpool-10x10").shape), command="cnnlab conv --example maxpool-10x10")
