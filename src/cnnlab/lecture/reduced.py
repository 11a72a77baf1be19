"""Reduced complexity CNN architectures: depth-wise, group-wise and point-wise convolutions, MobileNet's 688
parameters against 4,640, ShuffleNet's shuffle and pre-defined sparsity (``cnnlab compare --layers``); the compact
models trained and measured side by side (``cnnlab compare``: where fewer MACs did and did not mean less time,
and global pooling's claim); and the post-training methods on the trained CNN with real bytes (``cnnlab compress``).
The trained parts run on a reduced budget, which their verdicts state."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab._plot import new_figure
from cnnlab.compare import compare_layers, compare_models
from cnnlab.compress.run import compress_run, stored_compression
from cnnlab.layers import DepthwiseConv2d, DepthwiseSeparableConv2d, channel_shuffle

LAYERS = "cnnlab compare --layers --in-channels 16 --out-channels 32 --size 64"
COMPACT = ("fmnist-cnn", "fmnist-separable", "fmnist-grouped", "fmnist-shuffle", "fmnist-gap")
#: (epochs, training images) of the compact models' comparison: a reduced budget in both.
COMPARE_BUDGET = {"quick": (1, 5_000), "full": (2, 15_000)}
#: Training images the post-training methods fine-tune on: a reduced budget in both (their verdicts say so).
COMPRESS_SUBSET = {"quick": 2_000, "full": 5_000}
#: The post-training methods: (method, settings, the lecture's words).
METHODS = [("prune", {"sparsity": 0.9}, "pruning: set near-zero weights to zero, fix these and retrain"),
           ("cluster", {"bits": 4}, "quantization: map similar valued weights to the same value (16 shared values)"),
           ("inq", {"bits": 5}, "incremental network quantization: powers of two (Zhou et al. 2017)"),
           ("quantize", {}, "int8 post-training quantization"),
           ("binarize", {"mode": "bwn"}, "binarization: binary weights that approximate the network (BWN)")]


def run(s, ctx) -> None:
    _layers(s)
    _compact(s, ctx)
    _compress(s, ctx)


def _layers(s) -> None:
    rows = {r["name"]: r for r in compare_layers(16, out_channels=32, size=64, batch=1, repeats=1, budget_s=0.01)}
    done = [r for r in rows.values() if r["params"] is not None]
    fig, ax = new_figure(figsize=(7.5, 3.4))
    x = np.arange(len(done))
    ax.bar(x - 0.2, [r["effective_params"] for r in done], 0.4, label="parameters (effective)", color="#4c72b0")
    ax.bar(x + 0.2, [r["macs"] / 1000 for r in done], 0.4, label="thousand MACs per image", color="#dd8452")
    ax.set_yscale("log")
    ax.set_xticks(x, [r["name"] for r in done], rotation=30, ha="right", fontsize=8)
    ax.set_title("alternatives to nn.Conv2d(16, 32, 3, padding=1) on 16x64x64 (the same output size)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    file = s.figure("layers", fig, "parameters and MACs of the constrained filters against the standard conv "
                                   "(MobileNet's depth-wise separable: 688 against 4,640)")
    sep = DepthwiseSeparableConv2d(16, 32)
    s.exact("MobileNet: 16 3x3 depth-wise kernels", 144, rows["depthwise"]["params"], command=LAYERS)
    s.exact("... 32 1x1 point-wise filters and 32 biases", [512, 32],
            [sep.pointwise.weight.numel(), sep.pointwise.bias.numel()], command=LAYERS)
    s.exact("... 688 parameters for the same output feature map size", 688, rows["depthwise-separable"]["params"],
            command=LAYERS, figure=file)
    s.exact("... against 4,640 with the standard approach", 4_640, rows["conv3x3"]["params"], command=LAYERS)
    s.shown("MACs per image: standard conv against depth-wise separable", lambda: [rows["conv3x3"]["macs"],
            rows["depthwise-separable"]["macs"]], command=LAYERS)

    def unmixed() -> bool:  # depth-wise: no information is mixed across channels
        conv = DepthwiseConv2d(16, 3, padding=1)
        x = torch.randn(1, 16, 8, 8, requires_grad=True)
        conv(x)[0, 5].sum().backward()
        return bool((x.grad[0].flatten(1).abs().sum(1) > 0).nonzero().flatten().tolist() == [5])

    s.exact("depth-wise convolution: output channel c sees only input channel c", True, unmixed, command=LAYERS)
    s.shown("group-wise convolution, the trade-off: parameters with 2 and 4 groups (standard: 4,640)",
            [rows["grouped-g2"]["params"], rows["grouped-g4"]["params"]], command=LAYERS)
    s.exact("ShuffleNet's shuffle with 4 groups of 2 channels: channel order after it", [0, 2, 4, 6, 1, 3, 5, 7],
            lambda: channel_shuffle(torch.arange(8.0).view(1, 8, 1, 1), 4).flatten().int().tolist(),
            command=LAYERS)
    s.shown("pre-defined sparsity (4 of 9 kernel positions): parameters that can change the output, and MACs with "
            "the zeros skipped", [rows["sparse-k4"]["effective_params"], rows["sparse-k4"]["macs"]], command=LAYERS)


def _compact(s, ctx) -> None:
    epochs, subset = COMPARE_BUDGET[ctx.budget]
    budget = f"reduced budget: {epochs} epoch(s) on {subset:,} images each"
    overrides = {"data_dir": ctx.data_dir} if ctx.data_dir is not None else {}
    result = compare_models(COMPACT, epochs=epochs, subset=subset, out=ctx.out / "compare", overrides=overrides,
                            overwrite=not ctx.reuse, replace_stale=True, log=ctx.log, progress=False,
                            remeasure=not ctx.reuse)
    rows = {r["name"]: r for r in result["rows"]}
    command = f"cnnlab compare {' '.join(COMPACT)} --epochs {epochs} --subset {subset}"
    base = rows["fmnist-cnn"]
    for name in COMPACT[1:]:
        r = rows[name]
        s.shown(f"{name}: parameters, MACs and batch-256 latency as fractions of fmnist-cnn's, and test accuracy",
                {"params": round(r["params"] / base["params"], 3), "macs": round(r["macs"] / base["macs"], 3),
                 "latency": round(r["latency_ms_b256"] / base["latency_ms_b256"], 3),
                 "accuracy": round(r["test_accuracy"], 4)}, command=command, budget=budget)
    ratio = {n: (rows[n]["macs"] / base["macs"], rows[n]["latency_ms_b256"] / base["latency_ms_b256"])
             for n in COMPACT[1:]}
    s.shown("fewer MACs did not always mean less time: the compact models whose latency ratio to fmnist-cnn is more "
            "than twice their MACs ratio", [n for n, (m, t) in ratio.items() if t > 2 * m], command=command)
    s.figures.append({"file": "compare/compare.png", "caption": f"the compact models side by side ({budget}): "
                                                                 "accuracy against MACs and against measured latency"})
    gap, cnn = rows["fmnist-gap"]["test_accuracy"], base["test_accuracy"]
    s.within("global pooling 'reduces the complexity of the dense classification network without sacrificing "
             "performance': fmnist-gap's accuracy minus fmnist-cnn's", 0.0, round(gap - cnn, 4), tolerance=0.01,
             command=command, budget=budget,
             differs=f"{budget}: the pooled head also learns slower. Trained to the end it still costs accuracy: "
                     f"after 30 epochs fmnist-gap reached 93.38% against fmnist-cnn's 94.70% (bench/RESULTS.md, "
                     f"2026-11-26), 1.3 points for 96% fewer parameters; on this trunk the lecture's 'without "
                     f"sacrificing performance' holds only approximately")


def _compress(s, ctx) -> None:
    run_dir = Path(next(r["run"] for r in ctx.fmnist()["rows"] if r["model"] == "fmnist-cnn"))
    subset = COMPRESS_SUBSET[ctx.budget]
    budget = f"fine-tuned on {subset:,} training images" + (", latency not measured (quick budget)" if ctx.quick else "")
    points: dict[str, dict] = {}
    for method, settings, what in METHODS:
        name = "-".join([method, *(f"{k}{v}" for k, v in settings.items())])
        args = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items())

        def measured(method=method, settings=settings, out=ctx.out / "compress" / name) -> dict:
            record = stored_compression(out, run_dir, method, settings=settings, subset=subset) if ctx.reuse else None
            if record is None:  # none there, another recipe, or the CNN was retrained since
                record = compress_run(run_dir, method, settings=settings, out=out, overwrite=True, subset=subset,
                                      measure=not ctx.quick, log=ctx.log)
            row = {"size_ratio": round(record["size_ratio"], 2), "accuracy_drop": round(record["accuracy_drop_points"], 2)}
            if record.get("speedup_b256") is not None:
                row["speedup_b256"] = round(record["speedup_b256"], 2)
            points[method] = record
            return row

        s.shown(f"{what}: bytes (x smaller than the float model's), test accuracy drop (points)"
                + ("" if ctx.quick else ", batch-256 speed-up"), measured,
                command=f"cnnlab compress {run_dir} --method {method} {args}".rstrip(), budget=budget)
    if points:
        s.figure("compression", _compression_figure(points, budget),
                 f"the post-training methods on the trained CNN: bytes stored against test accuracy ({budget})")


def _compression_figure(points: dict[str, dict], budget: str):
    """Two bar charts over the methods: how many times fewer bytes than the float model, and the test accuracy
    against the float model's (dashed)."""
    fig, (left, right) = new_figure(1, 2, figsize=(9.0, 3.2))
    names = list(points)
    y = np.arange(len(names))
    left.barh(y, [points[n]["size_ratio"] for n in names], color="#4c72b0")
    for k, n in enumerate(names):
        left.text(points[n]["size_ratio"], k, f" {points[n]['size_ratio']:.1f}x ({points[n]['size_bytes'] / 1e6:.2f} MB)",
                  va="center", fontsize=8)
    left.set_yticks(y, names)
    left.invert_yaxis()
    left.set_xlim(0, 1.35 * max(points[n]["size_ratio"] for n in names))
    left.set_xlabel("times fewer bytes than the float32 weights")
    base = 100 * next(iter(points.values()))["baseline_test_accuracy"]
    acc = [100 * points[n]["test_accuracy"] for n in names]
    right.barh(y, acc, color="#dd8452")
    right.axvline(base, color="black", linestyle="--", linewidth=1)
    right.text(base, -0.7, f"float32 {base:.2f}%", ha="center", fontsize=8)
    for k, a in enumerate(acc):
        right.text(a, k, f" {a:.2f}%", va="center", fontsize=8)
    right.set_yticks(y, names)
    right.invert_yaxis()
    right.set_xlim(min(acc + [base]) - 2, max(acc + [base]) + 1)
    right.set_xlabel("test accuracy (%)")
    fig.suptitle(f"the post-training methods on the trained fmnist-cnn ({budget})", fontsize=9)
    fig.tight_layout()
    return fig
