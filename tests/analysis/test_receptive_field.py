"""Receptive fields: the lecture's table, known values of torchvision networks, hand-computed cases
(dilation, non-square kernels and strides, residual and Inception-style unions), and the issue's key
requirement: every computed field verified empirically with gradients."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cnnlab.analysis import AxisField, summarize, unit_region
from cnnlab.models import BasicBlock, InceptionModule, create_model, model_info


pytestmark = pytest.mark.usefixtures("single_thread")


def _fields(model: nn.Module, size) -> dict[str, dict | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # padding="same" with even kernels warns
        s = summarize(model, size)
    out = {}
    for r in s.rows:
        out.setdefault(r.name, r)
    return out


def _rf(row) -> tuple[list, list, list]:
    d = row.receptive_field_dict()
    assert d is not None, (row.name, row.rf)
    return d["size"], d["jump"], d["start"]


# ------------------------------------------------------------------------------ the lecture's table
def test_lecture_rf_demo_table():
    """pytorch-receptive-field's table for the lecture's Net on 3x256x256 (cnn-lecture.txt, 'RECEPTIVE
    FIELD AS WE GO DEEPER')."""
    s = summarize(create_model("rf-demo"), (3, 256, 256))
    rows = [r for r in s.rows if r.output_shape is not None]
    want = [("input", 256, 1, 1), ("features.conv", 128, 2, 7), ("features.bn", 128, 2, 7),
            ("features.relu", 128, 2, 7), ("features.maxpool", 64, 4, 11)]
    assert [r.name for r in rows[:5]] == [w[0] for w in want]
    for r, (name, size, jump, rf) in zip(rows, want):
        assert list(r.output_shape[1:]) == [size, size], name
        assert _rf(r) == ([rf, rf], [jump, jump], [0.5, 0.5]), name


def test_lecture_unit_region_of_layer_2():
    """'Receptive field size for layer 2, unit_position (1, 1), is [(0, 6.0), (0, 6.0)]'."""
    s = summarize(create_model("rf-demo"), (3, 256, 256))
    bn = next(r for r in s.rows if r.name == "features.bn")
    for af in bn.rf.ordered():
        assert af == AxisField(7.0, 2.0, 0.5)
        region = unit_region(af, 1, 256)
        assert region["pixels"] == [0, 5]
        assert region["bounds"] == [0, 6.0]
        assert region["unclipped"] == [-1.0, 6.0]
        assert region["centre"] == 2.5
    last = unit_region(bn.rf.ordered()[0], 127, 256)
    assert last["pixels"] == [251, 255] and last["bounds"] == [251.0, 256.0]


def test_unit_region_edges():
    af = AxisField(5.0, 1.0, 0.5)  # two 3x3 convs with padding 1
    assert unit_region(af, 0, 10)["pixels"] == [0, 2]
    assert unit_region(af, 5, 10)["pixels"] == [3, 7]
    assert unit_region(af, 9, 10)["pixels"] == [7, 9]
    assert unit_region(af, 5, 10)["unclipped"] == [3.0, 8.0]
    far = unit_region(AxisField(3.0, 1.0, 0.5), 20, 10)  # a unit entirely in the padding
    assert far["pixels"] is None


# ------------------------------------------------------------------------------------- known values
def _zeroed(name: str) -> nn.Module:
    """A torchvision model with all-zero weights: receptive fields do not depend on them, and skipping the
    random initialisation of VGG-16's 138M parameters saves seconds."""
    with torch.device("meta"):
        model = create_model(name)
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in model.state_dict().values():
            t.zero_()
    return model


def test_torchvision_resnet18_layer4():
    """ResNet-18: 435-pixel receptive field and jump 32 at layer4's output (the well-known value)."""
    model = _zeroed("tv:resnet18")
    s = summarize(model, (3, 224, 224))
    pool = next(i for i, r in enumerate(s.rows) if r.name == "avgpool")
    last = s.rows[pool - 1]
    assert last.name.startswith("layer4.") and last.output_shape == (512, 7, 7)
    assert _rf(last) == ([435, 435], [32, 32], [0.5, 0.5])
    assert s.rows[pool].rf.is_global
    stem = {r.name: r for r in s.rows}
    assert _rf(stem["maxpool"]) == ([11, 11], [4, 4], [0.5, 0.5])  # the lecture's rf-demo is this stem


def test_torchvision_vgg16_last_pool():
    """VGG-16: 212 pixels at the last max pool (size-independent; 3x32x32 keeps it fast)."""
    model = _zeroed("tv:vgg16")
    rows = _fields(model, (3, 32, 32))
    assert isinstance(model.features[30], nn.MaxPool2d)
    assert _rf(rows["features.30"]) == ([212, 212], [32, 32], [16, 16])
    assert _rf(rows["features.4"]) == ([6, 6], [2, 2], [1, 1])  # first pool


class Dilated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, dilation=2, padding=2)
        self.b = nn.Conv2d(2, 2, 3, stride=2, dilation=3)

    def forward(self, x):
        return self.b(F.relu(self.a(x)))


class NonSquare(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, (3, 5), stride=(1, 2), padding=(0, 1))
        self.pool = nn.MaxPool2d((2, 3), stride=(2, 1))
        self.avg = nn.AvgPool2d(2)
        self.adaptive = nn.AdaptiveAvgPool2d((2, 3))

    def forward(self, x):
        return self.adaptive(self.avg(self.pool(F.relu(self.conv(x)))))


def test_dilated_convolutions():
    rows = _fields(Dilated(), (1, 32, 32))
    assert _rf(rows["a"]) == ([5, 5], [1, 1], [0.5, 0.5])  # 3 taps 2 apart: span 4
    # span 3 * 2 = 6 conv-a units of jump 1: 5 + 6 = 11; start 0.5 + 3 (no padding)
    assert _rf(rows["b"]) == ([11, 11], [2, 2], [3.5, 3.5])
    assert unit_region(rows["b"].rf.ordered()[0], 0, 32)["unclipped"] == [-2.0, 9.0]


def test_non_square_kernels_and_strides():
    rows = _fields(NonSquare(), (1, 32, 36))
    # rows: kernel 3, no padding; columns: kernel 5, stride 2, padding 1
    assert rows["conv"].output_shape == (2, 30, 17)
    assert _rf(rows["conv"]) == ([3, 5], [1, 2], [1.5, 1.5])
    # pool (2, 3) stride (2, 1): rows 3 + 1 = 4, jump 2, start 2; columns 5 + 2 * 2 = 9, jump 2, start 3.5
    assert _rf(rows["pool"]) == ([4, 9], [2, 2], [2.0, 3.5])
    # 2x2 average pool: rows 4 + 2 = 6, jump 4, start 3; columns 9 + 2 = 11, jump 4, start 4.5
    assert rows["avg"].output_shape == (2, 7, 7)
    assert _rf(rows["avg"]) == ([6, 11], [4, 4], [3.0, 4.5])
    assert rows["adaptive"].rf.is_global  # 7 -> 2 and 7 -> 3 windows are uneven


def test_even_adaptive_pool_is_a_window():
    rows = _fields(nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.AdaptiveMaxPool2d(4)), (1, 8, 12))
    # 8 -> 4: windows of 2; 12 -> 4: windows of 3
    assert _rf(rows["1"]) == ([4, 5], [2, 3], [1.0, 1.5])


def test_residual_block_is_the_union_of_its_branches():
    rows = _fields(BasicBlock(2, 2), (2, 16, 16))  # identity shortcut: 1 pixel, residual: two 3x3 convs
    assert _rf(rows["add"]) == ([5, 5], [1, 1], [0.5, 0.5])
    assert _rf(rows["relu2"]) == ([5, 5], [1, 1], [0.5, 0.5])
    rows = _fields(BasicBlock(2, 4, stride=2), (2, 16, 16))
    assert _rf(rows["shortcut.bn"]) == ([1, 1], [2, 2], [0.5, 0.5])
    assert _rf(rows["bn2"]) == ([7, 7], [2, 2], [0.5, 0.5])
    assert _rf(rows["relu2"]) == ([7, 7], [2, 2], [0.5, 0.5])


def test_inception_concat_the_widest_branch_wins():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), InceptionModule(4, 2, 2, 2, 2, 2, 2))
    rows = _fields(model, (1, 16, 16))
    assert _rf(rows["0"]) == ([3, 3], [2, 2], [0.5, 0.5])
    assert _rf(rows["1.branch1.relu"]) == ([3, 3], [2, 2], [0.5, 0.5])
    assert _rf(rows["1.branch2.conv.relu"]) == ([7, 7], [2, 2], [0.5, 0.5])
    assert _rf(rows["1.branch3.conv.relu"]) == ([11, 11], [2, 2], [0.5, 0.5])  # the 5x5 branch
    assert _rf(rows["1.branch4.pool"]) == ([7, 7], [2, 2], [0.5, 0.5])
    assert _rf(rows["1.cat"]) == ([11, 11], [2, 2], [0.5, 0.5])


class OffsetBranches(nn.Module):
    """Two branches whose fields are offset from each other, merged by ``merge`` (``"cat"`` or ``"add"``).

    After the stem (3x3, stride 2, padding 1: size 3, jump 2, centre 0.5, i.e. [-1, 2]):
    * ``left``: 3x3, padding 1: size 3 + 2*2 = 7, centre 0.5: [-3, 4]
    * ``right``: two 2x2 convs with padding "same" (PyTorch pads 0 before, 1 after): each adds 2 to the
      size and 1 to the centre: size 7, centre 2.5: [-1, 6]
    The union is [-3, 6]: size 9, centre 1.5, jump 2 -- neither branch alone.
    """

    def __init__(self, merge: str = "cat"):
        super().__init__()
        self.merge = merge
        self.stem = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.left = nn.Conv2d(3, 3, 3, padding=1)
        self.right = nn.Sequential(nn.Conv2d(3, 3, 2, padding="same"), nn.ReLU(), nn.Conv2d(3, 3, 2, padding="same"))
        self.head = nn.Conv2d(6 if merge == "cat" else 3, 2, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        a, b = self.left(x), self.right(x)
        y = torch.cat([a, b], dim=1) if self.merge == "cat" else a + b
        return self.head(y)


@pytest.mark.parametrize("merge", ["cat", "add"])
def test_union_of_offset_branches(merge):
    rows = _fields(OffsetBranches(merge), (1, 24, 24))
    assert _rf(rows["left"]) == ([7, 7], [2, 2], [0.5, 0.5])
    assert _rf(rows["right.2"]) == ([7, 7], [2, 2], [2.5, 2.5])
    assert _rf(rows[merge]) == ([9, 9], [2, 2], [1.5, 1.5])
    assert _rf(rows["head"]) == ([9, 9], [2, 2], [1.5, 1.5])
    region = unit_region(rows["head"].rf.ordered()[0], 3, 24)  # centre 7.5
    assert region["unclipped"] == [3.0, 12.0] and region["pixels"] == [3, 11]


class Branching(nn.Module):
    """Stem (3x3 stride 2), then a 5x5 branch and a dilated 3x3 branch (dilation 2), concatenated."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.wide = nn.Sequential(nn.Conv2d(4, 3, 5, padding=2), nn.ReLU())
        self.dilated = nn.Sequential(nn.Conv2d(4, 3, 3, padding=2, dilation=2), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.out = nn.Conv2d(6, 2, 3)

    def forward(self, x):
        x = self.stem(x)
        return self.out(self.pool(torch.cat([self.wide(x), self.dilated(x)], dim=1)))


def test_branching_model_values():
    rows = _fields(Branching(), (1, 24, 24))
    assert _rf(rows["wide.1"]) == ([11, 11], [2, 2], [0.5, 0.5])
    assert _rf(rows["dilated.1"]) == ([11, 11], [2, 2], [0.5, 0.5])  # same span, with holes
    assert _rf(rows["cat"]) == ([11, 11], [2, 2], [0.5, 0.5])
    assert _rf(rows["pool"]) == ([13, 13], [4, 4], [1.5, 1.5])
    assert _rf(rows["out"]) == ([21, 21], [4, 4], [5.5, 5.5])  # 13 + 2 * 4, centre 1.5 + 4


def test_dense_layers_see_everything():
    rows = _fields(create_model("fmnist-cnn"), (1, 28, 28))
    assert rows["classifier.fc1"].rf.is_global and rows["classifier.fc1"].receptive_field_dict() is None
    assert _rf(rows["features.block2.drop"]) == ([16, 16], [4, 4], [2, 2])


# ------------------------------------------------------------------------- verified with gradients
def _positive_linear(model: nn.Module) -> nn.Module:
    """A copy of ``model`` in which no gradient can cancel or vanish (see the test docstring)."""
    m = copy.deepcopy(model).double().eval()
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Identity())
            elif isinstance(child, nn.MaxPool2d):
                if child.dilation not in (1, (1, 1)):
                    pytest.skip("a dilated max pool has no average-pool twin")
                setattr(parent, name, nn.AvgPool2d(child.kernel_size, child.stride, child.padding, child.ceil_mode))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)) and mod.weight is not None:
                mod.weight.copy_(mod.weight.abs() + 0.01)
    return m


def _input_gradient(model: nn.Module, layer: str, size, unit, ones: bool) -> torch.Tensor:
    """|d(sum over channels of ``layer``'s output at ``unit``) / d input|, summed over input channels."""
    captured = []
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, i, o: captured.append(o.clone()))
    gen = torch.Generator().manual_seed(0)
    x = torch.ones(1, *size, dtype=torch.float64) if ones else torch.randn(1, *size, dtype=torch.float64,
                                                                            generator=gen)
    x.requires_grad_(True)
    try:
        model(x)
    finally:
        handle.remove()
    out = captured[0]
    out[0, :, unit[0], unit[1]].sum().backward()
    return x.grad[0].abs().sum(0)


def _region_mask(fields, unit, hw) -> tuple[torch.Tensor, list]:
    pixels = []
    for af, u, extent in zip(fields, unit, hw):
        p = unit_region(af, u, extent)["pixels"]
        assert p is not None
        pixels.append(p)
    mask = torch.zeros(hw, dtype=torch.bool)
    mask[pixels[0][0]:pixels[0][1] + 1, pixels[1][0]:pixels[1][1] + 1] = True
    return mask, pixels


# model: (build, input size (None: the registered size), {layer: what the gradient region must be}):
# "solid": exactly the computed rectangle; "union": a union of offset branches' rectangles whose bounding
# box is the computed one; "holes": a dilated field whose taps end at the computed border (where the image
# does not clip it first)
EMPIRICAL = {
    "fmnist-cnn": (lambda: create_model("fmnist-cnn"), None,
                   {"features.block1.bn2": "solid", "features.block2.conv1": "solid", "features.block2.pool": "solid"}),
    "vgg-small": (lambda: create_model("vgg-small"), None,
                  {"features.stage2.relu2": "solid", "features.stage3.pool": "solid"}),
    "resnet-small": (lambda: create_model("resnet-small"), None,
                     {"features.stage1.block2.relu2": "solid", "features.stage2.block1.relu2": "solid",
                      "features.stage3.block2.bn1": "solid"}),
    "inception-small": (lambda: create_model("inception-small"), None,
                        {"features.inception1.branch3.conv.relu": "solid", "features.pool1": "solid",
                         "features.inception3.branch4.proj.relu": "solid"}),
    "gap-cnn": (lambda: create_model("gap-cnn"), None, {"features.stage2.pool": "solid", "classifier.conv": "solid"}),
    "rf-demo": (lambda: create_model("rf-demo"), (3, 48, 48), {"features.bn": "solid", "features.maxpool": "solid"}),
    "branching": (Branching, (1, 24, 24), {"wide.1": "solid", "dilated.1": "holes", "pool": "solid", "out": "solid"}),
    "offset-cat": (lambda: OffsetBranches("cat"), (1, 24, 24), {"right.2": "solid", "head": "union"}),
    "offset-add": (lambda: OffsetBranches("add"), (1, 24, 24), {"head": "union"}),
    "dilated": (Dilated, (1, 32, 32), {"a": "holes", "b": "holes"}),
    "non-square": (NonSquare, (1, 32, 36), {"conv": "solid", "pool": "solid", "avg": "solid"}),
}


@pytest.mark.parametrize("case", list(EMPIRICAL))
def test_receptive_fields_verified_with_gradients(case):
    """The computed field of a unit must be exactly the set of input pixels its value depends on.

    (1) Zero outside: in the real model (random weights, ReLUs, max pools; eval mode, float64) the
        gradient of the unit's output (summed over channels) w.r.t. the input vanishes outside the
        computed pixel region.
    (2) Reaches the border: gradients of a real network may vanish inside the region too (a dead ReLU, a
        max pool picking another input, weights cancelling), so the second check uses a copy in which
        nothing can cancel: every ReLU becomes an identity, every MaxPool2d an AvgPool2d with the same
        kernel, stride, padding and ceil_mode (the same geometry), BatchNorm stays in eval mode, all conv,
        linear and BatchNorm weights are made positive (|w| + 0.01) and the input is all ones. The network
        is then linear with positive coefficients, so every input pixel that can influence the unit gets a
        strictly positive gradient: the non-zero gradient must fill the computed region (clipped to the
        image) exactly. Exceptions, by construction: the union of offset branches is a union of
        rectangles (its bounding box is the computed region), and a dilated field has holes (its
        outermost taps are the region's border, except where the image clips the region first).
    """
    build, size, layers = EMPIRICAL[case]
    torch.manual_seed(0)
    model = build()
    size = tuple(size or model_info(case).input_size)
    rows = _fields(model, size)
    real = copy.deepcopy(model).double().eval()
    positive = _positive_linear(model)
    hw = size[1:]
    for layer, kind in layers.items():
        row = rows[layer]
        fields = row.rf.ordered()
        assert len(fields) == 2, (case, layer)
        mh, mw = row.output_shape[-2:]
        units = {(mh // 2, mw // 2), (0, 0), (mh - 1, mw - 1), (0, mw - 1)}
        for unit in sorted(units):
            mask, pixels = _region_mask(fields, unit, hw)
            where = f"{case} {layer} unit {unit}: computed rows {pixels[0]}, columns {pixels[1]}"
            g = _input_gradient(real, layer, size, unit, ones=False)
            assert not g[~mask].any(), f"{where}: gradient outside at {(g * ~mask).nonzero()[:5].tolist()}"
            nz = _input_gradient(positive, layer, size, unit, ones=True) > 0
            assert nz.any(), where
            assert not nz[~mask].any(), where
            rows_nz, cols_nz = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
            seen = [[rows_nz.min().item(), rows_nz.max().item()], [cols_nz.min().item(), cols_nz.max().item()]]
            message = f"{where}; gradient rows {seen[0]}, columns {seen[1]}"
            if kind == "solid":
                assert torch.equal(nz, mask), message
            elif kind == "union":
                assert seen == pixels, message
            else:  # holes: exact where the field is not clipped by the image
                for axis, (af, u, extent) in enumerate(zip(fields, unit, hw)):
                    lo, hi = unit_region(af, u, extent)["unclipped"]
                    if lo >= 0:
                        assert seen[axis][0] == pixels[axis][0], message
                    if hi <= extent:
                        assert seen[axis][1] == pixels[axis][1], message


class FunctionalPad(nn.Module):
    """``F.pad`` two pixels before the top and the left, then a 3x3 conv without padding: output unit
    (i, j) sees input pixels i-2..i, j-2..j (centre i - 0.5)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3)

    def forward(self, x):
        return self.conv(F.pad(x, (2, 0, 2, 0)))


def test_functional_pad_shifts_the_field_back():
    rows = _fields(FunctionalPad(), (1, 16, 16))
    assert _rf(rows["pad"]) == ([1, 1], [1, 1], [-1.5, -1.5])
    assert _rf(rows["conv"]) == ([3, 3], [1, 1], [-0.5, -0.5])
    region = unit_region(rows["conv"].rf.ordered()[0], 5, 16)
    assert region["pixels"] == [3, 5]


def test_padding_module_keeps_a_spatial_field():
    rows = _fields(nn.Sequential(nn.ZeroPad2d((2, 0, 2, 0)), nn.Conv2d(1, 1, 3)), (1, 16, 16))
    assert _rf(rows["1"]) == ([3, 3], [1, 1], [-0.5, -0.5])
