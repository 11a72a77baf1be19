"""Every result records the machine and the code's revision."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cnnlab._env as env
from cnnlab.train import TrainConfig, fit

ROOT = Path(__file__).resolve().parents[1]


def test_the_revision_is_git_describe_in_a_checkout_and_a_source_hash_elsewhere(tmp_path, monkeypatch):
    env.code_revision.cache_clear()
    want = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=12"],
                          capture_output=True, text=True).stdout.strip()
    assert env.code_revision() == want
    copy = tmp_path / "site-packages" / "cnnlab"
    shutil.copytree(ROOT / "src" / "cnnlab", copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(env, "_PACKAGE", copy)
    env.code_revision.cache_clear()
    first = env.code_revision()
    assert re.fullmatch(r"cnnlab \S+ src:[0-9a-f]{12}", first)
    (copy / "errors.py").write_text((copy / "errors.py").read_text() + "\n# changed\n")
    env.code_revision.cache_clear()
    assert env.code_revision() != first  # any change to the code changes the revision
    env.code_revision.cache_clear()


def test_a_run_records_the_machine_and_the_revision(tiny_data, tmp_path):
    fit(TrainConfig(model="mlp", model_kwargs={"hidden": [8]}, epochs=1, batch_size=64, device="cpu",
                    precision="fp32"), tmp_path / "run", data=tiny_data, progress=False, log=lambda s: None)
    machine = json.loads((tmp_path / "run" / "config.json").read_text())["machine"]
    assert machine["code_revision"] == env.code_revision()
    assert set(machine["cpu_flags"]) == {"avx512f", "avx512_bf16", "amx_bf16", "amx_int8"}
    assert isinstance(machine["onednn_bf16"], bool) and machine["cpu"]


def _fake_cpu(monkeypatch, machine: str, flags: str, onednn: bool = True) -> None:
    monkeypatch.setattr(env.platform, "machine", lambda: machine)
    monkeypatch.setattr(env, "_cpuinfo", lambda: {"model name": "a faked CPU", "flags": flags})
    monkeypatch.setattr(env.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)


def test_auto_precision_is_fp32_where_bf16_would_be_emulated(monkeypatch):
    """On an AVX2-only laptop (or AVX-512 without its BF16 instructions, where oneDNN would emulate bf16)
    ``--precision auto`` trains in fp32; with AVX512-BF16 or AMX it is bf16 (pytorch issue 183815: emulated
    bf16 convolutions are 25-90x slower)."""
    import torch

    from cnnlab.train import resolve_precision

    cpu = torch.device("cpu")
    for flags, onednn, want in (("fpu sse avx avx2 fma", True, "fp32"),
                                ("avx2 avx512f avx512bw avx512vl avx512dq", True, "fp32"),
                                ("avx2 avx512f avx512_bf16", True, "bf16"),
                                ("avx2 avx512f amx_bf16 amx_tile", True, "bf16"),
                                ("avx2 avx512f avx512_bf16", False, "fp32")):
        _fake_cpu(monkeypatch, "x86_64", flags, onednn)
        assert env.cpu_has_bf16() is (want == "bf16"), flags
        assert resolve_precision("auto", cpu) == want, flags
        assert resolve_precision("bf16", cpu) == "bf16"  # asked for explicitly: given
    _fake_cpu(monkeypatch, "aarch64", "", True)  # PyTorch's own check asks for the ARM bf16 instructions there
    assert resolve_precision("auto", cpu) == "bf16"
