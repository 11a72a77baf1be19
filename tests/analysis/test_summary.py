"""Model summaries: parameter counts (PyTorch and the lecture's Keras counting), MACs checked against
the hand formulas and torch's own FLOP counter, the JSON schema, depth folding, bad input shapes, and
above all no side effects on the model (BatchNorm statistics, modes, hooks, requires_grad)."""

from __future__ import annotations

import copy
import json
import math
import re
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils._python_dispatch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis import LayerRow, ShapeError, Summary, summarize
from cnnlab.models import create_model, list_models, model_info

# torchvision models at small inputs: (name, input size); googlenet also exercises "(other parameters)"
# (its auxiliary classifiers never run in eval mode)
TV_SMALL = [("resnet18", (3, 64, 64)), ("mobilenet_v2", (3, 64, 64)), ("mobilenet_v3_small", (3, 64, 64)),
            ("shufflenet_v2_x0_5", (3, 64, 64)), ("squeezenet1_0", (3, 64, 64)), ("densenet121", (3, 64, 64)),
            ("efficientnet_b0", (3, 64, 64)), ("convnext_tiny", (3, 64, 64)), ("googlenet", (3, 64, 64))]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)

_cache: dict = {}


pytestmark = pytest.mark.usefixtures("single_thread")


def _built(name: str, size=None) -> tuple[nn.Module, Summary]:
    """A model from the registry and its summary, built once per test session (summarize leaves the
    model as it was, which the side-effect tests below check)."""
    size = tuple(size or model_info(name).input_size)
    if (name, size) not in _cache:
        model = create_model(name)
        _cache[name, size] = model, summarize(model, size, model_name=name)
    return _cache[name, size]


def _rows_sum(s: Summary, attr: str) -> int:
    return sum(getattr(r, attr) for r in s.rows)


class GroupedNet(nn.Module):
    """Plain, depthwise and grouped convolutions, a 1x1 conv and a dense layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.grouped = nn.Conv2d(8, 16, (3, 5), stride=2, groups=4)
        self.pointwise = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12 * 7 * 6, 10)

    def forward(self, x):
        x = self.pointwise(self.grouped(F.relu(self.depthwise(self.conv(x)))))
        return self.fc(torch.flatten(x, 1))


GROUPED_INPUT = (4, 16, 16)


# ------------------------------------------------------------------------------------ parameters
def test_fmnist_cnn_pytorch_counting():
    _, s = _built("fmnist-cnn")
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (1_677_674, 1_677_674, 0)
    assert _rows_sum(s, "params") == 1_677_674


def test_fmnist_cnn_keras_counting_and_batchnorm_rows():
    model = create_model("fmnist-cnn")
    keras = summarize(model, (1, 28, 28), keras=True)
    plain = summarize(model, (1, 28, 28))
    assert (keras.total_params, keras.trainable_params, keras.non_trainable_params) == (1_679_082, 1_677_674, 1_408)
    assert _rows_sum(keras, "params") == 1_679_082
    assert _rows_sum(keras, "trainable_params") == 1_677_674
    modules = dict(model.named_modules())
    bn_rows = 0
    for k, p in zip(keras.rows, plain.rows):
        assert k.name == p.name
        m = modules.get(k.name)
        if isinstance(m, _BN):
            bn_rows += 1
            c = m.num_features
            assert (k.params, k.trainable_params, k.non_trainable_params) == (4 * c, 2 * c, 2 * c), k.name
            assert (p.params, p.trainable_params) == (2 * c, 2 * c), p.name
        else:
            assert (k.params, k.trainable_params) == (p.params, p.trainable_params), k.name
    assert bn_rows == 5  # four in the conv blocks, one in the head


def test_lecture_conv_params_and_dense_equivalent():
    """The lecture's Conv2d(16, 32, 3, padding=1) on a 16x64x64 map: 4,640 parameters, where a dense
    layer between the same input and output sizes would need 65,536 x 131,072 + 131,072."""
    s = summarize(nn.Sequential(nn.Conv2d(16, 32, 3, padding=1)), (16, 64, 64))
    (row,) = [r for r in s.rows if r.type == "Conv2d"]
    assert row.params == 4_640 == s.total_params
    assert row.output_shape == (32, 64, 64)
    assert row.dense_equivalent == 65_536 * 131_072 + 131_072 == 8_590_065_664
    assert row.macs == 32 * 64 * 64 * 16 * 9
    assert "8,590,065,664" in s.table(dense_equivalent=True)
    assert "8,590,065,664" not in s.table()


def test_frozen_parameters_are_non_trainable():
    model = create_model("fmnist-cnn")
    for p in model.features.block1.parameters():
        p.requires_grad_(False)
    frozen = sum(p.numel() for p in model.features.block1.parameters())
    s = summarize(model, (1, 28, 28))
    assert s.trainable_params == 1_677_674 - frozen and s.non_trainable_params == frozen
    assert _rows_sum(s, "trainable_params") == s.trainable_params
    conv1 = next(r for r in s.rows if r.name == "features.block1.conv1")
    assert (conv1.params, conv1.trainable_params) == (320, 0)
    k = summarize(model, (1, 28, 28), keras=True)
    assert k.non_trainable_params == frozen + 1_408 and k.total_params == 1_679_082


class ParamsOutsideOwner(nn.Module):
    """A container parameter used directly, and a conv whose weight is used without calling the conv."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 3, 1, 1))
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.unused_call = nn.Conv2d(3, 5, 1)

    def forward(self, x):
        x = self.conv(x) * self.scale
        return F.conv2d(x, self.unused_call.weight, self.unused_call.bias)


def test_parameters_used_outside_their_module_are_still_counted():
    model = ParamsOutsideOwner()
    s = summarize(model, (3, 8, 8))
    total = sum(p.numel() for p in model.parameters())
    assert s.total_params == total == 3 + 84 + 20
    assert _rows_sum(s, "params") == total
    assert _rows_sum(s, "trainable_params") == total
    assert s.total_macs == 3 * 64 * 27 + 5 * 64 * 3


# ------------------------------------------------------------------------------------------- MACs
def _hand_macs(row: LayerRow, module: nn.Module) -> int | None:
    """conv: output elements x (C_in / groups) x kernel area; linear: output elements x in_features."""
    if isinstance(module, nn.Conv2d):
        return math.prod(row.output_shape) * (module.in_channels // module.groups) * math.prod(module.kernel_size)
    if isinstance(module, nn.Linear):
        return math.prod(row.output_shape) * module.in_features  # = in * out for a vector input
    return None


def _flop_counter_macs(model: nn.Module, size) -> int:
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.randn(1, *size))
    finally:
        model.train(was)
    flops = counter.get_total_flops()
    assert flops % 2 == 0
    return flops // 2


MAC_MODELS = ["fmnist-cnn", "resnet-small", "inception-small", "grouped", "tv:mobilenet_v2"]


@pytest.mark.parametrize("name", MAC_MODELS)
def test_macs_match_hand_formulas_and_flop_counter(name):
    if name == "grouped":
        model, size = GroupedNet(), GROUPED_INPUT
        s = summarize(model, size)
    elif name.startswith("tv:"):
        size = (3, 64, 64)
        model, s = _built(name, size)
    else:
        model, s = _built(name)
        size = model_info(name).input_size
    modules = dict(model.named_modules())
    checked = 0
    for row in s.rows:
        if row.kind != "module":
            continue
        want = _hand_macs(row, modules[row.name])
        if want is not None:
            assert row.macs == want, row.name
            checked += 1
        elif not isinstance(modules[row.name], (nn.MultiheadAttention,)):
            assert row.macs == 0, (row.name, row.type, row.macs)  # norms, activations, pools: no MACs
    assert checked >= 5
    assert s.total_macs == _rows_sum(s, "macs") > 0
    assert s.total_macs == _flop_counter_macs(model, size)


def test_grouped_and_depthwise_macs_by_hand():
    s = summarize(GroupedNet(), GROUPED_INPUT)
    macs = {r.name: r.macs for r in s.rows}
    assert macs["conv"] == 8 * 16 * 16 * 4 * 9
    assert macs["depthwise"] == 8 * 16 * 16 * 1 * 9  # one input channel per output channel
    assert macs["grouped"] == 16 * 7 * 6 * 2 * 15  # 8 channels in 4 groups, 3x5 kernel, stride 2
    assert macs["pointwise"] == 12 * 7 * 6 * 16
    assert macs["fc"] == 504 * 10
    params = {r.name: r.params for r in s.rows}
    assert params["depthwise"] == 8 * 9 and params["grouped"] == 16 * 2 * 15 + 16


# ------------------------------------------------------------------------------------------- JSON
def _check_schema(d: dict, spatial: int = 2) -> None:
    assert {"model", "input", "layers", "total_params", "trainable_params", "non_trainable_params",
            "total_macs"} <= set(d)
    assert isinstance(d["model"], str) and isinstance(d["input"], list)
    for k in ("total_params", "trainable_params", "non_trainable_params", "total_macs"):
        assert isinstance(d[k], int) and d[k] >= 0, k
    assert d["total_params"] == d["trainable_params"] + d["non_trainable_params"]
    assert d["layers"]
    for layer in d["layers"]:
        assert {"name", "type", "output_shape", "params", "trainable_params", "macs", "receptive_field"} <= set(layer)
        assert isinstance(layer["name"], str) and isinstance(layer["type"], str)
        assert layer["output_shape"] is None or all(isinstance(v, int) for v in layer["output_shape"])
        assert all(isinstance(layer[k], int) for k in ("params", "trainable_params", "macs"))
        rf = layer["receptive_field"]
        if rf is not None:
            assert set(rf) == {"size", "jump", "start"}
            for k in ("size", "jump", "start"):
                assert len(rf[k]) == spatial and all(isinstance(v, (int, float)) for v in rf[k]), (layer["name"], rf)
    assert sum(layer["params"] for layer in d["layers"]) == d["total_params"]


@pytest.mark.parametrize("name", ["fmnist-cnn", "resnet-small", "inception-small"])
def test_json_schema(name):
    model, s = _built(name)
    d = json.loads(json.dumps(s.to_dict()))
    _check_schema(d)
    assert d["model"] == name and d["input"] == list(model_info(name).input_size)
    assert d["total_params"] == sum(p.numel() for p in model.parameters())
    assert d["total_macs"] == s.total_macs
    layers = {layer["name"]: layer for layer in d["layers"]}
    assert layers["input"]["receptive_field"] == {"size": [1, 1], "jump": [1, 1], "start": [0.5, 0.5]}
    assert layers["classifier.fc" if name != "fmnist-cnn" else "classifier.fc2"]["receptive_field"] is None


def test_json_fmnist_cnn_values():
    _, s = _built("fmnist-cnn")
    d = s.to_dict()
    layers = {layer["name"]: layer for layer in d["layers"]}
    conv = layers["features.block1.conv1"]
    assert conv["type"] == "Conv2d" and conv["output_shape"] == [32, 28, 28]
    assert (conv["params"], conv["macs"]) == (320, 32 * 28 * 28 * 9)
    assert conv["receptive_field"] == {"size": [3, 3], "jump": [1, 1], "start": [0.5, 0.5]}
    assert layers["features.block2.pool"]["receptive_field"] == {"size": [16, 16], "jump": [4, 4], "start": [2, 2]}
    assert layers["classifier.fc1"]["output_shape"] == [512] and layers["classifier.fc1"]["params"] == 1_606_144
    k = summarize(create_model("fmnist-cnn"), (1, 28, 28), keras=True).to_dict()
    assert (k["total_params"], k["trainable_params"], k["non_trainable_params"]) == (1_679_082, 1_677_674, 1_408)


# -------------------------------------------------------------------------------- side effects
def _snapshot(model: nn.Module) -> dict:
    return {
        "training": {n: m.training for n, m in model.named_modules()},
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "ids": [id(p) for p in model.parameters()],
    }


def _assert_untouched(model: nn.Module, before: dict) -> None:
    after = _snapshot(model)
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["ids"] == before["ids"]
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        w = after["state"][k]
        assert w.dtype == v.dtype and w.shape == v.shape, k
        assert torch.equal(w.reshape(-1).view(torch.uint8) if w.is_floating_point() else w,
                           v.reshape(-1).view(torch.uint8) if v.is_floating_point() else v), f"{k} changed"
    for name, m in model.named_modules():
        for hooks in ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
                      "_forward_pre_hooks_with_kwargs", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, hooks, {}), f"{name or 'model'}.{hooks} left behind"


def _side_effect_model(case: str) -> tuple[nn.Module, tuple]:
    if case == "fmnist-train":
        return create_model("fmnist-cnn").train(), (1, 28, 28)
    if case == "fmnist-eval":
        return create_model("fmnist-cnn").eval(), (1, 28, 28)
    if case == "resnet-train":
        return create_model("resnet-small").train(), (1, 28, 28)
    if case == "inception-eval":
        return create_model("inception-small").eval(), (1, 28, 28)
    if case == "rf-demo-train":
        return create_model("rf-demo").train(), (3, 64, 64)
    if case == "frozen-mixed":  # a frozen layer, and one submodule in eval inside a training model
        model = create_model("fmnist-cnn").train()
        model.features.block1.conv1.weight.requires_grad_(False)
        model.features.block2.bn1.eval()
        return model, (1, 28, 28)
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["fmnist-train", "fmnist-eval", "resnet-train", "inception-eval", "rf-demo-train",
                                  "frozen-mixed"])
def test_summarize_has_no_side_effects(case):
    torch.manual_seed(0)
    model, size = _side_effect_model(case)
    modes = {m: m.training for m in model.modules()}
    model.train()  # non-trivial BatchNorm statistics, so that a reset or an update would show
    with torch.no_grad():
        model(torch.randn(4, *size))
    for m, training in modes.items():
        m.training = training
    reference = copy.deepcopy(model)
    before = _snapshot(model)
    s = summarize(model, size, keras=True)
    summarize(model, size, depth=1)
    assert s.total_params > 0
    _assert_untouched(model, before)
    x = torch.randn(2, *size)
    torch.manual_seed(1)
    out = model(x)
    torch.manual_seed(1)
    want = reference(x)
    assert torch.equal(out, want)
    assert out.requires_grad == want.requires_grad


def test_a_failing_input_leaves_the_model_as_it_was():
    model = create_model("fmnist-cnn").train()
    model.features.block1.conv1.weight.requires_grad_(False)
    before = _snapshot(model)
    with pytest.raises(ShapeError):
        summarize(model, (1, 8, 8))
    _assert_untouched(model, before)
    assert not torch.overrides._get_current_function_mode_stack()
    assert not torch.utils._python_dispatch._get_current_dispatch_mode_stack()


# -------------------------------------------------------------------------- coverage of models
@pytest.mark.parametrize("name", list_models())
def test_every_registered_model(name):
    model, s = _built(name)
    total = sum(p.numel() for p in model.parameters())
    assert s.total_params == total == _rows_sum(s, "params")
    assert s.total_macs > 0 and s.total_macs == _rows_sum(s, "macs")
    assert s.rows[0].name == "input" and s.rows[0].output_shape == tuple(model_info(name).input_size)
    assert s.table().count("\n") >= len(s.rows)
    _check_schema(json.loads(json.dumps(s.to_dict())))


@pytest.mark.parametrize("arch,size", TV_SMALL, ids=[a for a, _ in TV_SMALL])
def test_torchvision_models_at_small_inputs(arch, size):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, s = _built("tv:" + arch, size)
    total = sum(p.numel() for p in model.parameters())
    assert s.total_params == total == _rows_sum(s, "params")
    assert s.trainable_params == total
    assert s.total_macs > 0 and s.total_macs == _rows_sum(s, "macs")
    last = [r for r in s.rows if r.output_shape is not None][-1]
    assert last.output_shape == (1000,)
    _check_schema(json.loads(json.dumps(s.to_dict())))
    if arch == "googlenet":  # the auxiliary classifiers are parameters no eval-mode forward uses
        other = [r for r in s.rows if r.name == "(other parameters)"]
        assert len(other) == 1
        assert other[0].params == sum(p.numel() for n, p in model.named_parameters() if n.startswith("aux"))


# ----------------------------------------------------------------------------------------- depth
@pytest.mark.parametrize("name", ["fmnist-cnn", "resnet-small", "inception-small"])
def test_depth_folds_rows_and_keeps_totals(name):
    model, full = _built(name)
    size = model_info(name).input_size
    for keras in (False, True):
        s = summarize(model, size, depth=1, keras=keras)
        ref = summarize(model, size, keras=keras) if keras else full
        assert len(s.rows) < len(ref.rows)
        assert (s.total_params, s.trainable_params, s.total_macs) == \
               (ref.total_params, ref.trainable_params, ref.total_macs)
        assert _rows_sum(s, "params") == s.total_params
        assert _rows_sum(s, "trainable_params") == s.trainable_params
        assert _rows_sum(s, "macs") == s.total_macs
        assert [r.name for r in s.rows] == ["input", "features", "classifier"]
    features = summarize(model, size, depth=1).rows[1]
    assert features.output_shape == next(r for r in reversed(full.rows) if r.name.startswith("features.")).output_shape


def test_depth_two_is_between():
    _, full = _built("resnet-small")
    s1 = summarize(create_model("resnet-small"), (1, 28, 28), depth=1)
    s2 = summarize(create_model("resnet-small"), (1, 28, 28), depth=2)
    assert len(s1.rows) < len(s2.rows) < len(full.rows)
    assert "features.stage2" in [r.name for r in s2.rows]
    assert _rows_sum(s2, "params") == full.total_params and _rows_sum(s2, "macs") == full.total_macs


# ------------------------------------------------------------------------------------- bad input
def test_input_too_small_names_the_first_failing_layer():
    with pytest.raises(ShapeError) as e:
        summarize(create_model("fmnist-cnn"), (1, 8, 8), model_name="fmnist-cnn")
    msg = str(e.value)
    assert "classifier.fc1" in msg and "[1, 256]" in msg and "[1, 8, 8]" in msg
    assert isinstance(e.value, ValueError)


def test_wrong_channel_count_names_the_first_conv():
    with pytest.raises(ShapeError) as e:
        summarize(create_model("fmnist-cnn"), (3, 28, 28))
    assert "features.block1.conv1" in str(e.value) and "[1, 3, 28, 28]" in str(e.value)


def test_catsdogs_at_28_pixels_names_a_layer():
    model = create_model("catsdogs-cnn")
    with pytest.raises(ShapeError) as e:
        summarize(model, (3, 28, 28), model_name="catsdogs-cnn")
    m = re.search(r"layer (\S+) \((\w+)\)", str(e.value))
    assert m, str(e.value)
    assert m.group(1) in dict(model.named_modules())
    assert "[3, 28, 28]" in str(e.value)


class Merge(nn.Module):
    """A strided conv (output ceil(H / 2)) and a 2x2 max pool (floor(H / 2)) concatenated: odd sizes fail
    in ``torch.cat``, between layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        return torch.cat([self.conv(x), self.pool(x)], dim=1)


def test_a_failing_operation_between_layers_is_named():
    assert summarize(Merge(), (1, 16, 16)).rows[-1].output_shape == (3, 8, 8)
    with pytest.raises(ShapeError) as e:
        summarize(Merge(), (1, 15, 15))
    msg = str(e.value)
    assert re.search(r"\bcat\b", msg), msg
    assert re.search(r"[\[(](1, )?2, 8, 8[\])]", msg) and re.search(r"[\[(](1, )?1, 7, 7[\])]", msg), msg


def test_a_float64_model():
    s = summarize(create_model("fmnist-cnn").double(), (1, 28, 28))
    assert (s.total_params, s.total_macs) == (1_677_674, 19_899_904)
    assert s.param_mb == pytest.approx(1_677_674 * 8 / 2**20)
