"""Transfer surgery: new heads for every registered model and for torchvision models, input-channel
adaptation, freezing (parameters and BatchNorm statistics), and exact rebuilding from the spec."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from cnnlab.models import (
    EvalBatchNorm2d,
    TransferError,
    build_from_spec,
    count_parameters,
    create_model,
    freeze,
    list_models,
    model_info,
    model_spec,
    transfer,
    transfer_blocks,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _x(c: int, h: int, w: int, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def _same_model(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    """``b``, given ``a``'s state dict, computes what ``a`` computes; both have the same trainable set."""
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    b.load_state_dict(a.state_dict())
    assert [n for n, p in a.named_parameters() if p.requires_grad] == \
        [n for n, p in b.named_parameters() if p.requires_grad]
    assert [type(m) for m in a.modules()] == [type(m) for m in b.modules()]
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def _conv_trunk(name: str) -> bool:
    return name not in ("mlp",)  # every registered model but the MLP has a conv feature map to pool


@pytest.mark.parametrize("name", [n for n in list_models() if _conv_trunk(n)])
def test_gap_head_on_every_registered_model_and_rebuilt_from_spec(name):
    torch.manual_seed(0)
    c, h, w = model_info(name).input_size
    model = transfer(create_model(name), 3, (c, h, w))
    assert isinstance(model.classifier, nn.Sequential) and model.classifier.fc.out_features == 3
    x = _x(c, h, w)
    assert model(x).shape == (2, 3)
    record = model_spec(model)["transfer"][-1]
    assert record == {"source": None, "weights": None, "num_classes": 3, "input_size": [c, h, w], "head": "gap",
                      "freeze": "features", "head_module": "classifier"}
    # head only: the trainable parameters are the new linear layer's
    assert count_parameters(model, trainable_only=True) == model.classifier.fc.weight.numel() + 3
    _same_model(model, build_from_spec(model_spec(model)), x)


def test_last_head_keeps_the_rest_of_the_classifier():
    torch.manual_seed(0)
    model = create_model("fmnist-cnn")
    fc1 = model.classifier.fc1
    transfer(model, 2, (1, 28, 28), head="last", freeze="none")
    assert model.classifier.fc1 is fc1 and model.classifier.fc2.out_features == 2
    assert model_spec(model)["transfer"][-1]["head_module"] == "classifier.fc2"
    mlp = transfer(create_model("mlp"), 4, (1, 28, 28), head="last")
    assert mlp(_x(1, 28, 28)).shape == (2, 4)


@pytest.mark.parametrize("name,head,needle", [
    ("mlp", "gap", "not a feature map to pool; use head 'last'"),
    ("rf-demo", "last", "no Linear or Conv2d layer to replace"),
    ("fmnist-cnn", "wide", "head 'wide' is not valid; choose one of: gap, last"),
])
def test_impossible_heads_are_refused(name, head, needle):
    with pytest.raises(TransferError, match=needle):
        transfer(create_model(name), 2, model_info(name).input_size, head=head)


def test_dense_head_at_another_size_is_refused_with_the_size():
    with pytest.raises(TransferError, match="fmnist-cnn with its new head cannot take 1x32x32 images"):
        transfer(create_model("fmnist-cnn"), 2, (1, 32, 32), head="last")
    assert transfer(create_model("fmnist-cnn"), 2, (1, 32, 32))(_x(1, 32, 32)).shape == (2, 2)  # gap: any size


@pytest.mark.parametrize("arch,head_module,in_features", [
    ("tv:resnet18", "fc", 512),
    ("tv:mobilenet_v3_small", "classifier.3", 1024),  # the 576 -> 1024 pre-logit layer stays
    ("tv:squeezenet1_1", "classifier.1", None),  # a 1x1 conv
])
def test_torchvision_heads(arch, head_module, in_features):
    torch.manual_seed(0)
    model = create_model(arch)
    transfer(model, 5, (3, 64, 64))
    assert model_spec(model)["transfer"][-1]["head"] == "last"
    new = model.get_submodule(head_module)
    assert (new.out_features if in_features else new.out_channels) == 5
    if in_features:
        assert new.in_features == in_features
    x = _x(3, 64, 64)
    assert model(x).shape == (2, 5)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {f"{head_module}.weight", f"{head_module}.bias"}
    _same_model(model, build_from_spec(model_spec(model)), x)


def test_torchvision_refuses_gap_and_counts_its_own_blocks():
    with pytest.raises(TransferError, match=r"tv:resnet18 keeps its own pooling; head 'last' replaces .* \.fc"):
        transfer(create_model("tv:resnet18"), 2, (3, 32, 32), head="gap")
    model = transfer(create_model("tv:resnet18"), 2, (3, 32, 32), freeze=3)
    assert [n for n, _ in transfer_blocks(model, "fc")] == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]
    frozen = {n.split(".")[0] for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    assert isinstance(model.layer1[0].bn1, EvalBatchNorm2d) and type(model.layer2[0].bn1) is nn.BatchNorm2d


def test_one_channel_source_on_three_channel_images_sees_grey_the_same():
    torch.manual_seed(0)
    src = create_model("fmnist-gap").eval()
    grey = _x(1, 28, 28)
    with torch.no_grad():
        before = src.features(grey)
    model = transfer(src, 2, (3, 28, 28)).eval()
    assert model.features.block1.conv1.in_channels == 3
    with torch.no_grad():
        after = model.features(grey.expand(-1, 3, -1, -1))
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    assert not model.features.block1.conv1.weight.requires_grad


def test_three_channel_source_on_grey_images_sums_its_kernels():
    torch.manual_seed(0)
    model = create_model("tv:resnet18").eval()
    reference = copy.deepcopy(model)
    reference.fc = nn.Identity()
    grey = _x(1, 32, 32)
    with torch.no_grad():
        before = reference(grey.expand(-1, 3, -1, -1))
    transfer(model, 0, (1, 32, 32))  # no classes: the model outputs the pooled features its head would see
    assert model.conv1.weight.shape[1] == 1 and isinstance(model.fc, nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(grey), before, rtol=1e-4, atol=1e-5)


def test_other_channel_counts_are_refused():
    with pytest.raises(TransferError, match="takes 3-channel images and these have 4: only 1 <-> N"):
        transfer(create_model("tv:resnet18"), 2, (4, 32, 32))
    with pytest.raises(TransferError, match="mlp with its new head cannot take 3x28x28 images"):
        transfer(create_model("mlp"), 2, (3, 28, 28), head="last")


def test_frozen_batchnorm_stays_in_eval_mode_and_keeps_its_statistics():
    torch.manual_seed(0)
    model = transfer(create_model("fmnist-gap"), 2, (1, 28, 28))
    bns = [m for m in model.features.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(isinstance(m, EvalBatchNorm2d) for m in bns)
    state = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("features.")}
    model.train()
    assert model.training and model.classifier.training and not any(m.training for m in bns)
    model(_x(1, 28, 28, n=8) * 3 + 1).sum().backward()  # a training-mode pass with very different statistics
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert all(p.grad is None for p in model.features.parameters())
    # unfreezing gives plain BatchNorm back, training mode and all
    freeze(model, "none", "classifier")
    model.train()
    assert all(type(m) is nn.BatchNorm2d and m.training for m in bns)
    assert all(p.requires_grad for p in model.parameters())


def test_freeze_first_blocks_of_a_cnnlab_model():
    model = transfer(create_model("fmnist-gap"), 2, (1, 28, 28), freeze=1)
    assert [n for n, _ in transfer_blocks(model, "classifier")] == ["features.block1", "features.block2"]
    trainable = {n.rsplit(".", 2)[0] for n, p in model.named_parameters() if p.requires_grad}
    assert {t.split(".")[1] for t in trainable if t.startswith("features")} == {"block2"}
    assert isinstance(model.features.block1.bn1, EvalBatchNorm2d)
    assert type(model.features.block2.bn1) is nn.BatchNorm2d
    assert model.classifier.fc.weight.requires_grad


@pytest.mark.parametrize("how,needle", [
    (3, r"cannot freeze 3 blocks: fmnist-gap has 2 \(features.block1, features.block2\); --freeze takes 0-2"),
    ("head", "freeze 'head' is not valid"),
    (-1, "freeze -1 is not valid"),
])
def test_bad_freeze_is_refused(how, needle):
    with pytest.raises(TransferError, match=needle):
        transfer(create_model("fmnist-gap"), 2, (1, 28, 28), freeze=how)


def test_a_transferred_model_transfers_again_and_rebuilds():
    torch.manual_seed(0)
    first = transfer(create_model("fmnist-gap"), 2, (1, 28, 28), source="a")
    second = transfer(first, 3, (3, 28, 28), freeze="none", source="b")
    records = model_spec(second)["transfer"]
    assert [r["source"] for r in records] == ["a", "b"] and [r["num_classes"] for r in records] == [2, 3]
    assert all(p.requires_grad for p in second.parameters())
    assert not any(isinstance(m, EvalBatchNorm2d) for m in second.modules())
    _same_model(second, build_from_spec(model_spec(second)), _x(3, 28, 28))


def test_compressed_models_are_refused():
    model = create_model("fmnist-gap")
    model.cnnlab_spec = {**model.cnnlab_spec, "compression": {"method": "prune"}}
    with pytest.raises(TransferError, match="compressed model \\(prune\\); transfer from the float run"):
        transfer(model, 2, (1, 28, 28))
