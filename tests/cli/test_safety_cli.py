"""Nothing a user owns is lost: --overwrite removes only cnnlab's files, one writer per output, a failed or
killed run leaves nothing that blocks the next one, and what a message says exists does exist."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cnnlab._outdir import MARKER, RUN, claim_output
from tests.cli.helpers import one_line_error, run_cli

QUICK = ["--model", "mlp", "--model-arg", "hidden=[32]", "--subset", "256", "--val-size", "100", "--epochs", "1",
         "--batch-size", "64", "--device", "cpu", "--no-progress", "--no-augment"]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(fake_fmnist_dir, tmp_path_factory) -> Path:
    from cnnlab.cli import main

    out = tmp_path_factory.mktemp("safety") / "run"
    assert main(["train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(out)]) == 0
    return out


def test_overwrite_never_deletes_a_folder_that_merely_holds_a_config_json(capsys, fake_fmnist_dir, tmp_path):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text("{}")
    (proj / "src" / "important.py").write_text("x")
    before = _tree(proj)
    code, _, err = run_cli(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(proj),
                           "--overwrite")
    assert code == 2
    one_line_error(err, str(proj), "cnnlab did not write", "src/")
    assert _tree(proj) == before


def test_overwrite_of_a_run_removes_only_cnnlabs_files(capsys, run_dir, fake_fmnist_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "notes.txt").write_text("my notes")
    code, _, err = run_cli(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(run),
                           "--overwrite", "--seed", "3")
    assert code == 2
    one_line_error(err, "notes.txt", "refusing to overwrite")
    assert (run / "notes.txt").read_text() == "my notes" and (run / "metrics.json").is_file()
    (run / "notes.txt").unlink()
    code, _, err = run_cli(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(run),
                           "--overwrite", "--seed", "3")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["seed"] == 3


def test_compress_never_deletes_the_folder_holding_its_input(capsys, run_dir, tmp_path):
    nest = tmp_path / "nest"
    shutil.copytree(run_dir, nest / "myrun")
    (nest / "thesis.txt").write_text("t")
    before = _tree(nest)
    code, _, err = run_cli(capsys, "compress", str(nest / "myrun"), "--method", "cluster", "--bits", "4",
                           "--finetune-epochs", "0", "--no-latency", "--out", str(nest), "--overwrite")
    assert code == 2
    one_line_error(err, f"--out {nest} holds the input")
    assert _tree(nest) == before


def test_compress_into_a_file_fails_before_any_work(capsys, run_dir, tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("mine")
    from cnnlab.train import TrainConfig

    def never(*a, **k):
        raise AssertionError("loaded the data (the work began) before checking --out")

    monkeypatch.setattr(TrainConfig, "load_data", never)
    code, _, err = run_cli(capsys, "compress", str(run_dir), "--method", "cluster", "--no-latency", "--out",
                           str(target), "--overwrite")
    assert code == 2
    one_line_error(err, str(target), "not a folder")
    assert target.read_text() == "mine"


def test_a_second_writer_is_refused_naming_the_first(capsys, fake_fmnist_dir, tmp_path):
    from cnnlab._outdir import EXPERIMENT

    run, exp = tmp_path / "x", tmp_path / "exp"
    with claim_output(run, RUN, command="cnnlab train --out x --model mlp"), \
            claim_output(exp, EXPERIMENT, command="cnnlab experiment fmnist --out exp"):
        for argv, holder in (
                (["train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(run), "--overwrite"],
                 "`cnnlab train --out x --model mlp`"),
                (["experiment", "fmnist", "--out", str(exp), "--subset", "256"], "`cnnlab experiment fmnist --out exp`")):
            code, _, err = run_cli(capsys, *argv)
            assert code == 2
            one_line_error(err, "in use by another cnnlab process", holder)
    assert sorted(p.name for p in run.iterdir()) == [".cnnlab", ".cnnlab.lock"]
    assert sorted(p.name for p in exp.iterdir()) == [".cnnlab", ".cnnlab.lock"]


def test_a_run_stopped_before_its_first_checkpoint_is_no_dead_end(capsys, fake_fmnist_dir, tmp_path):
    out = tmp_path / "run"
    claim_output(out, RUN).release()  # what a SIGKILL during data loading leaves: settings, no checkpoint
    (out / "config.json").write_text(json.dumps({"train": {"model": "mlp"}}))
    (out / "model.json").write_text(json.dumps({"name": "mlp", "kwargs": {}}))
    (out / "checkpoint").mkdir()
    orphan = out / "checkpoint" / ".last.safetensors.k1ll3d.tmp"  # a checkpoint write cut short
    orphan.write_bytes(b"\0" * 4096)
    code, _, err = run_cli(capsys, "train", "--resume", str(out))
    assert code == 2
    one_line_error(err, "stopped before its first checkpoint", "nothing to resume", "--overwrite")
    code, out_text, err = run_cli(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(out))
    assert code == 0, err
    assert "stopped before its first checkpoint" in out_text and "starting it again" in out_text
    assert (out / "metrics.json").is_file() and not orphan.exists()


def test_divergence_before_any_checkpoint_says_so_and_leaves_nothing(capsys, fake_fmnist_dir, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(out),
                           "--lr", "1e30", "--optimizer", "sgd")
    assert code == 1
    line = one_line_error(err, "training stopped", "No checkpoint had been written yet", "try a lower --lr")
    assert "last.safetensors" not in line
    assert not out.exists()


@pytest.mark.parametrize("argv,needles", [
    (["--lr", "inf"], ["--lr", "finite", "'inf'"]),
    (["--lr", "nan"], ["--lr", "'nan'"]),
    (["--weight-decay", "nan"], ["--weight-decay", "finite"]),
    (["--momentum=-inf"], ["--momentum", "finite"]),
])
def test_non_finite_numbers_are_refused(capsys, argv, needles):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "train", *argv)
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, *needles)


def test_resume_refuses_the_settings_it_would_ignore(capsys, run_dir):
    code, _, err = run_cli(capsys, "train", "--resume", str(run_dir), "--model", "fmnist-cnn", "--lr", "0.1",
                           "--batch-size", "32", "--out", "elsewhere")
    assert code == 2
    one_line_error(err, "own settings", "--batch-size", "--lr", "--model", "--out")
    code, out, _ = run_cli(capsys, "train", "--resume", str(run_dir), "--device", "cpu", "--no-progress")
    assert code == 0 and "already complete" in out


def test_a_subset_larger_than_the_data_is_said(capsys, fake_fmnist_dir, tmp_path):
    argv = [a if a != "256" else "99999999" for a in QUICK]
    code, out, _ = run_cli(capsys, "train", *argv, "--data-dir", str(fake_fmnist_dir), "--out", str(tmp_path / "r"))
    assert code == 0
    assert "--subset 99999999 is more than the 1,900 training images" in out


def test_nan_weights_are_an_error_not_nan_percent(capsys, run_dir, tmp_path, fake_fmnist_dir):
    run = tmp_path / "nan"
    shutil.copytree(run_dir, run)
    w = load_file(str(run / "model.safetensors"))
    w = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in w.items()}
    save_file(w, str(run / "model.safetensors"))
    code, out, err = run_cli(capsys, "eval", str(run), "--data-dir", str(fake_fmnist_dir))
    assert code == 1 and "nan%" not in out
    one_line_error(err, "outputs are not finite", "of 400 test images")
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28), 90).save(img)
    code, out, err = run_cli(capsys, "predict", str(run), str(img))
    assert code == 1 and "nan" not in out
    one_line_error(err, "not finite")


def test_the_marker_names_the_command_that_wrote_the_run(run_dir):
    marker = json.loads((run_dir / MARKER).read_text())
    assert marker["kind"] == "run" and "cnnlab" in marker
