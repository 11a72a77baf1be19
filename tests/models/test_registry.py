"""Every registered model: forward, backward, save/load, the uniform face. Generated over the registry."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models import (
    UnknownModelError,
    build_from_spec,
    count_parameters,
    create_model,
    list_models,
    model_spec,
    register_model,
)
from cnnlab.train import load_weights, save_weights


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(4, 1, 28, 28, requires_grad=True)
    out = model(x)
    assert out.shape == (4, 10)
    out.logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_uniform_face(name):
    model = create_model(name)
    assert isinstance(model.features, torch.nn.Module)
    assert isinstance(model.classifier, torch.nn.Module)
    x = torch.randn(2, 1, 28, 28)
    model.eval()
    assert torch.equal(model.classifier(model.features(x)), model(x))


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = create_model(name)
    model.train()
    model(torch.randn(8, 1, 28, 28))  # move BatchNorm statistics off their initial values
    path = save_weights(model, tmp_path / "w.safetensors")
    clone = build_from_spec(model_spec(model))
    load_weights(clone, path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    model.eval(), clone.eval()
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), clone(x))


@pytest.mark.parametrize("name", list_models())
def test_other_shapes(name):
    model = create_model(name, in_channels=3, num_classes=5, image_size=32)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownModelError, match="valid: .*fmnist-cnn.*mlp"):
        create_model("resnet9000")


def test_unknown_argument_names_valid_ones():
    with pytest.raises(TypeError, match="unexpected argument.*colour.*valid:.*in_channels"):
        create_model("mlp", colour=True)


def test_spec_records_bound_arguments():
    m = create_model("mlp", hidden=(64,))
    spec = model_spec(m)
    assert spec["name"] == "mlp"
    assert spec["kwargs"]["hidden"] == [64] and spec["kwargs"]["num_classes"] == 10
    assert count_parameters(build_from_spec(spec)) == count_parameters(m) == 784 * 64 + 64 + 650


def test_register_rejects_duplicates():
    with pytest.raises(ValueError, match="already registered"):
        register_model(lambda: None, name="mlp")
