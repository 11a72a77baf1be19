"""Some common CNN structures: the lecture's model-zoo list built from torchvision (``tv:NAME``, never downloaded)
with its parameter counts, AlexNet / VGG / Inception / ResNet sizes, the Keras applications table beside
torchvision's counts, the residual block and the Inception module traced (their ``add`` and ``cat`` merges), the
receptive-field table of the lecture's ``Net`` (``rf-demo``), the field growing through ``fmnist-cnn`` with an
inverse image, and global pooling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from matplotlib.patches import FancyArrowPatch, Rectangle

from cnnlab._plot import new_figure
from cnnlab.analysis import field_report, summarize
from cnnlab.models import BasicBlock, InceptionModule, count_parameters, create_model, model_info
from cnnlab.ops import global_avg_pool2d

#: the lecture's ``models.NAME(pretrained=True)`` list, in its order
ZOO = ("resnet18", "alexnet", "squeezenet1_0", "vgg16", "densenet161", "inception_v3", "googlenet",
       "shufflenet_v2_x1_0", "mobilenet_v2", "resnext50_32x4d", "wide_resnet50_2", "mnasnet1_0")

#: constructor arguments that make ``weights=None`` build what ``pretrained=True`` builds: torchvision's googlenet
#: loads its weights with the auxiliary classifiers and then drops them (``aux_logits`` defaults to False there);
#: inception_v3 keeps its auxiliary classifier
PRETRAINED_ARGS: dict[str, dict[str, Any]] = {"googlenet": {"aux_logits": False}}

NO_AUX = {"aux_logits": False}

#: the lecture's Keras applications table: name, size (MB), top-1, top-5, parameters, depth; then torchvision's
#: counterpart and how Keras counts differently (None: torchvision has no such model, with what it lacks)
KERAS: tuple[tuple[str, int, float, float, int, int | None, str | None, str], ...] = (
    ("Xception", 88, 0.790, 0.945, 22_910_480, 126, None, "torchvision has no Xception"),
    ("VGG16", 528, 0.713, 0.901, 138_357_544, 23, "vgg16", "same"),
    ("VGG19", 549, 0.713, 0.900, 143_667_240, 26, "vgg19", "same"),
    ("ResNet50", 98, 0.749, 0.921, 25_636_712, None, "resnet50", "conv-bias"),
    ("ResNet101", 171, 0.764, 0.928, 44_707_176, None, "resnet101", "conv-bias"),
    ("ResNet152", 232, 0.766, 0.931, 60_419_944, None, "resnet152", "conv-bias"),
    ("ResNet50V2", 98, 0.760, 0.930, 25_613_800, None, None,
     "torchvision has no ResNet50V2 (the pre-activation ResNet v2; torchvision's resnet50 is v1, above)"),
    ("ResNet101V2", 171, 0.772, 0.938, 44_675_560, None, None,
     "torchvision has no ResNet101V2 (pre-activation v2; its resnet101 is v1, above)"),
    ("ResNet152V2", 232, 0.780, 0.942, 60_380_648, None, None,
     "torchvision has no ResNet152V2 (pre-activation v2; its resnet152 is v1, above)"),
    ("InceptionV3", 92, 0.779, 0.937, 23_851_784, 159, "inception_v3", "no-gamma"),
    ("InceptionResNetV2", 215, 0.803, 0.953, 55_873_736, 572, None, "torchvision has no InceptionResNetV2"),
    ("MobileNet", 16, 0.704, 0.895, 4_253_864, 88, None,
     "torchvision has no MobileNet (v1); it has mobilenet_v2 (below) and mobilenet_v3"),
    ("MobileNetV2", 14, 0.713, 0.901, 3_538_984, 88, "mobilenet_v2", "keras"),
    ("DenseNet121", 33, 0.750, 0.923, 8_062_504, 121, "densenet121", "keras"),
    ("DenseNet169", 57, 0.762, 0.932, 14_307_880, 169, "densenet169", "keras"),
    ("DenseNet201", 80, 0.773, 0.936, 20_242_984, 201, "densenet201", "keras"),
    ("NASNetMobile", 23, 0.744, 0.919, 5_326_716, None, None, "torchvision has no NASNetMobile"),
    ("NASNetLarge", 343, 0.825, 0.960, 88_949_818, None, None, "torchvision has no NASNetLarge"),
)

#: how far a Keras size (its HDF5 weights file) may be from the float32 parameters in MiB
SIZE_TOLERANCE = 0.10
NO_DATA = ("needs the ImageNet validation set and pretrained weights; this machine has neither and cnnlab never "
           "downloads (the architectures and their counts are checked instead)")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _command(name: str, kwargs: dict[str, Any] | None = None, *, keras: bool = False) -> str:
    args = "".join(f" --model-arg {k}={str(v).lower() if isinstance(v, bool) else v}"
                   for k, v in (kwargs or {}).items())
    return f"cnnlab summary tv:{name}{args}" + (" --keras" if keras else "")


class _Zoo:
    """torchvision models built once each; what the checks need of them is kept, the weights are not."""

    def __init__(self) -> None:
        self.counts: dict[tuple, int] = {}
        self.summaries: dict[tuple, Any] = {}
        self.extra: dict[tuple, dict[str, int]] = {}

    def _key(self, name: str, kwargs: dict[str, Any] | None) -> tuple:
        return (name, tuple(sorted((kwargs or {}).items())))

    def _build(self, name: str, kwargs: dict[str, Any] | None, summary: bool) -> None:
        key = self._key(name, kwargs)
        summary = summary or key in _SUMMARISED  # summarised at the first build, not built twice
        if key in self.counts and (not summary or key in self.summaries):
            return
        model = create_model(f"tv:{name}", **(kwargs or {}))
        self.counts[key] = count_parameters(model)
        self.extra[key] = {
            # convolutions without a bias (BatchNorm follows each in torchvision's models): their output channels
            "conv_bias_free_channels": sum(m.out_channels for m in model.modules()
                                           if isinstance(m, nn.Conv2d) and m.bias is None),
            "bn_gammas": sum(m.weight.numel() for m in model.modules() if isinstance(m, _BN) and m.affine),
        }
        if summary:
            summary = summarize(model, model_info(f"tv:{name}").input_size, keras=True, model_name=f"tv:{name}")
            summary.graph = None  # its nodes hold the modules: keep the rows and totals, not the weights
            self.summaries[key] = summary
        del model

    def count(self, name: str, kwargs: dict[str, Any] | None = None) -> int:
        self._build(name, kwargs, False)
        return self.counts[self._key(name, kwargs)]

    def summary(self, name: str, kwargs: dict[str, Any] | None = None):
        """``summarize(..., keras=True)`` at the model's input size (its ``total_params`` count Keras' way)."""
        self._build(name, kwargs, True)
        return self.summaries[self._key(name, kwargs)]

    def info(self, name: str, kwargs: dict[str, Any] | None = None) -> dict[str, int]:
        self._build(name, kwargs, False)
        return self.extra[self._key(name, kwargs)]


#: the models whose summary (Keras counting, layer rows) some check reads
_SUMMARISED = {("googlenet", (("aux_logits", False),)), ("inception_v3", (("aux_logits", False),)),
               ("vgg16", ()), ("resnet34", ())} | {(tv, ()) for *_, tv, kind in KERAS if tv and kind != "no-gamma"}


def run(s, ctx) -> None:
    zoo = ctx.cache.setdefault("structures.zoo", _Zoo())
    _model_zoo(s, zoo)
    _block_structures(s, zoo)
    _keras_table(s, zoo)
    _merges(s)
    demo = _rf_demo(s)
    summary, deep = _fmnist_fields(s)
    _draw_inverse(s, summary, deep, demo)
    _global_pooling(s)


# ------------------------------------------------------------------------------------------------ the model zoo
def _model_zoo(s, zoo: _Zoo) -> None:
    counts = {}
    for name in ZOO:
        kwargs = PRETRAINED_ARGS.get(name)
        note = " (as pretrained=True builds it: no auxiliary classifiers)" if name == "googlenet" else \
            " (with its auxiliary classifier, which pretrained=True keeps)" if name == "inception_v3" else ""
        c = s.shown(f"models.{name}(pretrained=True): parameters{note}", lambda n=name, k=kwargs: zoo.count(n, k),
                    command=_command(name, kwargs))
        if c is not None:
            counts[name] = c.measured
    if not counts:
        return
    fig, ax = new_figure(figsize=(8, 3.8))
    names = list(counts)
    ax.barh(range(len(names)), [counts[n] / 1e6 for n in names], color="#4c78a8")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlim(0.5, max(counts.values()) / 1e6 * 2)
    ax.set_xlabel("parameters (millions, log scale)")
    for i, n in enumerate(names):
        ax.text(counts[n] / 1e6 * 1.05, i, f"{counts[n] / 1e6:.1f}M", va="center", fontsize=7)
    ax.set_title("the lecture's model-zoo list, built by cnnlab from torchvision (weights=None)", fontsize=9)
    fig.tight_layout()
    s.figure("zoo", fig, "parameters of the lecture's model-zoo list (create_model('tv:NAME'), count_parameters)")


# ------------------------------------------------------------------------------------------- block structures
def _block_structures(s, zoo: _Zoo) -> None:
    s.within("2012: AlexNet, ~60M parameters (torchvision's alexnet)", 60e6, lambda: zoo.count("alexnet"),
             tolerance=0.05, relative=True, command=_command("alexnet"))
    s.within("2014: VGG, ~140M parameters (VGG16, the lecture's vgg16; VGG19 is in the Keras table below)", 140e6,
             lambda: zoo.count("vgg16"), tolerance=0.05, relative=True, command=_command("vgg16"))

    def googlenet_why() -> str:
        total = zoo.count("googlenet", NO_AUX)
        fc = next(r.params for r in zoo.summary("googlenet", NO_AUX).rows if r.name == "fc")
        return (f"torchvision's googlenet, built as the lecture's pretrained=True builds it (no auxiliary "
                f"classifiers), has {total:,} parameters, {fc:,} of them in its one dense layer (1024 -> 1000); "
                f"its convolutions alone have {total - fc:,}. The paper says GoogLeNet has 12x fewer parameters "
                f"than AlexNet ({zoo.count('alexnet'):,} / 12 = {zoo.count('alexnet') / 12 / 1e6:.1f}M); no "
                f"GoogLeNet in torchvision has ~4M: the lecture's figure is a loose round number")

    s.within("2015: Inception (aka GoogLeNet), ~4M parameters", 4e6, lambda: zoo.count("googlenet", NO_AUX),
             tolerance=0.10, relative=True, command=_command("googlenet", NO_AUX), differs=_safe(googlenet_why))
    s.within("2015: ResNet, ~60M parameters: that is ResNet-152 (the deepest of the paper's ImageNet ResNets)",
             60e6, lambda: zoo.count("resnet152"), tolerance=0.05, relative=True, command=_command("resnet152"))
    s.shown("... the other ResNets are far smaller (torchvision's resnet18/34/50/101/152, parameters)",
            lambda: {n: zoo.count(n) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")},
            command="cnnlab summary tv:resnet34 (and tv:resnet18, tv:resnet50, ...)")
    s.cited("top-5 errors: AlexNet 16.4%, VGG 10%, Inception ~7%, ResNet ~7% (ILSVRC)",
            "16.4% / 10% / ~7% / ~7%", why=NO_DATA)

    def weight_layers(name: str) -> int:
        rows = zoo.summary(name).rows
        return sum(1 for r in rows if r.type in ("Conv2d", "Linear") and "downsample" not in r.name)

    s.exact("VGG16 (the lecture's VGG16 figure): 16 weight layers, 13 convolutions and 3 dense", 16,
            lambda: weight_layers("vgg16"), command=_command("vgg16"))
    s.exact("ResNet34 (the lecture's ResNet34 figure): 34 weight layers, 33 convolutions and the dense layer "
            "(the three 1x1 projection shortcuts are not counted, as in the paper)", 34,
            lambda: weight_layers("resnet34"), command=_command("resnet34"))
    s.cited("ResNet paper, Table 4: single-model ImageNet validation errors, e.g. ResNet-152 19.38% top-1, "
            "4.49% top-5 (VGG 8.43%, GoogLeNet 7.89% top-5)", "ResNet-152: 19.38 / 4.49", why=NO_DATA)


def _safe(fn) -> str:
    """An explanation built from measured numbers; if computing it fails, the check itself still decides."""
    try:
        return fn()
    except Exception as e:  # the explanation is text; the check's own value is computed (and fails) separately
        return f"(explanation unavailable: {type(e).__name__}: {e})"


# ------------------------------------------------------------------------------------------------ Keras table
def _keras_table(s, zoo: _Zoo) -> None:
    vgg = lambda: zoo.summary("vgg16").param_mb  # noqa: E731
    s.exact("Keras' sizes are its HDF5 weight files in MB of 2**20 bytes: VGG16's float32 parameters (no BatchNorm, "
            "23 layers: the least file overhead) in MiB round to the table's 528; the other sizes are within "
            f"{SIZE_TOLERANCE:.0%} (the files also hold BatchNorm statistics and per-layer metadata)", 528,
            lambda: round(vgg()), command=_command("vgg16"))
    s.shown("... in MB of 10**6 bytes VGG16's float32 parameters would be (not the table's 528)",
            lambda: round(vgg() * 2**20 / 1e6), command=_command("vgg16"))
    for name, mb, top1, top5, params, depth, tv, kind in KERAS:
        if tv is None:
            s.cited(f"Keras {name}: {params:,} parameters, {mb} MB", params, why=kind)
            continue
        kwargs = NO_AUX if kind == "no-gamma" else None
        _keras_count(s, zoo, name, params, tv, kind, kwargs)
        s.within(f"Keras {name}: {mb} MB; torchvision's {tv}: float32 parameters in MiB", mb,
                 lambda t=tv, k=kwargs: round(zoo.summary(t, k).param_mb, 2), tolerance=SIZE_TOLERANCE,
                 relative=True, command=_command(tv, kwargs))
    s.cited("Keras table: top-1 / top-5 ImageNet accuracies and depths (e.g. VGG16 0.713 / 0.901, depth 23)",
            "VGG16: 0.713 / 0.901", why=NO_DATA)


def _keras_count(s, zoo: _Zoo, name: str, params: int, tv: str, kind: str, kwargs: dict | None) -> None:
    if kind == "same":
        s.exact(f"Keras {name}: {params:,} parameters; torchvision's {tv}", params, lambda: zoo.count(tv),
                command=_command(tv))
        return
    plain = lambda: zoo.count(tv, kwargs)  # noqa: E731
    keras = lambda: zoo.summary(tv, kwargs).total_params  # noqa: E731
    if kind == "keras":
        s.exact(f"Keras {name}: {params:,} parameters; torchvision's {tv} counted as Keras does (BatchNorm running "
                f"means and variances are non-trainable parameters there, buffers in PyTorch)", params, keras,
                command=_command(tv, keras=True))
        return

    def why() -> str:
        info, k, p = zoo.info(tv, kwargs), keras(), plain()
        if kind == "conv-bias":
            extra = info["conv_bias_free_channels"]
            adjusted, text = k + extra, (
                f"Keras' {name} (v1) gives every convolution a bias (Conv2D's default use_bias=True) although "
                f"BatchNorm follows each one; torchvision's convolutions have none: {extra:,} convolution output "
                f"channels -> {k:,} + {extra:,} = {k + extra:,}")
        else:  # no-gamma
            extra = info["bn_gammas"]
            adjusted, text = k - extra, (
                f"Keras' InceptionV3 has no auxiliary classifier (torchvision's is built with aux_logits=False here) "
                f"and its BatchNorm layers have scale=False (no gamma): {extra:,} gammas -> {k:,} - {extra:,} = "
                f"{k - extra:,}")
        same = "the lecture's number exactly" if adjusted == params else f"NOT the lecture's {params:,}"
        return f"{text}, {same} (PyTorch's own count, without BatchNorm statistics: {p:,})"

    text = _safe(why)
    s.exact(f"Keras {name}: {params:,} parameters; torchvision's {tv}{' (aux_logits=False)' if kwargs else ''} "
            f"counted as Keras does (BatchNorm statistics as non-trainable parameters)", params, keras,
            command=_command(tv, kwargs, keras=True), differs=text if "exactly" in text else None)


# ------------------------------------------------------------------------------------- residual and Inception
_KEEP = {"Input", "Conv2d", "MaxPool2d", "AvgPool2d", "Identity", "add", "cat"}


def _kept(graph) -> dict[int, list[int]]:
    """The nodes a block diagram shows (input, convs, pools, shortcuts, merges, a ReLU after a merge) and, for each,
    the shown nodes it reads (through BatchNorm, ReLU and the like)."""
    nodes = {n.index: n for n in graph.nodes}
    shown_preds: dict[int, list[int]] = {}

    def sources(i: int) -> list[int]:
        if i in shown_preds:
            return [i]
        out: list[int] = []
        for j in nodes[i].inputs:
            out += [k for k in sources(j) if k not in out]
        return out

    for n in graph.nodes:
        preds = [k for j in n.inputs for k in sources(j)]
        if n.type in _KEEP or (n.type == "ReLU" and any(nodes[p].type in ("add", "cat") for p in preds)):
            shown_preds[n.index] = list(dict.fromkeys(preds))
    return shown_preds


def _label(node) -> str:
    shape = "x".join(map(str, node.output_shape or ()))
    m = node.module
    if node.kind == "input":
        return f"input x\n{shape}"
    if isinstance(m, nn.Conv2d):
        return f"{m.kernel_size[0]}x{m.kernel_size[1]} conv\n{shape}"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        k = m.kernel_size if isinstance(m.kernel_size, int) else m.kernel_size[0]
        return f"{k}x{k} {'max' if isinstance(m, nn.MaxPool2d) else 'avg'} pool\n{shape}"
    if isinstance(m, nn.Identity):
        return "identity x"
    return {"add": "+ (add)", "cat": "concatenate"}.get(node.type, node.type) + f"\n{shape}"


def _draw_block(ax, graph, title: str) -> None:
    """The traced block as a diagram: one box per shown node, rows by depth, arrows along the traced edges."""
    preds = _kept(graph)
    nodes = {n.index: n for n in graph.nodes}
    depth: dict[int, int] = {}
    for i in preds:
        depth[i] = 1 + max((depth[p] for p in preds[i]), default=-1)
    succ: dict[int, list[int]] = {i: [] for i in preds}
    for i, ps in preds.items():
        for p in ps:
            succ[p].append(i)
    col: dict[int, float] = {}
    next_col = 0.0
    for i in preds:
        ps = preds[i]
        if len(ps) > 1:
            col[i] = sum(col[p] for p in ps) / len(ps)
        elif ps and succ[ps[0]][0] == i:
            col[i] = col[ps[0]]
        else:
            col[i] = next_col if not ps else max(col.values()) + 1
        next_col = max(next_col, col[i])
    for i, ps in preds.items():
        for p in ps:
            ax.add_patch(FancyArrowPatch((col[p], -depth[p]), (col[i], -depth[i]), arrowstyle="-|>",
                                         mutation_scale=9, shrinkA=14, shrinkB=14, color="#555", linewidth=0.9))
    for i in preds:
        merge = nodes[i].type in ("add", "cat")
        ax.text(col[i], -depth[i], _label(nodes[i]), ha="center", va="center", fontsize=7,
                bbox={"boxstyle": "round,pad=0.35", "fc": "#fde0c5" if merge else "#dbe8f6",
                      "ec": "#c0504d" if merge else "#4c78a8"})
    ax.set_xlim(min(col.values()) - 0.7, max(col.values()) + 0.7)
    ax.set_ylim(-max(depth.values()) - 0.6, 0.6)
    ax.set_title(title, fontsize=9)
    ax.set_axis_off()


def _branches(graph, merge) -> list[list[str]]:
    """Each input of ``merge``: the kernels on its path back to the block's input (``3x3 conv``, ...)."""
    preds = _kept(graph)
    nodes = {n.index: n for n in graph.nodes}
    out = []
    for p in preds[merge.index]:
        chain, i = [], p
        while nodes[i].kind != "input":
            chain.append(_label(nodes[i]).split("\n")[0])
            i = preds[i][0]
        out.append(chain[::-1])
    return out


def _merges(s) -> None:
    block = summarize(BasicBlock(16, 16), (16, 14, 14), model_name="BasicBlock(16, 16)")
    add = next(r for r in block.rows if r.type == "add")
    s.exact("the residual block (the paper's figure 2): relu(F(x) + x), the trace adds the second weight layer "
            "(after its BatchNorm) and the identity shortcut, then applies the ReLU",
            [["BatchNorm2d", "Identity"], "ReLU"],
            lambda: [[next(r.type for r in block.rows if r.name == i) for i in add.inputs],
                     next(r.type for r in block.rows if add.name in r.inputs)],
            command="cnnlab summary resnet-small")
    resnet = summarize(create_model("resnet-small"), (1, 28, 28), model_name="resnet-small")
    s.shown("resnet-small (ResNet-14): one add per basic block, 3 stages x 2 blocks; the blocks that halve the map "
            "add a 1x1-conv projection instead of the identity",
            lambda: [f"{r.name} <- {' + '.join(i.rsplit('.', 1)[-1] for i in r.inputs)}" for r in resnet.rows
                     if r.type == "add"], command="cnnlab summary resnet-small")

    module = InceptionModule(32, 16, 16, 32, 4, 8, 8)
    inc = summarize(module, (32, 28, 28), model_name="InceptionModule(32, 16, 16, 32, 4, 8, 8)")
    cat = next(r for r in inc.rows if r.type == "cat")
    cat_node = next(n for n in inc.graph.nodes if n.index == cat.index)
    s.exact("the Inception module with dimensionality reduction (figure 2b): four branches concatenated: 1x1; "
            "1x1 then 3x3; 1x1 then 5x5; 3x3 max pool then 1x1",
            [["1x1 conv"], ["1x1 conv", "3x3 conv"], ["1x1 conv", "5x5 conv"], ["3x3 max pool", "1x1 conv"]],
            lambda: _branches(inc.graph, cat_node), command="cnnlab summary inception-small")
    s.exact("... concatenated along the channels: 16 + 32 + 8 + 8 = 64 channels at the input's 28x28",
            [64, 28, 28], lambda: list(cat.output_shape), command="cnnlab summary inception-small")

    def reduction() -> dict[str, int]:
        direct = summarize(nn.Conv2d(32, 8, 5, padding=2, bias=False), (32, 28, 28)).total_macs
        reduced = sum(r.macs for r in inc.rows if r.name.startswith("branch3."))
        return {"5x5 conv on all 32 channels": direct, "1x1 to 4 channels, then 5x5": reduced}

    s.shown("the 1x1 'dimensionality reduction' before the 5x5 branch: MACs of the branch with and without it",
            reduction, command="cnnlab summary inception-small")
    incsmall = summarize(create_model("inception-small"), (1, 28, 28), model_name="inception-small")
    s.shown("inception-small: three Inception modules, one cat each (of four branches)",
            lambda: [f"{r.name} <- {len(r.inputs)} branches, {'x'.join(map(str, r.output_shape))}"
                     for r in incsmall.rows if r.type == "cat"], command="cnnlab summary inception-small")

    fig, axes = new_figure(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1, 1.8]})
    _draw_block(axes[0], block.graph, "residual block (BasicBlock), traced")
    _draw_block(axes[1], inc.graph, "Inception module with dimension reduction, traced")
    fig.tight_layout()
    s.figure("merges", fig, "the residual block's add and the Inception module's concatenation, drawn from "
                            "cnnlab's trace (BatchNorm and ReLU folded into the boxes before them)")


# ----------------------------------------------------------------------------------------- receptive fields
def _square(v):
    return v[0] if len(set(v)) == 1 else list(v)


def _rf_demo(s) -> list[dict]:
    report = field_report(summarize(create_model("rf-demo"), (3, 256, 256), model_name="rf-demo"), layer=2,
                          unit=(1, 1))
    rows = report.layers[:5]
    command = "cnnlab rf rf-demo --layer 2 --unit 1,1"
    s.exact("the lecture's Net (conv 7x7/2, BatchNorm, ReLU, max pool 3x3/2): layers 0-4",
            ["Input", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"], [t["type"] for t in rows], command=command)
    s.exact("map size, layers 0-4", [[256, 256], [128, 128], [128, 128], [128, 128], [64, 64]],
            [t["map_size"] for t in rows], command=command)
    s.exact("start, layers 0-4", [0.5] * 5, [_square(t["receptive_field"]["start"]) for t in rows], command=command)
    s.exact("jump, layers 0-4", [1.0, 2.0, 2.0, 2.0, 4.0], [_square(t["receptive_field"]["jump"]) for t in rows],
            command=command)
    s.exact("receptive field, layers 0-4", [1.0, 7.0, 7.0, 7.0, 11.0],
            [_square(t["receptive_field"]["size"]) for t in rows], command=command)
    regions = report.unit["regions"]
    s.exact("receptive field of layer 2, unit (1, 1): [(0, 6.0), (0, 6.0)] (clipped to the image)",
            [[0, 6.0], [0, 6.0]], [r["bounds"] for r in regions], command=command)
    s.exact("... the input pixels it covers (pixel centres 0.5 ... 5.5 lie in [0, 6]): rows and columns 0-5; "
            "unclipped the 7-wide field starts at -1, in the padding", [[0, 5], [0, 5]],
            [r["pixels"] for r in regions], command=command)
    s.shown("the lecture's code asks for unit (2, 2) but prints the field of (1, 1); unit (2, 2) sees",
            lambda: [r["bounds"] for r in field_report(summarize(create_model("rf-demo"), (3, 256, 256)), layer=2,
                                                       unit=(2, 2)).unit["regions"]],
            command="cnnlab rf rf-demo --layer 2 --unit 2,2")
    return regions


def _fmnist_fields(s):
    summary = summarize(create_model("fmnist-cnn"), (1, 28, 28), model_name="fmnist-cnn")
    table = [t for t in field_report(summary).layers if t["receptive_field"] and t["type"] in
             ("Input", "Conv2d", "MaxPool2d")]
    fig, ax = new_figure(figsize=(8, 3.4))
    x = np.arange(len(table))
    sizes = [_square(t["receptive_field"]["size"]) for t in table]
    maps = [t["map_size"][0] for t in table]
    ax.plot(x, sizes, "o-", color="#c0504d", label="receptive field (input pixels)")
    ax.plot(x, maps, "s--", color="#4c78a8", label="map size (units)")
    for xi, v in zip(x, sizes):
        ax.annotate(f"{v:g}", (xi, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xticks(x, [t["name"].replace("features.", "") for t in table], rotation=20, fontsize=7)
    ax.set_ylabel("pixels / units")
    ax.legend(fontsize=8)
    ax.set_title("fmnist-cnn: deeper units see more of the 28x28 input while the maps shrink", fontsize=9)
    fig.tight_layout()
    file = s.figure("fmnist-rf", fig, "fmnist-cnn: receptive field and map size per conv/pool layer "
                                      "(cnnlab rf fmnist-cnn)")
    s.shown("fmnist-cnn: the receptive field grows layer by layer (conv 3x3: +2 x jump; max pool 2: +1 x jump, "
            "jump doubles)", {t["name"]: _square(t["receptive_field"]["size"]) for t in table},
            command="cnnlab rf fmnist-cnn", figure=file)

    deep = "features.block2.pool"
    for unit in ((3, 3), (0, 0)):
        rep = field_report(summary, layer=deep, unit=unit)
        s.shown(f"inverse image of unit {unit} of {deep} (7x7 map): input rows and columns it sees",
                [r["pixels"] for r in rep.unit["regions"]],
                command=f"cnnlab rf fmnist-cnn --layer {deep} --unit {unit[0]},{unit[1]}")
    return summary, deep


def _draw_inverse(s, summary, deep: str, regions: list[dict]) -> None:
    """The inverse images: two units of fmnist-cnn's last map on its 28x28 input, rf-demo's unit (1, 1) of layer 2;
    the checks they illustrate get the figure."""
    fig, axes = new_figure(1, 2, figsize=(9, 4.4))
    ax = axes[0]
    ax.imshow(np.zeros((28, 28)), cmap="gray_r", vmin=0, vmax=1, extent=(0, 28, 28, 0))
    colours = {(3, 3): "#c0504d", (0, 0): "#4c78a8"}
    for unit, colour in colours.items():
        rep = field_report(summary, layer=deep, unit=unit)
        (r0, r1), (c0, c1) = [r["pixels"] for r in rep.unit["regions"]]
        ax.add_patch(Rectangle((c0, r0), c1 - c0 + 1, r1 - r0 + 1, fill=True, alpha=0.25, color=colour))
        ax.add_patch(Rectangle((c0, r0), c1 - c0 + 1, r1 - r0 + 1, fill=False, edgecolor=colour, linewidth=2,
                               label=f"unit {unit}: rows {r0}-{r1}, cols {c0}-{c1}"))
    ax.set_xticks(range(0, 29, 4))
    ax.set_yticks(range(0, 29, 4))
    ax.grid(True, color="#ddd", linewidth=0.5)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"fmnist-cnn, {deep} (7x7 map):\ninverse images on the 28x28 input", fontsize=9)
    ax = axes[1]
    ax.imshow(np.zeros((16, 16)), cmap="gray_r", vmin=0, vmax=1, extent=(0, 16, 16, 0))
    (r0, r1), (c0, c1) = [r["pixels"] for r in regions]
    (b0, b1), (d0, d1) = [r["unclipped"] for r in regions]
    ax.add_patch(Rectangle((d0, b0), d1 - d0, b1 - b0, fill=False, edgecolor="#888", linestyle="--", linewidth=1.2,
                           label="unclipped field (7x7, into the padding)"))
    ax.add_patch(Rectangle((c0, r0), c1 - c0 + 1, r1 - r0 + 1, alpha=0.3, color="#c0504d",
                           label=f"pixels {r0}-{r1} x {c0}-{c1}"))
    ax.set_xlim(-2, 16)
    ax.set_ylim(16, -2)
    ax.set_xticks(range(0, 17, 2))
    ax.set_yticks(range(0, 17, 2))
    ax.grid(True, color="#ddd", linewidth=0.5)
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("rf-demo, layer 2, unit (1, 1): bounds (0, 6)\n(top-left 16x16 of the 256x256 input)", fontsize=9)
    fig.tight_layout()
    file = s.figure("inverse-image", fig, "inverse images: the input pixels one unit can see (cnnlab rf ... --layer "
                                          "... --unit ...)")
    for c in s.checks:
        if c.statement.startswith("inverse image") or c.statement.startswith("... the input pixels it covers"):
            c.figure = file


# ------------------------------------------------------------------------------------------- global pooling
def _global_pooling(s) -> None:
    x = torch.randn(2, 128, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s.exact("global pooling: nn.AvgPool2d(kernel_size=image_size) then x.squeeze() turns (batch, channels, 7, 7) "
            "into (batch, channels)", [2, 128], lambda: list(global_avg_pool2d(x.numpy(), keepdims=False).shape),
            command="cnnlab summary gap-cnn")
    s.within("... cnnlab's global average pool against torch.nn.AvgPool2d(kernel_size=7)(x).squeeze(): "
             "largest difference", 0.0,
             lambda: float(np.abs(global_avg_pool2d(x.numpy(), keepdims=False)
                                  - nn.AvgPool2d(kernel_size=7)(x).squeeze().numpy()).max()),
             tolerance=1e-12, command="cnnlab summary gap-cnn")

    def heads() -> dict[str, int]:
        out = {}
        for head in ("gap", "flatten"):
            summary = summarize(create_model("gap-cnn", head=head), (1, 28, 28))
            out[f"{head}: classifier"] = sum(r.params for r in summary.rows if r.name.startswith("classifier"))
            out[f"{head}: total"] = summary.total_params
        return out

    s.shown("global pooling 'reduces the complexity of the dense classification network': gap-cnn's head (global "
            "average pooling) against flatten + dense on the same 128x7x7 features, parameters (the accuracy side "
            "is in the reduced-complexity section)", heads,
            command="cnnlab summary gap-cnn; cnnlab summary gap-cnn --model-arg head=flatten")
