"""The classic architecture patterns: VGG, ResNet, Inception, global average pooling."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cnnlab.models import (
    BasicBlock,
    GapCNN,
    InceptionModule,
    InceptionSmall,
    ResNetSmall,
    VGGSmall,
    count_parameters,
    create_model,
    model_info,
)

CLASSIC = ["vgg-small", "resnet-small", "inception-small", "gap-cnn"]


@pytest.mark.parametrize("name", CLASSIC)
def test_output_shapes(name):
    torch.manual_seed(0)
    assert model_info(name).input_size == (1, 28, 28) and model_info(name).num_classes == 10
    model = create_model(name).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    feats = model.features(torch.randn(2, 1, 28, 28))
    assert feats.dim() == 4  # the trunk gives a feature map (Grad-CAM and friends attach there)
    rgb = create_model(name, in_channels=3, num_classes=7, image_size=32).eval()
    assert rgb(torch.randn(2, 3, 32, 32)).shape == (2, 7)


@pytest.mark.parametrize("cls, paper", [(VGGSmall, "Simonyan"), (ResNetSmall, "He et al. 2015"),
                                        (InceptionSmall, "Szegedy et al. 2015"), (BasicBlock, "He et al. 2015"),
                                        (InceptionModule, "figure 2b"), (GapCNN, "Network in network")])
def test_docstrings_cite_the_paper(cls, paper):
    assert paper in cls.__doc__


def test_vgg_small_stages():
    m = create_model("vgg-small", widths=(8, 16))
    assert [n for n, _ in m.features.named_children()] == ["stage1", "stage2"]
    kinds = [type(x).__name__ for x in m.features.stage1]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert m.classifier.fc1.in_features == 16 * 7 * 7
    assert m.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_basic_block_identity_shortcut_when_shapes_match():
    block = BasicBlock(16, 16).eval()
    assert isinstance(block.shortcut, nn.Identity)
    x = torch.randn(2, 16, 8, 8)
    assert block(x).shape == x.shape
    nn.init.zeros_(block.conv2.weight)  # F(x) = bn2(0) = 0 in eval mode: the block is relu(x)
    assert torch.allclose(block(x), torch.relu(x))


@pytest.mark.parametrize("stride, cin, cout", [(2, 16, 32), (2, 16, 16), (1, 16, 32)])
def test_basic_block_projection_shortcut_when_shapes_change(stride, cin, cout):
    block = BasicBlock(cin, cout, stride=stride).eval()
    assert isinstance(block.shortcut, nn.Sequential)
    conv, bn = block.shortcut.conv, block.shortcut.bn
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.stride == (stride, stride)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == cout
    assert block(torch.randn(2, cin, 8, 8)).shape == (2, cout, 8 // stride, 8 // stride)


def test_resnet_small_layout():
    m = create_model("resnet-small")
    names = dict(m.named_modules())
    assert "features.stage1.block1.conv1" in names and "features.stage3.block2.bn2" in names
    assert isinstance(m.features.stage1.block1.shortcut, nn.Identity)
    for stage in (m.features.stage2, m.features.stage3):  # stride 2 at stages 2 and 3
        assert stage.block1.conv1.stride == (2, 2) and isinstance(stage.block1.shortcut, nn.Sequential)
        assert isinstance(stage.block2.shortcut, nn.Identity)
    assert m.features(torch.zeros(1, 1, 28, 28)).shape == (1, 64, 7, 7)
    assert isinstance(m.classifier.pool, nn.AdaptiveAvgPool2d)


def test_resnet_small_depth_is_6n_plus_2():
    m = create_model("resnet-small", blocks_per_stage=3)
    weighted = [x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear))
                and not (isinstance(x, nn.Conv2d) and x.kernel_size == (1, 1))]  # projections don't count
    assert len(weighted) == 6 * 3 + 2  # the paper's ResNet-20
    assert count_parameters(m) == 272_186  # "0.27M" in the paper's table 6


def test_inception_module_concatenates_its_branches():
    torch.manual_seed(0)
    module = InceptionModule(8, ch1x1=4, ch3x3red=3, ch3x3=6, ch5x5red=2, ch5x5=3, pool_proj=5).eval()
    assert module.out_channels == 4 + 6 + 3 + 5
    x = torch.randn(2, 8, 9, 11)
    branches = [module.branch1(x), module.branch2(x), module.branch3(x), module.branch4(x)]
    assert [b.shape for b in branches] == [(2, c, 9, 11) for c in (4, 6, 3, 5)]  # each keeps H, W
    out = module(x)
    assert out.shape == (2, 18, 9, 11)
    assert torch.equal(out, torch.cat(branches, 1))
    assert module.branch2.conv.conv.kernel_size == (3, 3) and module.branch3.conv.conv.kernel_size == (5, 5)
    pool = module.branch4.pool
    assert isinstance(pool, nn.MaxPool2d) and (pool.kernel_size, pool.stride, pool.padding) == (3, 1, 1)


def test_inception_small_layout():
    m = create_model("inception-small")
    modules = [x for x in m.features if isinstance(x, InceptionModule)]
    assert len(modules) == 3
    assert [type(x).__name__ for x in m.features].count("MaxPool2d") == 2
    assert m.features(torch.zeros(1, 1, 28, 28)).shape == (1, modules[-1].out_channels, 7, 7)
    assert isinstance(m.classifier.pool, nn.AdaptiveAvgPool2d)


def test_gap_cnn_has_fewer_parameters_than_a_flatten_dense_head():
    gap, dense = create_model("gap-cnn"), create_model("gap-cnn", head="flatten")
    assert count_parameters(gap.features) == count_parameters(dense.features)  # same trunk
    assert count_parameters(gap) == 288_170 and count_parameters(dense) == 349_610  # as the docstring says
    assert count_parameters(gap.classifier) == 128 * 10 + 10
    assert count_parameters(dense.classifier) == 128 * 7 * 7 * 10 + 10
    # the pooled head does not grow with the image; the flattened one does
    assert count_parameters(create_model("gap-cnn", image_size=32)) == count_parameters(gap)
    assert count_parameters(create_model("gap-cnn", head="flatten", image_size=32)) > count_parameters(dense)
    assert isinstance(gap.classifier.pool, nn.AdaptiveAvgPool2d)
    x = torch.randn(2, 1, 28, 28)
    assert dense.eval()(x).shape == gap.eval()(x).shape == (2, 10)
    with pytest.raises(ValueError, match="head"):
        create_model("gap-cnn", head="max")
