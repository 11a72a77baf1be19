"""Every registered model: forward, backward, save/load, the uniform face. Generated over the registry,
each at the input size its ``model_info`` records."""

from __future__ import annotations

import inspect

import pytest
import torch

from cnnlab.models import (
    UnknownModelError,
    build_from_spec,
    count_parameters,
    create_model,
    list_models,
    model_entrypoint,
    model_info,
    model_spec,
    register_model,
)
from cnnlab.train import load_weights, save_weights


def _batch(name: str, small: int = 4) -> torch.Tensor:
    """A random batch at the model's registered input size: ``small`` images, 2 for big inputs."""
    c, h, w = model_info(name).input_size
    return torch.randn(small if h * w <= 64 * 64 else 2, c, h, w)


def _check_output(name: str, out: torch.Tensor, n: int, num_classes: int | None) -> None:
    if num_classes is None:  # a feature map, not class scores
        assert out.dim() == 4 and out.shape[0] == n, (name, tuple(out.shape))
    else:
        assert out.shape == (n, num_classes), (name, tuple(out.shape))


@pytest.mark.parametrize("name", list_models())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = _batch(name).requires_grad_()
    out = model(x)
    _check_output(name, out, x.shape[0], model_info(name).num_classes)
    out.flatten(1).logsumexp(1).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
def test_uniform_face(name):
    model = create_model(name)
    assert isinstance(model.features, torch.nn.Module)
    assert isinstance(model.classifier, torch.nn.Module)
    x = _batch(name, small=2)
    model.eval()
    assert torch.equal(model.classifier(model.features(x)), model(x))


@pytest.mark.parametrize("name", list_models())
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(1)
    model = create_model(name)
    model.train()
    model(_batch(name, small=8))  # move BatchNorm statistics off their initial values
    path = save_weights(model, tmp_path / "w.safetensors")
    clone = build_from_spec(model_spec(model))
    load_weights(clone, path)
    for (k, a), (k2, b) in zip(model.state_dict().items(), clone.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    model.eval(), clone.eval()
    x = _batch(name, small=3)
    assert torch.equal(model(x), clone(x))


@pytest.mark.parametrize("name", list_models())
def test_other_shapes(name):
    """3 channels, 5 classes, 32x32 -- as far as the factory takes those arguments."""
    params = inspect.signature(model_entrypoint(name)).parameters
    assert "in_channels" in params  # every cnnlab model takes it
    kwargs = {k: v for k, v in {"in_channels": 3, "num_classes": 5, "image_size": 32}.items() if k in params}
    info = model_info(name)
    h, w = (32, 32) if "image_size" in kwargs else info.input_size[1:]
    model = create_model(name, **kwargs).eval()
    _check_output(name, model(torch.randn(2, 3, h, w)), 2,
                  None if info.num_classes is None else kwargs.get("num_classes", info.num_classes))


def test_model_info_of_registered_models():
    assert model_info("fmnist-cnn").input_size == (1, 28, 28) and model_info("fmnist-cnn").num_classes == 10
    assert model_info("catsdogs-cnn").input_size == (3, 150, 150) and model_info("catsdogs-cnn").num_classes == 1
    assert model_info("rf-demo").num_classes is None
    assert {model_info(n).source for n in list_models()} == {"cnnlab"}
    with pytest.raises(UnknownModelError):
        model_info("resnet9000")


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


@pytest.mark.parametrize("name", [*list_models(), "tv:resnet18"])
def test_factories_take_keyword_arguments_only(name):
    """A factory is called with names (``create_model(name, **kwargs)``, a run's ``model.json``), as
    torchvision's builders are: no argument of any factory may be given by position."""
    params = inspect.signature(model_entrypoint(name)).parameters.values()
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params), name
