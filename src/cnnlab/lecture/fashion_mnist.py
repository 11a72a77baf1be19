"""The Fashion-MNIST example: the Keras table of ``fmnist_cnn.py`` row by row beside cnnlab's summary, the CNN's
~93.5% against the MLP's ~88% (``cnnlab experiment fmnist``, trained or reused), the curves, and the block
pattern (channels doubling while the maps halve)."""

from __future__ import annotations

import csv
from pathlib import Path

from cnnlab._plot import new_figure
from cnnlab.analysis import summarize
from cnnlab.experiments import LECTURE_ACCURACY
from cnnlab.models import create_model

#: The lecture's Keras table (``model.summary()`` of fmnist_cnn.py): output shape (NHWC, batch left out), params.
KERAS_TABLE = [
    ("conv2d", (28, 28, 32), 320), ("activation", (28, 28, 32), 0), ("batch_normalization", (28, 28, 32), 128),
    ("conv2d_1", (28, 28, 32), 9248), ("activation_1", (28, 28, 32), 0),
    ("batch_normalization_1", (28, 28, 32), 128), ("max_pooling2d", (14, 14, 32), 0), ("dropout", (14, 14, 32), 0),
    ("conv2d_2", (14, 14, 64), 18496), ("activation_2", (14, 14, 64), 0),
    ("batch_normalization_2", (14, 14, 64), 256), ("conv2d_3", (14, 14, 64), 36928),
    ("activation_3", (14, 14, 64), 0), ("batch_normalization_3", (14, 14, 64), 256),
    ("max_pooling2d_1", (7, 7, 64), 0), ("dropout_1", (7, 7, 64), 0), ("flatten", (3136,), 0),
    ("dense", (512,), 1606144), ("activation_4", (512,), 0), ("batch_normalization_4", (512,), 2048),
    ("dropout_2", (512,), 0), ("dense_1", (10,), 5130), ("activation_5", (10,), 0),
]
TOLERANCE = 0.01  # one percentage point: a seed's spread on this recipe is a few tenths (bench/RESULTS.md)


def _nchw(shape: tuple[int, ...]) -> list[int]:
    return [shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)


def run(s, ctx) -> None:
    summary = summarize(create_model("fmnist-cnn"), (1, 28, 28), keras=True, model_name="fmnist-cnn")
    rows = [r for r in summary.rows if r.name != "input"]
    keras = KERAS_TABLE[:-1]  # the last softmax activation: below
    command = "cnnlab summary fmnist-cnn --keras"
    s.exact("the Keras table, row by row: parameters (conv 320, BN 128, conv 9,248, ..., dense 1,606,144, BN 2,048, "
            "dense 5,130)", [p for _, _, p in keras], [r.params for r in rows], command=command)
    s.exact("the Keras table, row by row: output shapes (as C, H, W)", [_nchw(sh) for _, sh, _ in keras],
            [list(r.output_shape) for r in rows], command=command)
    s.explained("the last row, activation_5 (softmax)", "(None, 10), 0 params", "no layer",
                why="cnnlab's models output logits; the softmax lives in the loss (nn.CrossEntropyLoss), as PyTorch "
                    "models do; predict and the explorer apply it", command=command)
    s.exact("total params (Keras counting)", 1_679_082, summary.total_params, command=command)
    s.exact("trainable params", 1_677_674, summary.trainable_params, command=command)
    s.exact("non-trainable params: BatchNorm's running means and variances", 1_408, summary.non_trainable_params,
            command=command)
    s.explained("total params as PyTorch counts them", 1_679_082,
                lambda: summarize(create_model("fmnist-cnn"), (1, 28, 28)).total_params,
                why="PyTorch keeps BatchNorm's running statistics (1,408 values) as buffers, not parameters; "
                    "Keras lists them as non-trainable parameters", command="cnnlab summary fmnist-cnn")
    _blocks(s, summary)
    _accuracy(s, ctx)


def _blocks(s, summary) -> None:
    convs = [r for r in summary.rows if r.type == "Conv2d"]
    fig, ax = new_figure(figsize=(6.4, 3.2))
    x = list(range(len(convs)))
    ax.bar(x, [r.output_shape[0] for r in convs], color="#4c72b0", label="channels")
    ax.set_xticks(x, [r.name.replace("features.", "") for r in convs], fontsize=8)
    ax.set_ylabel("channels")
    side = ax.twinx()
    side.plot(x, [r.output_shape[1] for r in convs], "o-", color="#dd8452", label="map side (px)")
    side.set_ylabel("map side (px)")
    ax.set_title("fmnist-cnn's blocks: channels double while the maps halve", fontsize=10)
    fig.tight_layout()
    file = s.figure("blocks", fig, "the block pattern of fmnist-cnn: channels 32 -> 64 while the maps go 28 -> 14")
    s.exact("the block pattern: channels double (32 -> 64) while the maps halve (28 -> 14) from block to block",
            [[32, 28], [64, 14]], [[convs[0].output_shape[0], convs[0].output_shape[1]],
                                   [convs[2].output_shape[0], convs[2].output_shape[1]]],
            command="cnnlab summary fmnist-cnn", figure=file)


def _accuracy(s, ctx) -> None:
    rows = {r["model"]: r for r in ctx.fmnist()["rows"]}
    figure = _curves(s, {name: Path(r["run"]) for name, r in rows.items()})
    command, budget = ctx.fmnist_command(), ctx.budget_note
    for name, what in (("fmnist-cnn", "the CNN (fmnist_cnn.py) reaches ~93.5% test accuracy"),
                       ("mlp", "an MLP reaches ~88%")):
        s.within(what, LECTURE_ACCURACY[name], round(rows[name]["test_accuracy"], 4), tolerance=TOLERANCE,
                 command=command, figure=figure, budget=budget,
                 differs=f"{budget}; the full budget trains the recipes of cnnlab experiment fmnist" if budget else None)
    s.exact("the CNN beats the MLP", True, rows["fmnist-cnn"]["test_accuracy"] > rows["mlp"]["test_accuracy"],
            command=command, budget=budget,
            differs=f"{budget}: too short a training to order them; the full budget trains both recipes to the end"
            if budget else None)


def _curves(s, runs: dict[str, Path]) -> str | None:
    fig, ax = new_figure(figsize=(6.4, 3.6))
    drawn = False
    for name, run in runs.items():
        path = run / "history.csv"
        if not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        epochs = [int(float(r["epoch"])) for r in rows]
        ax.plot(epochs, [100 * float(r["val_acc"]) for r in rows], "o-", label=f"{name} validation")
        ax.plot(epochs, [100 * float(r["train_acc"]) for r in rows], ":", label=f"{name} training")
        drawn = True
    if not drawn:
        return None
    for name, acc in LECTURE_ACCURACY.items():
        ax.axhline(100 * acc, color="grey", linewidth=0.8, linestyle="--")
        ax.text(ax.get_xlim()[0], 100 * acc, f" lecture {name} ~{100 * acc:g}%", fontsize=7, va="bottom")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Fashion-MNIST: the CNN against the MLP")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return s.figure("curves", fig, "accuracy per epoch of the CNN and the MLP (dashed: the lecture's numbers)")
