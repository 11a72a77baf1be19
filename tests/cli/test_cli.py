"""The command line: bad input gets one line naming the value and what is valid, exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from cnnlab.cli import main
from tests.cli.helpers import run_cli as _run, one_line_error as _one_line_error
from tests.helpers import cli_env, make_images

QUICK = ["--model", "mlp", "--model-arg", "hidden=[32]", "--subset", "256", "--val-size", "100",
         "--epochs", "1", "--batch-size", "64", "--device", "cpu", "--no-progress", "--no-augment"]




@pytest.mark.parametrize("argv,needles", [
    (["train", "--model", "nope"], ["unknown model 'nope'", "fmnist-cnn", "mlp"]),
    (["train", "--dataset", "cifar-1000"], ["unknown dataset 'cifar-1000'", "fashion-mnist"]),
    (["train", "--optimizer", "rmsprop"], ["--optimizer", "rmsprop", "sgd", "adam", "adamw"]),
    (["train", "--schedule", "linear"], ["--schedule", "onecycle", "cosine", "step", "constant"]),
    (["train", "--epochs", "0"], ["--epochs", "positive", "'0'"]),
    (["train", "--batch-size", "-8"], ["--batch-size", "positive", "'-8'"]),
    (["train", "--lr", "0"], ["--lr", "positive", "'0'"]),
    (["train", "--lr", "abc"], ["--lr", "'abc'"]),
    (["train", "--device", "tpu"], ["--device", "'tpu'", "cpu", "cuda"]),
    (["train", "--model", "mlp", "--model-arg", "colour=1"], ["colour", "valid:", "hidden"]),
    (["frobnicate"], ["invalid choice", "train"]),
])
def test_bad_input_exits_2_with_one_line(capsys, fake_fmnist_dir, argv, needles):
    argv = argv + ["--data-dir", str(fake_fmnist_dir), "--val-size", "100"] if argv[0] == "train" else argv
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(argv))
    assert e.value.code == 2
    _one_line_error(capsys.readouterr().err, *needles)


def test_bad_split_size_is_a_clear_error(capsys, fake_fmnist_dir, tmp_path):
    code, _, err = _run(capsys, "train", "--data-dir", str(fake_fmnist_dir), "--val-size", "5000",
                        "--out", str(tmp_path / "r"))
    assert code == 2
    _one_line_error(err, "--val-size 5000", "2000 images")


def test_missing_data_lists_the_four_files_and_the_hint(capsys, tmp_path):
    code, _, err = _run(capsys, "train", *QUICK, "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert code == 2
    _one_line_error(err, "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                    "t10k-labels-idx1-ubyte.gz")
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def trained_run(fake_fmnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(out)]) == 0
    return out


def test_existing_run_is_not_overwritten(capsys, trained_run, fake_fmnist_dir):
    before = (trained_run / "model.safetensors").read_bytes()
    code, _, err = _run(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(trained_run))
    assert code == 2
    _one_line_error(err, str(trained_run), "holds a finished run", "--overwrite")
    assert (trained_run / "model.safetensors").read_bytes() == before


def test_unwritable_output_directory(capsys, fake_fmnist_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = _run(capsys, "train", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(blocker / "run"))
    assert code == 2
    _one_line_error(err, str(blocker / "run"), "cannot write")
    assert blocker.read_text() == "not a folder"


def test_eval_recomputes_the_saved_metrics(capsys, trained_run):
    code, out, _ = _run(capsys, "eval", str(trained_run), "--json", "--device", "cpu")
    assert code == 0
    result = json.loads(out)
    saved = json.loads((trained_run / "metrics.json").read_text())
    assert result["test_accuracy"] == saved["test_accuracy"]
    assert result["confusion_matrix"] == saved["confusion_matrix"]


def test_eval_of_a_corrupt_checkpoint_is_a_clear_error(capsys, trained_run, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_run, broken)
    w = broken / "model.safetensors"
    w.write_bytes(w.read_bytes()[:500])
    code, _, err = _run(capsys, "eval", str(broken))
    assert code == 2
    _one_line_error(err, "model.safetensors", "corrupt")
    code, _, err = _run(capsys, "eval", str(tmp_path / "nowhere"))
    assert code == 2
    _one_line_error(err, "nowhere", "no such run directory")


def test_predict_png_and_jpeg_of_any_size(capsys, trained_run, tmp_path):
    images, labels = make_images(2, seed=11)
    png, jpg = tmp_path / "a.png", tmp_path / "b.jpg"
    Image.fromarray(images[0]).resize((140, 140)).save(png)
    Image.fromarray(images[1]).convert("RGB").resize((64, 50)).save(jpg, quality=95)
    code, out, _ = _run(capsys, "predict", str(trained_run), str(png), str(jpg), "--json")
    assert code == 0
    result = json.loads(out)
    assert [r["image"] for r in result] == [str(png), str(jpg)]
    for r in result:
        probs = [t["probability"] for t in r["top"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6
    code, out, _ = _run(capsys, "predict", str(trained_run), str(png))
    assert code == 0 and out.startswith(f"{png}: ") and out.count("%") == 3


def test_predict_unreadable_image(capsys, trained_run, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = _run(capsys, "predict", str(trained_run), str(bad))
    assert code == 2
    _one_line_error(err, str(bad), "not a readable image")


def test_models_lists_parameter_counts(capsys):
    code, out, _ = _run(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["fmnist-cnn"]["trainable_params"] == 1_677_674 and rows["mlp"]["params"] == 669_706


def test_python_dash_m_and_console_script(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cnnlab", "--version"], capture_output=True, text=True, env=cli_env())
    assert r.returncode == 0 and r.stdout.startswith("cnnlab ")
    r = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--epochs", "-1"], capture_output=True, text=True,
                       env=cli_env())
    assert r.returncode == 2 and "--epochs" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_experiment_trains_then_reuses(capsys, fake_fmnist_dir, tmp_path):
    argv = ["experiment", "fmnist", "--out", str(tmp_path / "exp"), "--epochs", "1", "--subset", "256", "--val-size", "100",
            "--data-dir", str(fake_fmnist_dir), "--device", "cpu", "--no-progress", "--json"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    first = json.loads(out)
    assert [r["model"] for r in first["rows"]] == ["fmnist-cnn", "mlp"]
    assert all(r["how"] == "trained" and 0 <= r["test_accuracy"] <= 1 for r in first["rows"])
    assert first["rows"][0]["lecture_accuracy"] == 0.935 and first["rows"][1]["lecture_accuracy"] == 0.88
    code, out, err = _run(capsys, *argv)
    again = json.loads(out)
    assert [r["how"] for r in again["rows"]] == ["reused", "reused"] and "reusing" in err
    assert [r["test_accuracy"] for r in again["rows"]] == [r["test_accuracy"] for r in first["rows"]]
    assert (tmp_path / "exp" / "comparison.md").read_text().count("|") > 20
