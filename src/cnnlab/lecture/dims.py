"""1D and 3D convolutions: a ``Conv1d`` on a time series and a ``Conv3d`` on a video clip with their output shapes
and parameters (``cnnlab.analysis.summarize``), the lecture's 3D correlation formula (``cnnlab.ops``) against
PyTorch's, Conv2D as a 3D correlation with no padding in depth, and the receptive field of WaveNet's stacks of
causal 1D convolutions, plain (the lecture's figure) and dilated, from ``cnnlab.analysis.field_report``."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab._plot import new_figure
from cnnlab.analysis import field_report, summarize
from cnnlab.models import count_parameters
from cnnlab.ops import conv2d, correlate1d, correlate3d

COMMAND = "cnnlab lecture --section dims"
TOLERANCE = 1e-9  # float64, different summation orders


def causal_stack(dilations: Sequence[int], *, kernel_size: int = 2, channels: int = 4) -> nn.Sequential:
    """WaveNet's stack of causal 1D convolutions: each ``Conv1d(kernel_size, dilation=d)`` is padded on the left
    only, by ``d * (kernel_size - 1)``, so output ``t`` depends on inputs ``<= t`` and the length is kept."""
    layers, c = [], 1
    for i, d in enumerate(dilations, 1):
        layers += [nn.ConstantPad1d((d * (kernel_size - 1), 0), 0.0), nn.Conv1d(c, channels, kernel_size, dilation=d)]
        c = channels
    return nn.Sequential(*layers)


def _conv_fields(summary) -> list[dict]:
    return [t for t in field_report(summary).layers if t["type"] == "Conv1d"]


def run(s, ctx) -> None:
    _conv1d(s)
    _conv3d(s)
    _causal(s)


def _conv1d(s) -> None:
    layer = nn.Conv1d(1, 8, kernel_size=5)
    summary = summarize(layer, (1, 128), model_name="Conv1d(1, 8, 5)")
    row = next(r for r in summary.rows if r.type == "Conv1d")
    s.shown("1D CNN ~ time series: nn.Conv1d(1, 8, kernel_size=5) on one channel of 128 samples: output "
            "(channels, length)", list(row.output_shape), command=COMMAND)
    s.shown("... its parameters: 8 x (1 x 5) weights + 8 biases", count_parameters(layer), command=COMMAND)
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal(32), rng.standard_normal(5)
    s.within("the 1D correlation y[i] = sum_m h[m] x[i + m] (cnnlab.ops.correlate1d) against torch's conv1d, "
             "largest difference", 0.0,
             lambda: float(np.abs(correlate1d(x, h) - F.conv1d(torch.tensor(x)[None, None],
                                                                torch.tensor(h)[None, None])[0, 0].numpy()).max()),
             tolerance=TOLERANCE, command=COMMAND)


def _conv3d(s) -> None:
    layer = nn.Conv3d(3, 8, kernel_size=3)
    summary = summarize(layer, (3, 16, 32, 32), model_name="Conv3d(3, 8, 3)")
    row = next(r for r in summary.rows if r.type == "Conv3d")
    s.shown("3D CNN ~ video: nn.Conv3d(3, 8, kernel_size=3) on an RGB clip of 16 frames of 32x32: output "
            "(channels, frames, height, width)", list(row.output_shape), command=COMMAND)
    s.shown("... its parameters: 8 x (3 x 3 x 3 x 3) weights + 8 biases", count_parameters(layer), command=COMMAND)
    s.shown("... and its multiply-accumulates (each output voxel: a 3D dot product over 3 x 3 x 3 x 3)", row.macs,
            command=COMMAND)
    rng = np.random.default_rng(1)
    x, h = rng.standard_normal((6, 7, 8)), rng.standard_normal((3, 3, 3))
    s.within("3D convolution: y[i, j, k] = sum_(m,n,o) h[m, n, o] x[i + m, j + n, k + o], 'slide h over and compute "
             "a 3D dot product for each output voxel' (cnnlab.ops.correlate3d) against torch's conv3d, largest "
             "difference", 0.0,
             lambda: float(np.abs(correlate3d(x, h) - F.conv3d(torch.tensor(x)[None, None],
                                                                torch.tensor(h)[None, None])[0, 0].numpy()).max()),
             tolerance=TOLERANCE, command=COMMAND)
    image, kernel = rng.standard_normal((16, 9, 9)), rng.standard_normal((16, 3, 3))
    y3 = correlate3d(image, kernel)
    s.exact("Conv2D filtering in deep learning: a 3D correlation with no padding in the depth dimension, so each "
            "shift gives a single output pixel (16 channels, 9x9, kernel 16x3x3 -> depth 1)", [1, 7, 7],
            list(y3.shape), command=COMMAND)
    s.within("... 'functionally equivalent': that 3D correlation against the 2D conv layer's output channel, "
             "largest difference", 0.0, lambda: float(np.abs(y3[0] - conv2d(image, kernel[None])[0]).max()),
             tolerance=TOLERANCE, command=COMMAND)


def _causal(s) -> None:
    plain = summarize(causal_stack([1, 1, 1, 1]), (1, 32), model_name="causal stack, kernel 2")
    dilated = summarize(causal_stack([1, 2, 4, 8]), (1, 32), model_name="dilated causal stack, kernel 2")
    fig_file = _draw_wavenet(s, dilated)
    s.exact("the lecture's figure (WaveNet, figure 2): a stack of causal convolutions, 4 layers of kernel 2: "
            "receptive field 5 (the paper: '= #layers + filter length - 1')", 5.0,
            lambda: _conv_fields(plain)[-1]["receptive_field"]["size"][0], command=COMMAND)
    s.exact("... causal: output 20 sees inputs 16-20, none after it", [16, 20],
            lambda: field_report(plain, layer=len(field_report(plain).layers) - 1, unit=(20,)).unit["regions"][0]
            ["pixels"], command=COMMAND)
    s.exact("dilated causal convolutions (WaveNet, figure 3): dilations 1, 2, 4, 8, kernel 2: receptive field 16 "
            "(each layer doubles it)", [2.0, 4.0, 8.0, 16.0],
            lambda: [t["receptive_field"]["size"][0] for t in _conv_fields(dilated)], command=COMMAND,
            figure=fig_file)
    s.exact("... causal: output 20 sees inputs 5-20", [5, 20],
            lambda: field_report(dilated, layer=len(field_report(dilated).layers) - 1, unit=(20,)).unit["regions"][0]
            ["pixels"], command=COMMAND, figure=fig_file)
    s.exact("... the left padding keeps the length: 32 samples in, 4 channels x 32 out", [4, 32],
            lambda: list(dilated.rows[-1].output_shape), command=COMMAND)
    s.shown("... parameters of the dilated stack (4 Conv1d of kernel 2: 1 -> 4 -> 4 -> 4 -> 4 channels)",
            dilated.total_params, command=COMMAND)


def _draw_wavenet(s, summary) -> str:
    """WaveNet's figure 3 redrawn: the units output ``t`` depends on, layer by layer (from the dilations), and the
    input region ``field_report`` gives for it (shaded)."""
    dilations = [1, 2, 4, 8]
    last = len(field_report(summary).layers) - 1
    t_out, steps = 20, 24
    region = field_report(summary, layer=last, unit=(t_out,)).unit["regions"][0]["pixels"]
    fig, ax = new_figure(figsize=(10, 3.6))
    levels = len(dilations) + 1
    for lvl in range(levels):
        ax.scatter(range(steps), [lvl] * steps, s=18, color="#ccc", zorder=2)
    ax.axvspan(region[0] - 0.4, region[1] + 0.4, ymin=0, ymax=0.12, color="#c0504d", alpha=0.25,
               label=f"field_report: inputs {region[0]}-{region[1]}")
    frontier = {t_out}
    for lvl in range(levels - 1, 0, -1):
        d = dilations[lvl - 1]
        below = set()
        for u in frontier:
            for v in (u, u - d):
                if v >= 0:
                    ax.plot([u, v], [lvl, lvl - 1], color="#4c78a8", linewidth=1, zorder=1)
                    below.add(v)
        ax.scatter(sorted(frontier), [lvl] * len(frontier), s=30, color="#4c78a8", zorder=3)
        frontier = below
    ax.scatter(sorted(frontier), [0] * len(frontier), s=30, color="#c0504d", zorder=3)
    ax.set_yticks(range(levels), ["input"] + [f"dilation {d}" for d in dilations], fontsize=8)
    ax.set_xlabel("time step")
    ax.set_xlim(-0.8, steps - 0.2)
    ax.set_ylim(-0.5, levels - 0.5)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"dilated causal convolutions (kernel 2): output {t_out} depends on {region[1] - region[0] + 1} "
                 f"inputs, none in its future",
                 fontsize=9)
    fig.tight_layout()
    return s.figure("wavenet", fig, "a stack of dilated causal 1D convolutions (WaveNet, figure 3): the inputs one "
                                    "output sees, drawn from the dilations and shaded from cnnlab's field_report")
