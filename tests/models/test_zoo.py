"""torchvision models by name (``tv:<name>``) and loading local weights files."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from cnnlab.models import (
    UnknownModelError,
    WeightsError,
    build_from_spec,
    count_parameters,
    create_model,
    list_models,
    model_info,
    model_spec,
)

X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))  # small input: fast


@pytest.fixture(scope="module")
def resnet18():
    """A tv:resnet18 with 7 classes, BatchNorm statistics moved off their initial values, in eval mode."""
    torch.manual_seed(0)
    m = create_model("tv:resnet18", num_classes=7)
    with torch.no_grad():
        m.train()(torch.randn(2, 3, 32, 32))
    return m.eval()


def test_tv_resnet18_builds_with_spec(resnet18):
    assert resnet18(X).shape == (2, 7)
    spec = model_spec(resnet18)
    assert spec == {"name": "tv:resnet18", "kwargs": {"num_classes": 7}}
    clone = build_from_spec(spec)
    assert type(clone) is type(resnet18) and clone.fc.out_features == 7
    assert count_parameters(clone) == count_parameters(resnet18)
    assert {k: v.shape for k, v in clone.state_dict().items()} == {k: v.shape for k, v in resnet18.state_dict().items()}


def test_zoo_names():
    names = list_models(zoo=True)
    assert {"tv:resnet18", "tv:vgg16", "tv:mobilenet_v2"} <= set(names)
    assert len([n for n in names if n.startswith("tv:")]) == 80
    assert set(list_models()) <= set(names)  # cnnlab's own too
    assert not any(n.startswith("tv:") for n in list_models())


def test_zoo_info():
    info = model_info("tv:inception_v3")
    assert info.input_size == (3, 299, 299) and info.num_classes == 1000 and info.source == "torchvision"
    assert model_info("tv:resnet18").input_size == (3, 224, 224)


def test_unknown_tv_name_lists_valid_ones():
    with pytest.raises(UnknownModelError, match="unknown torchvision model 'resnet9000'; valid: .*resnet18"):
        create_model("tv:resnet9000")
    with pytest.raises(UnknownModelError, match="valid: .*vgg16"):
        model_info("tv:resnet9000")


def test_unknown_tv_argument_is_a_type_error():
    with pytest.raises(TypeError, match="tv:resnet18"):
        create_model("tv:resnet18", colour=True)


def _state(model):
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["safetensors", "pth", "nested"])
def test_weights_file_gives_identical_outputs(resnet18, tmp_path, fmt):
    sd = _state(resnet18)
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "w.pth"
        torch.save(sd if fmt == "pth" else {"state_dict": sd, "epoch": 3}, path)
    loaded = create_model("tv:resnet18", num_classes=7, weights=str(path)).eval()
    own = loaded.state_dict()
    assert own.keys() == sd.keys() and all(torch.equal(own[k], sd[k]) for k in sd)  # buffers too
    with torch.no_grad():
        x = X[:, :, :32, :32]
        assert torch.equal(loaded(x), resnet18(x))
    assert model_spec(loaded)["kwargs"] == {"num_classes": 7}


def test_weights_for_other_num_classes_names_the_keys(resnet18, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_state(resnet18), str(path))
    with pytest.raises(WeightsError, match=r"shape mismatch: fc\.weight \(7, 512\) vs model \(5, 512\)"):
        create_model("tv:resnet18", num_classes=5, weights=path)


def test_weights_with_an_extra_key_names_it(resnet18, tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({**_state(resnet18), "extra.weight": torch.zeros(3)}, str(path))
    with pytest.raises(WeightsError, match=r"unexpected keys: extra\.weight"):
        create_model("tv:resnet18", num_classes=7, weights=path)


def test_weights_with_a_missing_key_names_it(resnet18, tmp_path):
    sd = _state(resnet18)
    del sd["fc.bias"]
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"missing keys: fc\.bias") as e:
        create_model("tv:resnet18", num_classes=7, weights=path)
    assert "unexpected" not in str(e.value)


_UNPICKLED = []


def _side_effect():
    _UNPICKLED.append(True)
    return "ran"


class Payload:
    """An object that runs code when unpickled; weights_only=True must refuse it."""

    def __reduce__(self):
        return (_side_effect, ())


def test_pth_needing_pickle_is_refused(resnet18, tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"state_dict": _state(resnet18), "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="not a plain state dict.*refused for safety"):
        create_model("tv:resnet18", num_classes=7, weights=path)
    assert _UNPICKLED == []  # nothing was executed


def test_missing_weights_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        create_model("tv:resnet18", num_classes=7, weights=tmp_path / "nope.safetensors")
