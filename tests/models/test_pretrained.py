"""``--pretrained``: torchvision's published weights through its weights API, from torch hub's cache (a file placed
there by the test; nothing is fetched from the network) or from a local HTTP server standing in for
download.pytorch.org; the hash check as torch.hub's; read without unpickling."""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace

import pytest
import torch

from cnnlab.models import WeightsError, build_from_spec, create_model
from cnnlab.models.info import ModelArgumentError
from cnnlab.models.pretrained import PretrainedUnavailable, fetch_weights, resolve_weights, weights_path
from tests.data.http_server import local_server


def fake_squeezenet_bytes(boxer: bool = True) -> bytes:
    """A state dict of torchvision's squeezenet1_1 (random, seeded) in torch.save's format; with ``boxer``, its
    classifier says "boxer" (ImageNet category 242) for every image."""
    import torchvision.models as tvm

    torch.manual_seed(0)
    state = tvm.squeezenet1_1().state_dict()
    if boxer:
        state["classifier.1.weight"].zero_()
        state["classifier.1.bias"].zero_()
        state["classifier.1.bias"][242] = 8.0
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch hub's cache under tmp_path (never ~/.cache/torch), no mirror."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_MIRROR", raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_the_weights_are_torchvisions(hub):
    import torch.hub
    import torchvision.models as tvm

    from cnnlab.models import pretrained

    w = resolve_weights("resnet18")
    assert w is tvm.get_weight("ResNet18_Weights.IMAGENET1K_V1") and w is resolve_weights("resnet18", "IMAGENET1K_V1")
    assert resolve_weights("resnet18", "ResNet18_Weights.IMAGENET1K_V1") is w
    assert w.url == "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert weights_path(w) == hub / "resnet18-f37072fd.pth"
    assert pretrained._HASH.pattern == torch.hub.HASH_REGEX.pattern
    with pytest.raises(ModelArgumentError, match="valid: DEFAULT, IMAGENET1K_V1"):
        resolve_weights("resnet18", "IMAGENET21K")
    with pytest.raises(ModelArgumentError, match="applies to torchvision models"):
        create_model("fmnist-cnn", pretrained="DEFAULT")


def test_a_cached_file_builds_the_model_and_its_spec_rebuilds_it(hub):
    path = weights_path(resolve_weights("squeezenet1_1"))
    path.parent.mkdir(parents=True)
    path.write_bytes(fake_squeezenet_bytes())
    model = create_model("tv:squeezenet1_1", pretrained="DEFAULT")
    assert model.cnnlab_spec["pretrained"] == "SqueezeNet1_1_Weights.IMAGENET1K_V1"
    assert torch.equal(model.state_dict()["classifier.1.bias"], torch.load(path, weights_only=True)["classifier.1.bias"])
    info = model.cnnlab_pretrained
    assert info.categories[242] == "boxer" and len(info.categories) == 1000
    assert info.describe()["crop_size"] == 224 and info.describe()["resize_size"] == 256
    again = build_from_spec(model.cnnlab_spec)  # the architecture, without the weights
    again.load_state_dict(model.state_dict())


def test_a_cached_file_of_another_architecture_is_a_weights_error(hub):
    path = weights_path(resolve_weights("resnet18"))
    path.parent.mkdir(parents=True)
    path.write_bytes(fake_squeezenet_bytes(boxer=False))
    with pytest.raises(WeightsError) as info:
        create_model("tv:resnet18", pretrained="DEFAULT")
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg and "does not match tv:resnet18" in msg and "Missing key(s)" in msg


def test_a_pickle_in_the_cache_is_never_unpickled(hub, tmp_path):
    import pickle

    path = weights_path(resolve_weights("squeezenet1_1"))
    path.parent.mkdir(parents=True)

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    buf = io.BytesIO()
    torch.save({"x": Evil()}, buf, pickle_module=pickle)
    path.write_bytes(buf.getvalue())
    with pytest.raises(WeightsError, match="refused for safety"):
        create_model("tv:squeezenet1_1", pretrained="DEFAULT")


def test_download_checks_the_hash_prefix_as_torch_hub(hub, monkeypatch):
    data = fake_squeezenet_bytes()
    prefix = hashlib.sha256(data).hexdigest()[:8]
    with local_server() as server:
        server.files[f"fake-{prefix}.pth"] = data
        fake = SimpleNamespace(url=server.url(f"fake-{prefix}.pth"))
        assert fetch_weights(fake, progress=False).read_bytes() == data
        assert (hub / f"fake-{prefix}.pth").is_file()
        # the real file name under a mirror, but not the real file: its hash differs from the name's
        server.files["squeezenet1_1-b8a52dc0.pth"] = data
        monkeypatch.setenv("CNNLAB_MIRROR", server.base)
        with pytest.raises(PretrainedUnavailable) as info:
            create_model("tv:squeezenet1_1", pretrained="DEFAULT", progress=False)
        msg = str(info.value)
        assert "\n" not in msg and "SqueezeNet1_1_Weights.IMAGENET1K_V1" in msg and "sha256" in msg
        assert "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth" in msg
        assert str(hub / "squeezenet1_1-b8a52dc0.pth") in msg
        assert not (hub / "squeezenet1_1-b8a52dc0.pth").exists()
        assert not (hub / "squeezenet1_1-b8a52dc0.pth.part").exists()
