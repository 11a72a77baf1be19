import pytest
import torch

from cnnlab.models import create_model
from cnnlab.train import CheckpointError, load_checkpoint, load_weights, save_checkpoint, save_weights


def _trained(opt_name="adamw"):
    torch.manual_seed(0)
    m = create_model("fmnist-cnn")
    opt = {"adamw": torch.optim.AdamW, "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)}[opt_name](
        m.parameters())
    for _ in range(2):
        loss = m(torch.randn(4, 1, 28, 28)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return m, opt


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_checkpoint_round_trip_restores_model_optimizer_and_state(tmp_path, opt_name):
    m, opt = _trained(opt_name)
    path = save_checkpoint(tmp_path / "c" / "last.safetensors", m, opt, {"epoch": 3, "step": 7, "history": [{"a": 1}]})
    m2 = create_model("fmnist-cnn")
    opt2 = type(opt)(m2.parameters(), **({"lr": 0.1, "momentum": 0.9} if opt_name == "sgd" else {}))
    state = load_checkpoint(path, m2, opt2)
    assert state == {"epoch": 3, "step": 7, "history": [{"a": 1}]}
    for a, b in zip(m.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    s1, s2 = opt.state_dict(), opt2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    for pid in s1["state"]:
        for k, v in s1["state"][pid].items():
            assert torch.equal(torch.as_tensor(v), torch.as_tensor(s2["state"][pid][k])), (pid, k)


def test_corrupt_files_raise_checkpoint_error(tmp_path):
    m, opt = _trained()
    good = save_checkpoint(tmp_path / "last.safetensors", m, opt, {})
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="bad.safetensors: corrupt"):
        load_checkpoint(bad, create_model("fmnist-cnn"))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_weights(create_model("fmnist-cnn"), bad)
    with pytest.raises(CheckpointError, match="no such file"):
        load_weights(create_model("fmnist-cnn"), tmp_path / "missing.safetensors")


def test_weights_of_another_model_are_refused_with_the_keys(tmp_path):
    path = save_weights(create_model("mlp"), tmp_path / "mlp.safetensors")
    with pytest.raises(CheckpointError, match="does not fit FashionCNN.*Missing key"):
        load_weights(create_model("fmnist-cnn"), path)


def test_plain_weights_are_not_a_checkpoint(tmp_path):
    path = save_weights(create_model("mlp"), tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not a cnnlab checkpoint"):
        load_checkpoint(path, create_model("mlp"))


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    m, opt = _trained()
    path = save_weights(m, tmp_path / "w.safetensors")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("cnnlab.train.checkpoint.save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_weights(create_model("fmnist-cnn"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temp file left behind
