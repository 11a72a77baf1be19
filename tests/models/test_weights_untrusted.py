"""Weights files from anywhere: a pickle that would run code is refused in cnnlab's words (never PyTorch's
advice to load with weights_only=False, never its colour codes or warnings), and the size is checked first."""

from __future__ import annotations

import builtins
import os
import pickle
import warnings

import pytest
import torch
from safetensors.torch import save_file

from cnnlab.models import weights as wmod
from cnnlab._limits import format_bytes
from cnnlab.models.weights import (MAX_WEIGHTS_BYTES, MAX_WEIGHTS_ENV, WeightsError,
                                   read_state_dict)


@pytest.fixture(autouse=True)
def default_limit(monkeypatch):
    monkeypatch.delenv(MAX_WEIGHTS_ENV, raising=False)


class WritesFile:
    """Unpickling it would create ``path`` (through ``exec``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.exec, (f"open({self.path!r}, 'w').write('ran')",))


class RunsShell:
    """Unpickling it would create ``path`` (through ``os.system``)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class Plain:
    """A harmless class of this module: still not a tensor."""


def state() -> dict[str, torch.Tensor]:
    return {"fc.weight": torch.arange(6.0).view(2, 3), "fc.bias": torch.zeros(2)}


def refused(path) -> str:
    """The message ``read_state_dict(path)`` refuses with; no warning escapes while it is read."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WeightsError) as info:
            read_state_dict(path)
    assert caught == [], [str(w.message) for w in caught]
    message = str(info.value)
    assert "\n" not in message and "\x1b[" not in message and "weights_only=False" not in message, message
    assert "will likely succeed" not in message and "weights_only" not in message
    assert repr(str(path)) in message
    return message


def _save(obj, path, how: str) -> None:
    if how == "torch.save":  # a zip archive
        torch.save(obj, path)
    else:  # a bare pickle, as torch.save(..., _use_new_zipfile_serialization=False) and older tools wrote
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol={"pickle-2": 2, "pickle-5": 5}[how])


@pytest.mark.parametrize("suffix, how", [(".pth", "torch.save"), (".pt", "pickle-2"), (".bin", "pickle-5"),
                                         (".pt", "torch.save"), (".bin", "pickle-2")])
@pytest.mark.parametrize("payload", [WritesFile, RunsShell])
def test_a_payload_is_refused_and_never_runs(tmp_path, suffix, how, payload):
    marker = tmp_path / "ran.txt"
    path = tmp_path / f"w{suffix}"
    # a bare pickle holds no tensors here: pickle.dump writes them through torch.storage._load_from_bytes,
    # which the safe loader refuses (and would name) first
    _save({"state_dict": state() if how == "torch.save" else {}, "extra": payload(marker)}, path, how)
    message = refused(path)
    assert not marker.exists()  # nothing was executed
    assert message.endswith("refused for safety: save it with torch.save(model.state_dict()) or as .safetensors")
    if how == "pickle-5":  # PyTorch's safe loader stops at the first protocol-4 opcode, before any global
        assert "cannot be read as a plain state dict without unpickling arbitrary objects" in message
    else:
        name = "builtins.exec" if payload is WritesFile else f"{os.system.__module__}.system"
        assert (f"is not a plain state dict (it holds Python objects that would have to be unpickled: {name}); "
                in message)


def test_a_class_that_is_not_allowed_is_named_without_colour_codes(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"fc.weight": torch.ones(2), "x": Plain()}, path)  # PyTorch's message has \033[1m here
    message = refused(path)
    assert f"would have to be unpickled: {__name__}.Plain)" in message


def test_plain_state_dicts_read_as_before_and_no_warning_escapes(tmp_path):
    expected = state()
    paths = []
    for i, (suffix, obj) in enumerate([(".pth", expected), (".pt", {"state_dict": expected}),
                                       (".bin", {"model": expected, "epoch": 3})]):
        paths.append(tmp_path / f"w{i}{suffix}")
        torch.save(obj, paths[-1])
    save_file(expected, str(tmp_path / "w.safetensors"))
    paths.append(tmp_path / "w.safetensors")
    for path in paths:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = read_state_dict(path)
        assert caught == []
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got), path


def test_a_broken_pytorch_file_is_one_line(tmp_path):
    torch.save(state(), tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    message = refused(tmp_path / "cut.pth")
    assert "is not a readable PyTorch file (RuntimeError: PytorchStreamReader failed reading zip archive" in message
    assert "miniz" not in message  # PyTorch's second sentence is dropped
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 4)
    refused(tmp_path / "noise.pt")
    (tmp_path / "empty.bin").write_bytes(b"")
    assert "not a readable PyTorch file" in refused(tmp_path / "empty.bin")
    torch.save([torch.ones(1)], tmp_path / "list.pt")
    assert "does not hold a state dict" in refused(tmp_path / "list.pt")


def test_the_size_is_checked_before_the_file_is_read(tmp_path, monkeypatch):
    torch.save(state(), tmp_path / "w.pth")
    save_file(state(), str(tmp_path / "w.safetensors"))
    size = (tmp_path / "w.pth").stat().st_size

    def never(*args, **kwargs):
        raise AssertionError("the file was read")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr("safetensors.torch.load_file", never)
    monkeypatch.setenv(MAX_WEIGHTS_ENV, str(size - 1))
    message = refused(tmp_path / "w.pth")
    assert message == (f"weights file {str(tmp_path / 'w.pth')!r} is {format_bytes(size)}, over the "
                       f"{format_bytes(size - 1)} limit (${MAX_WEIGHTS_ENV})")
    monkeypatch.setenv(MAX_WEIGHTS_ENV, "10")
    assert "over the 10 bytes limit" in refused(tmp_path / "w.safetensors")
    monkeypatch.setenv(MAX_WEIGHTS_ENV, "a lot")
    with pytest.raises(WeightsError, match=rf"\${MAX_WEIGHTS_ENV}='a lot': give a positive number of bytes"):
        read_state_dict(tmp_path / "w.pth")
    monkeypatch.undo()
    assert read_state_dict(tmp_path / "w.pth").keys() == state().keys()  # under the default limit
    assert MAX_WEIGHTS_BYTES == 4 << 30 and wmod.MAX_WEIGHTS_ENV == "CNNLAB_MAX_WEIGHTS_BYTES"
