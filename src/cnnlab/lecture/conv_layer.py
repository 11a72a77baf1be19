"""The PyTorch Conv2d layer: ``nn.Conv2d(16, 32, 3, padding=1)`` on 64x64, its activations and parameters, the dense
layer with the same activations, and parameter reuse (``cnnlab.analysis.summarize`` counts them; ``cnnlab compare
--layers`` prints every one of these numbers)."""

from __future__ import annotations

import torch.nn as nn

from cnnlab._plot import new_figure
from cnnlab.analysis import dense_equivalent, summarize
from cnnlab.models import count_parameters

COMMAND = "cnnlab compare --layers --in-channels 16 --out-channels 32 --size 64"


def run(s, ctx) -> None:
    conv = nn.Conv2d(16, 32, 3, padding=1)
    summary = summarize(conv, (16, 64, 64))
    row = next(r for r in summary.rows if r.type == "Conv2d")
    ifm, ofm = 16 * 64 * 64, 1
    for n in row.output_shape:
        ofm *= n
    s.exact("input activations (IFM size): 16 x 64 x 64", 65_536, ifm, command=COMMAND)
    s.exact("output activations (OFM size): 32 x 64 x 64", 131_072, ofm, command=COMMAND)
    s.exact("filter weights: 32 x (3 x 3 x 16)", 4_608, conv.weight.numel(), command=COMMAND)
    s.exact("biases", 32, conv.bias.numel(), command=COMMAND)
    s.exact("total trainable parameters of nn.Conv2d(16, 32, 3, padding=1)", 4_640, count_parameters(conv),
            command=COMMAND)
    s.exact("a dense layer with the same input and output activations: 65,536 x 131,072 + 131,072", 8_590_065_664,
            lambda: dense_equivalent((16, 64, 64), row.output_shape), command=COMMAND)
    dense = dense_equivalent((16, 64, 64), row.output_shape)
    fig, (left, right) = new_figure(1, 2, figsize=(8.0, 2.8))
    for ax, values, label in ((left, [count_parameters(conv), dense], "trainable parameters (log)"),
                              (right, [row.macs / count_parameters(conv), ifm * ofm / dense], "MACs per parameter (log)")):
        ax.barh([0, 1], values, color=["#4c72b0", "#999999"])
        ax.set_xscale("log")
        ax.set_yticks([0, 1], ["Conv2d(16, 32, 3)", "dense, same\nactivations"])
        ax.invert_yaxis()
        ax.set_xlabel(label)
        for k, v in enumerate(values):
            ax.text(v, k, f" {v:,.0f}" if v >= 10 else f" {v:.2f}", va="center", fontsize=8)
        ax.set_xlim(right=max(values) * 60)
    fig.suptitle("nn.Conv2d(16, 32, 3, padding=1) on 64x64 against a dense layer with the same activations",
                 fontsize=9)
    fig.tight_layout()
    file = s.figure("reuse", fig, f"parameters and computations per parameter: the conv uses each weight "
                                  f"{row.macs // conv.weight.numel():,} times per image, the dense layer each once")
    s.shown("parameter reuse: each weight is used at every output position (64 x 64 times per image)",
            lambda: row.macs // conv.weight.numel(), command=COMMAND, figure=file)
    s.shown("'CNNs do more computations per trainable parameter': MACs per parameter, the conv",
            lambda: round(row.macs / count_parameters(conv), 1), command=COMMAND)
    s.shown("... and the dense layer with the same activations (one MAC per weight)",
            lambda: round(ifm * ofm / dense, 4), command=COMMAND, figure=file)
