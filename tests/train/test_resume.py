"""A run killed at any moment (SIGKILL mid-epoch) or stopped with Ctrl-C or SIGTERM resumes and ends with
the same weights as an uninterrupted run (same seed, CPU)."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from tests.helpers import cli_env

ARGS = ["--model", "fmnist-cnn", "--subset", "768", "--val-size", "200", "--epochs", "3", "--batch-size", "64",
        "--device", "cpu", "--precision", "fp32", "--checkpoint-interval", "0.01", "--no-progress"]


def _train(data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "cnnlab", "train", *ARGS, "--data-dir", str(data_dir), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300)


def _position(ckpt: Path) -> tuple[int, int] | None:
    try:
        with safe_open(str(ckpt), framework="pt") as f:
            import json

            s = json.loads(f.metadata()["state"])
            return s["epoch"], s["step"]
    except Exception:
        return None


@pytest.fixture(scope="module")
def reference(fake_fmnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    r = _train(fake_fmnist_dir, out)
    assert r.returncode == 0, r.stderr
    return out


def _history(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "history.csv")))


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["SIGKILL", "Ctrl-C", "SIGTERM"])
def test_interrupted_run_resumes_to_identical_weights(sig, reference, fake_fmnist_dir, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cnnlab", "train", *ARGS, "--data-dir", str(fake_fmnist_dir), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())
    ckpt = out / "checkpoint" / "last.safetensors"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait until it is in the middle of the second epoch
            pos = _position(ckpt) if ckpt.exists() else None
            if pos is not None and pos[0] == 1 and pos[1] >= 2:
                break
            assert proc.poll() is None, f"finished before it could be interrupted: {proc.stderr.read()}"
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if sig in (signal.SIGINT, signal.SIGTERM):  # SIGTERM (a scheduler, `kill`) is handled like Ctrl-C
        assert proc.returncode == 128 + sig, err
        assert f"Resume with: cnnlab train --resume {out}" in err
        assert "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
    assert not (out / "metrics.json").exists()
    epoch, step = _position(ckpt)
    assert (epoch, step) >= (1, 2) and epoch < 3

    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(out), "--no-progress"],
                       capture_output=True, text=True, env=cli_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    a, b = load_file(str(reference / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    for ra, rb in zip(_history(reference), _history(out), strict=True):
        for key in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-6), key


def test_resume_of_a_finished_run_changes_nothing(reference):
    before = (reference / "model.safetensors").read_bytes()
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--resume", str(reference), "--no-progress"],
                       capture_output=True, text=True, env=cli_env(), timeout=300)
    assert r.returncode == 0 and "already complete" in r.stdout
    assert (reference / "model.safetensors").read_bytes() == before
