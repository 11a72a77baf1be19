"""build_for_input / input_kwargs: the one rule that turns an input size into constructor arguments
(training, ``cnnlab summary/rf --input`` and the explorer all use it)."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import (ModelArgumentError, build_for_input, check_input_size, create_model, input_kwargs,
                           model_info)


def test_input_kwargs_only_what_the_factory_has():
    assert input_kwargs("fmnist-cnn", (3, 32, 32), num_classes=5) == {"in_channels": 3, "image_size": 32,
                                                                      "num_classes": 5}
    assert input_kwargs("fmnist-cnn", (1, 20, 28))["image_size"] == [20, 28]
    assert input_kwargs("fmnist-cnn", (1, 28, 28)).keys() == {"in_channels", "image_size"}
    assert input_kwargs("tv:resnet18", (3, 64, 64), num_classes=7) == {"num_classes": 7}  # no in_channels/image_size


def test_build_for_input_runs_on_that_input():
    m = build_for_input("fmnist-cnn", (3, 32, 32), num_classes=5)
    assert m.cnnlab_spec["kwargs"]["in_channels"] == 3 and m.cnnlab_spec["kwargs"]["image_size"] == 32
    assert m.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_explicit_arguments_win():
    m = build_for_input("fmnist-cnn", (1, 8, 8), image_size=28)
    assert m.cnnlab_spec["kwargs"]["image_size"] == 28


def test_default_is_the_registered_model():
    m = build_for_input("fmnist-cnn")
    assert m.cnnlab_spec == create_model("fmnist-cnn").cnnlab_spec
    assert model_info("fmnist-cnn").input_size == (1, 28, 28)


def test_a_model_without_in_channels_is_refused_for_other_channels():
    with pytest.raises(ModelArgumentError, match=r"tv:resnet18 takes 3-channel images .*input_size \[1, 64, 64\]"):
        build_for_input("tv:resnet18", (1, 64, 64), num_classes=10)


@pytest.mark.parametrize("bad", [(0, 28, 28), (28,), (1, 2, 3, 4, 5), (1, 28.0, 28), "1,28,28", (True, 28, 28)])
def test_check_input_size_names_the_parameter(bad):
    with pytest.raises(ModelArgumentError, match=r"input_size must be \(C, H, W\)"):
        check_input_size(bad)
