"""cnnlab.compress.binarize: which layers are binarized (first and last in forward order kept), the stored
sign bits and scales, the rebuilt model bit for bit, fine-tuning through the STE, XNOR's refusal of
never-negative inputs, and the errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from cnnlab.compress.base import CompressError
from cnnlab.compress.binarize import compress_binarize, rebuild_binarize
from cnnlab.compress.finetune import make_finetune
from cnnlab.compress.storage import artifact_bytes, read_artifact, unpack_bits, write_artifact
from cnnlab.layers import BinaryConv2d, BinaryLinear, weight_scale
from cnnlab.models import FashionCNN, create_model
from cnnlab.train import TrainConfig
from tests.compress.models import TINY, tiny_cnn

pytestmark = pytest.mark.usefixtures("single_thread")

BINARIZED = ["features.block1.conv2", "features.block2.conv1", "features.block2.conv2", "classifier.fc1"]



def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
def test_rebuilt_model_is_the_compressed_one_bit_for_bit(tmp_path, mode):
    c = compress_binarize(tiny_cnn(), mode=mode)
    write_artifact(tmp_path / "m.cnnz", c.tensors, c.meta)
    tensors, meta = read_artifact(tmp_path / "m.cnnz")
    rebuilt = rebuild_binarize(FashionCNN(**TINY), tensors, meta)
    assert not rebuilt.training and not c.model.training
    x = images()
    assert torch.equal(rebuilt(x), c.model(x))
    xc = x.to(memory_format=torch.channels_last)
    assert torch.equal(rebuilt(xc), c.model(xc))
    assert torch.allclose(c.model(xc), c.model(x), atol=1e-5)
    state, again = c.model.state_dict(), rebuilt.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[k], again[k]) for k in state)


@pytest.mark.parametrize("mode", ["bwn", "xnor"])
def test_first_and_last_stay_float_the_rest_is_binary_with_the_trained_weights(mode):
    model = tiny_cnn()
    trained = {k: v.clone() for k, v in model.state_dict().items()}
    c = compress_binarize(model, mode=mode)
    types = {name: type(m) for name, m in c.model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert types == {"features.block1.conv1": nn.Conv2d, "classifier.fc2": nn.Linear,
                     **{n: BinaryLinear if n.startswith("classifier") else BinaryConv2d for n in BINARIZED}}
    assert all(c.model.get_submodule(n).mode == mode for n in BINARIZED)
    for name in BINARIZED:  # the latent weight became alpha * sign of the trained weight
        w = trained[name + ".weight"]
        alpha = w.double().abs().flatten(1).mean(1).float().view(-1, *([1] * (w.dim() - 1)))
        assert torch.equal(c.model.get_submodule(name).weight, torch.where(w >= 0, alpha, -alpha))
    assert torch.equal(c.model.get_submodule("features.block1.conv1").weight, trained["features.block1.conv1.weight"])
    assert [r["layer"] for r in c.report["binarized"]] == BINARIZED
    kept = {r["layer"]: r["reason"] for r in c.report["float_layers"]}
    assert kept.keys() == {"features.block1.conv1", "classifier.fc2"}
    assert "first" in kept["features.block1.conv1"] and "1 channel" in kept["features.block1.conv1"]
    assert "logits" in kept["classifier.fc2"]


def test_stored_bits_and_scales_are_what_the_model_computes_with():
    c = compress_binarize(tiny_cnn(), mode="bwn")
    for name in BINARIZED:
        layer = c.model.get_submodule(name)
        n = layer.weight.numel()
        bits, alpha = c.tensors[name + ".weight.sign"], c.tensors[name + ".weight.alpha"]
        assert bits.dtype == torch.uint8 and bits.numel() == math.ceil(n / 8)
        assert alpha.dtype == torch.float32 and alpha.shape == (layer.out_features if name.startswith("classifier")
                                                                 else layer.out_channels,)
        assert torch.equal(weight_scale(layer.weight), alpha)  # re-binarizing gives the stored scale exactly
        assert torch.equal(layer.binary_weight(), layer.weight)  # ... and the stored weight
        assert torch.equal(unpack_bits(bits, 1, n).bool(), (layer.weight >= 0).flatten())
        assert name + ".weight" not in c.tensors
    floats = [k for k in c.tensors if not k.endswith((".sign", ".alpha"))]
    assert all(c.tensors[k].dtype == torch.float32 for k in floats if c.tensors[k].is_floating_point())
    assert "features.block1.conv1.weight" in floats and "features.block1.bn1.running_var" in floats


def test_full_size_fmnist_cnn_binarized_weights_are_over_20x_smaller():
    torch.manual_seed(0)
    c = compress_binarize(create_model("fmnist-cnn"), mode="bwn")
    rows = {r["layer"]: r for r in c.report["binarized"]}
    fc1 = rows["classifier.fc1"]
    assert fc1["weights"] == 3136 * 512 and fc1["bits"] == 1
    assert fc1["weight_bytes_float32"] == 4 * 3136 * 512 and fc1["weight_bytes_stored"] == 3136 * 64 + 4 * 512
    assert c.report["binarized_weight_ratio"] >= 20
    dense = 4 * sum(v.numel() for v in create_model("fmnist-cnn").state_dict().values())
    assert artifact_bytes(c.tensors, c.meta) < dense / 10


def test_keep_first_last_false_binarizes_every_layer():
    c = compress_binarize(tiny_cnn(), mode="xnor", keep_first_last=False)
    assert c.report["float_layers"] == []
    assert len(c.report["binarized"]) == 6 and isinstance(c.model.classifier.fc2, BinaryLinear)
    assert c.report["binarized"][0]["input_from"] == "the model's input"


def test_fine_tuning_trains_the_latent_weights_through_the_ste(tiny_data):
    torch.manual_seed(0)
    model = FashionCNN(**TINY, dropout=0.0, head_dropout=0.0)
    signs = {n: model.get_submodule(n).weight >= 0 for n in BINARIZED}
    x = (tiny_data.train_x.float() / 255 - tiny_data.mean[0]) / tiny_data.std[0]
    loss = lambda m: float(nn.functional.cross_entropy(m(x), tiny_data.train_y))  # noqa: E731
    calls = []
    cfg = TrainConfig(batch_size=32, lr=0.01, augment=False).validate()
    finetune = make_finetune(cfg, tiny_data, lr_fraction=1.0, log=lambda s: None)  # 16 steps an epoch

    def recording(m, epochs, **kwargs):
        calls.append((epochs, sorted(type(x).__name__ for x in m.modules() if hasattr(x, "mode"))))
        with torch.no_grad():
            calls.append(loss(m.eval()))
        return finetune(m, epochs, **kwargs)

    c = compress_binarize(model, mode="xnor", finetune=recording, finetune_epochs=2)
    assert calls[0] == (2, ["BinaryConv2d"] * 3 + ["BinaryLinear"])  # fine-tuned after the swap
    with torch.no_grad():
        assert loss(c.model) < 0.8 * calls[1]
    for name in BINARIZED:  # the STE reached every binarized layer's latent weights: signs flipped
        flipped = (c.model.get_submodule(name).weight >= 0) != signs[name]
        assert 0 < flipped.float().mean() < 0.5, name
    assert len(c.report["finetune_history"]) == 2 and c.report["finetune_epochs"] == 2
    rebuilt = rebuild_binarize(FashionCNN(**TINY, dropout=0.0, head_dropout=0.0), c.tensors, c.meta)
    assert torch.equal(rebuilt(x[:8]), c.model(x[:8]))


@pytest.mark.parametrize("name", ["vgg-small", "resnet-small", "mlp", "fmnist-mobile", "inception-small"])
def test_bwn_handles_cnnlabs_models(name):
    c = compress_binarize(create_model(name), mode="bwn")
    rebuilt = rebuild_binarize(create_model(name), c.tensors, c.meta)
    x = images(2)
    assert torch.equal(rebuilt(x), c.model(x)) and c.report["binarized"]


@pytest.mark.parametrize("name,layer,source", [
    ("vgg-small", "features.stage1.conv2", "ReLU features.stage1.relu1"),
    ("resnet-small", "features.stage1.block1.conv1", "ReLU features.stem.relu"),
    ("mlp", "features.fc2", "ReLU features.relu1"),
])
def test_xnor_refuses_layers_whose_input_is_never_negative(name, layer, source):
    with pytest.raises(CompressError, match=f"layer {layer}: it comes from {source} and is never negative"):
        compress_binarize(create_model(name), mode="xnor")


def test_xnor_sees_through_pooling_and_sums_of_relus():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d = (nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1),
                                              nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 2, 1))
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = torch.relu(self.a(x))
            z = self.c(nn.functional.max_pool2d(y + torch.relu(self.b(y)), 2))  # b: ReLU -> refused
            return self.d(self.bn(z)).flatten(1)

    with pytest.raises(CompressError, match=r"layer b: it comes from relu \(relu\) .* \(1 more layer alike\)"):
        compress_binarize(Net(), mode="xnor")
    assert compress_binarize(Net(), mode="bwn").report["binarized"][1]["input_from"] == (
        "add (add) of relu (relu), relu (relu_1)")


@pytest.mark.parametrize("kwargs,match", [
    ({"mode": "ternary"}, "mode must be one of 'bwn', 'xnor'; got 'ternary'"),
    ({"finetune_epochs": -1}, "finetune_epochs must be an integer >= 0; got -1"),
    ({"finetune_epochs": 2}, "finetune_epochs=2 needs a finetune callable"),
])
def test_bad_settings(kwargs, match):
    with pytest.raises(CompressError, match=match):
        compress_binarize(tiny_cnn(), **kwargs)


def test_models_it_cannot_binarize_are_refused_by_name():
    with pytest.raises(CompressError, match="layer features.block1.conv2: PredefinedSparseConv2d"):
        compress_binarize(create_model("fmnist-sparse"))
    with pytest.raises(CompressError, match="nothing to binarize.*features.conv.*keep_first_last=False"):
        compress_binarize(create_model("rf-demo"))


def test_rebuild_refuses_an_artifact_of_another_model():
    c = compress_binarize(tiny_cnn())
    with pytest.raises(CompressError, match="layer features.block1.conv2: the artifact has a weight of shape"):
        rebuild_binarize(create_model("fmnist-cnn"), c.tensors, c.meta)
    with pytest.raises(CompressError, match="not a binarize artifact"):
        rebuild_binarize(tiny_cnn(), c.tensors, {"level": 1})
