"""Finding layers: the default conv layer is the trunk's last, and a conv's activation is found through
BatchNorm but not through an addition."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import create_model, model_info
from cnnlab.viz.layers import activation_after, conv_layer

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("name, last", [
    ("fmnist-cnn", "features.block2.conv2"),
    ("gap-cnn", "features.stage3.conv2.conv"),  # not the classifier's 1x1 class-map conv
    ("vgg-small", "features.stage3.conv2"),
])
def test_the_default_last_conv_is_the_trunks(name, last):
    assert conv_layer(create_model(name))[0] == last
    assert conv_layer(create_model(name), default="first")[0] == next(
        n for n, m in create_model(name).named_modules() if isinstance(m, torch.nn.Conv2d))


def _example(name):
    return torch.zeros(1, *model_info(name).input_size)


@pytest.mark.parametrize("name, conv, act", [
    ("fmnist-cnn", "features.block1.conv1", "features.block1.relu1"),  # conv -> ReLU(inplace) -> BN
    ("gap-cnn", "features.stage2.conv1.conv", "features.stage2.conv1.relu"),  # conv -> BN -> ReLU
    ("gap-cnn", "classifier.conv", None),  # conv -> pool: no activation
    ("resnet-small", "features.stage3.block2.conv2", None),  # conv -> BN -> + shortcut: not one unit's
    ("resnet-small", "features.stage3.block2.conv1", "features.stage3.block2.relu1"),
])
def test_activation_after_follows_batchnorm_not_additions(name, conv, act):
    model = create_model(name).eval()
    assert activation_after(model, conv, _example(name)) == act


def test_activation_after_leaves_no_hook_and_checks_the_name():
    model = create_model("fmnist-cnn").eval()
    activation_after(model, "features.block1.conv1", _example("fmnist-cnn"))
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(Exception, match="unknown layer 'nope'"):
        activation_after(model, "nope", _example("fmnist-cnn"))
