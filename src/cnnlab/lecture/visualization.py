"""Visualization methods: the dogs-vs-cats CNN's table, then, on the trained Fashion-MNIST CNN (and on a dogs-vs-cats
run when the user gives that folder with ``--catsdogs``), feature maps of each conv layer, maximal filter responses,
Grad-CAM for several classes of one image and occlusion over a range of patch sizes, all from :mod:`cnnlab.viz`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnlab._plot import new_figure
from cnnlab.analysis import summarize
from cnnlab.data import denormalize, input_range, normalize
from cnnlab.models import create_model
from cnnlab.train import TrainConfig
from cnnlab.runs import load_run
from cnnlab.train.reuse import fit_or_reuse
from cnnlab.viz import activation_after, conv_layers, feature_maps, maximize_activation, occlusion
from cnnlab.viz.cam import cam

#: The lecture's table of the dogs-vs-cats CNN (torchsummary): the conv and linear layers' parameters.
CATSDOGS_PARAMS = [896, 18_496, 73_856, 147_584, 295_168, 1_180_160, 2_359_808, 2_359_808, 16_777_728, 513]
CATSDOGS_MAPS = [[32, 150, 150], [64, 150, 150], [64, 75, 75], [128, 75, 75], [128, 75, 75], [128, 37, 37],
                 [256, 37, 37], [512, 37, 37], [512, 18, 18], [512, 18, 18], [512, 18, 18], [512, 8, 8]]
#: (epochs, training images per class) of the dogs-vs-cats CNN on a --catsdogs folder: 5.2 GMACs an image at
#: 150x150 trains at about a dozen images/s on 2 CPU cores, so a reduced budget in both (its verdicts say so).
CATSDOGS_BUDGET = {"quick": (1, 50), "full": (3, 500)}
#: The lecture's occlusion patch sizes, on 224-pixel ImageNet images.
LECTURE_PATCHES = (10, 15, 25, 35, 45, 90)


def run(s, ctx) -> None:
    summary = summarize(create_model("catsdogs-cnn"), (3, 150, 150), model_name="catsdogs-cnn")
    command = "cnnlab summary catsdogs-cnn"
    s.exact("the dogs-vs-cats CNN's table: parameters of each conv and linear layer",
            CATSDOGS_PARAMS, [r.params for r in summary.rows if r.type in ("Conv2d", "Linear")], command=command)
    s.exact("... the output shapes of its conv and pooling layers",
            CATSDOGS_MAPS, [list(r.output_shape) for r in summary.rows if r.type in ("Conv2d", "MaxPool2d")],
            command=command)
    s.exact("... total params", 23_214_017, summary.total_params, command=command)

    run_dir = Path(next(r["run"] for r in ctx.fmnist()["rows"] if r["model"] == "fmnist-cnn"))
    _visualize(s, ctx, run_dir, "fmnist", "the trained Fashion-MNIST CNN", ctx.budget_note)
    if ctx.catsdogs is None:
        s.cited("the same views on a trained dogs-vs-cats CNN", "feature maps, max filter response, Grad-CAM",
                why="needs the Kaggle dogs-vs-cats images (not on this machine): give their folder with "
                    "cnnlab lecture --catsdogs PATH; the views above are the same methods on Fashion-MNIST")
    else:
        epochs, per_class = CATSDOGS_BUDGET[ctx.budget]
        cfg = TrainConfig(model="catsdogs-cnn", dataset=f"folder:{ctx.catsdogs}", image_size=150, epochs=epochs,
                          per_class=per_class, batch_size=32)
        fit_or_reuse(cfg, ctx.out / "catsdogs", overwrite=not ctx.reuse, replace_stale=True, log=ctx.log,
                     progress=False)
        _visualize(s, ctx, ctx.out / "catsdogs", "catsdogs", "the dogs-vs-cats CNN trained on your folder",
                   f"reduced budget: {epochs} epoch(s) on at most {per_class} images per class")


def _visualize(s, ctx, run_dir: Path, key: str, what: str, budget: str | None) -> None:
    loaded = load_run(run_dir)
    model, info = loaded.model.eval(), loaded.data
    data = loaded.config.load_data(data_dir=ctx.data_dir if key == "fmnist" else None)
    mean, std, classes = info["mean"], info["std"], info["classes"]
    x = normalize(data.test_x[:1], mean, std)
    label = int(data.test_y[0])
    command = f"cnnlab viz {run_dir} --images 1"

    maps = feature_maps(model, x[0])
    fig, axes = new_figure(len(maps), 8, figsize=(8, 1.15 * len(maps) + 0.4))
    for row, (name, m) in zip(np.atleast_2d(axes), maps.items()):
        for c, ax in enumerate(row):
            ax.imshow(m[c].numpy(), cmap="viridis")
            ax.set_axis_off()
        row[0].set_title(name, fontsize=7, loc="left")
    fig.suptitle(f"feature maps of each conv layer ({what}, a test {classes[label]}): 8 channels each", fontsize=9)
    fig.tight_layout()
    file = s.figure(f"{key}-feature-maps", fig, f"feature maps of every conv layer, {what}")
    s.shown(f"feature maps of each conv layer for one input ({what})", lambda: {n: list(m.shape) for n, m in maps.items()},
            command=command.replace("--images 1", "--methods feature-maps --images 1"), figure=file)

    last = list(conv_layers(model))[-1]
    width = conv_layers(model)[last].out_channels
    channels = [16, 71, 121] if width > 121 else [c * width // 4 for c in (1, 2, 3)]  # the lecture's, where they exist
    valid = input_range(mean, std)
    act = activation_after(model, last, x)  # the conv's ReLU, as viz does: a linear map is maximised by a flat image
    res = maximize_activation(model, act or last, channels, tuple(x.shape[1:]), input_range=valid)
    fig, axes = new_figure(1, len(channels), figsize=(2.2 * len(channels), 2.5))
    for ax, img, c, a, b in zip(np.atleast_1d(axes), res.images, channels, res.start, res.final):
        shown = denormalize(img, mean, std)
        ax.imshow(shown[0].numpy() if shown.shape[0] == 1 else shown.permute(1, 2, 0).numpy(), cmap="gray")
        ax.set_title(f"channel {c}: {float(a):.2f} -> {float(b):.2f}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"inputs that maximise channels of {last}", fontsize=9)
    fig.tight_layout()
    file = s.figure(f"{key}-maximize", fig, f"maximal filter response of {last}, channels {channels} ({what})")
    s.shown(f"maximal filter response of {last}, channels {channels}: each channel's mean activation on the "
            f"starting noise -> on the optimised input", lambda: {c: f"{float(a):.2f} -> {float(b):.2f}"
                                                                for c, a, b in zip(channels, res.start, res.final)},
            command=command.replace("--images 1", f"--methods maximize --layer {last}"), figure=file)
    s.exact("... every optimised input excites its channel more than the noise it started from", True,
            lambda: bool((res.final > res.start).all()),
            command=command.replace("--images 1", f"--methods maximize --layer {last}"), figure=file, budget=budget,
            differs=f"{budget}: in a barely trained model a channel no input turns on stays at 0" if budget else None)

    targets = list(range(min(len(classes), 4)))
    results = [cam(model, x, torch.tensor([t]), method="gradcam") for t in targets]  # the lecture's method
    cams = [r.maps[0] for r in results]
    fig, axes = new_figure(1, len(targets), figsize=(2.2 * len(targets), 2.7))
    picture = denormalize(x[0], mean, std)
    for ax, t, r in zip(np.atleast_1d(axes), targets, results):
        ax.imshow(picture[0].numpy() if picture.shape[0] == 1 else picture.permute(1, 2, 0).numpy(), cmap="gray")
        ax.imshow(r.maps[0].numpy(), cmap="jet", alpha=0.45)
        ax.set_title(f'"{classes[t]}"' + ("\nblank: weighted sum < 0" if r.why_blank(0) else ""), fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f"Grad-CAM of one test image ({classes[label]}) for several classes", fontsize=9)
    fig.tight_layout()
    blank = [(classes[t], r.why_blank(0)) for t, r in zip(targets, results) if r.why_blank(0)]
    note = "".join(f"; the map for \"{c}\" is {why}" for c, why in blank[:1])
    note += f" (so are {len(blank) - 1} more)" if len(blank) > 1 else ""
    file = s.figure(f"{key}-gradcam", fig, f"Grad-CAM for {len(targets)} classes of one image ({what}){note}")

    def differ() -> bool:
        flat = torch.stack([c.flatten() for c in cams])
        return bool(torch.corrcoef(flat).nan_to_num(1.0).triu(1).abs().max() < 0.999)

    s.exact("Grad-CAM shows where a layer looks for a given class: the maps for different classes differ", True,
            differ, command=command.replace("--images 1", "--methods gradcam --images 1 --target 0"), figure=file,
            budget=budget, differs=f"{budget}: a barely trained model's maps can coincide (all zero after the ReLU)"
            if budget else None)

    side = int(x.shape[-1])
    sizes = sorted({max(2, round(p * side / 224)) for p in LECTURE_PATCHES})
    occ = occlusion(model, x, torch.tensor([label]), patch_sizes=sizes)
    fig, axes = new_figure(1, len(sizes), figsize=(2.0 * len(sizes), 2.4))
    for ax, p in zip(np.atleast_1d(axes), sizes):
        ax.imshow(occ[p][0].clamp_min(0).numpy(), cmap="inferno")
        ax.set_title(f"{p}x{p}", fontsize=8)
        ax.set_axis_off()
    fig.suptitle(f'occlusion: drop of "{classes[label]}" per patch size (the lecture\'s 10-90 px on 224 px, '
                 f"scaled to {side} px)", fontsize=9)
    fig.tight_layout()
    file = s.figure(f"{key}-occlusion", fig, f"occlusion sensitivity for patch sizes {sizes} ({what})")
    s.shown(f"occlusion sensitivity over a range of patch sizes ({what}): the largest drop of the true class's "
            f"probability per patch size", lambda: {p: round(float(occ[p].max()), 3) for p in sizes},
            command=command.replace("--images 1", "--methods occlusion --images 1"), figure=file,
            lecture=[f"{p}x{p}" for p in LECTURE_PATCHES])
