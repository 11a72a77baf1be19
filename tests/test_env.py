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
