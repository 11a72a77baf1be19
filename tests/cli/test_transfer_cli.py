"""`cnnlab train --from RUN|tv:NAME`: a transfer run is a run like any other (eval, predict, viz, the
weights it was given), and bad transfer flags get one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cnnlab.cli import main
from cnnlab.data import FASHION_MNIST_CLASSES
from cnnlab.models import create_model
from tests.cli.helpers import one_line_error, run_cli
from tests.helpers import make_images

pytestmark = pytest.mark.usefixtures("single_thread")

COMMON = ["--device", "cpu", "--precision", "fp32", "--no-progress"]
FEW = ["--classes", "Pullover,Coat", "--per-class", "30", "--val-size", "0", "--batch-size", "20", "--epochs", "2",
       *COMMON]


@pytest.fixture(scope="module")
def source(fake_fmnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-transfer") / "source"
    others = ",".join(c for c in FASHION_MNIST_CLASSES if c not in ("Pullover", "Coat"))
    assert main(["train", "--model", "fmnist-gap", "--model-arg", "widths=[8,16]", "--classes", others, "--subset",
                 "800", "--val-size", "100", "--epochs", "1", "--batch-size", "64", "--data-dir", str(fake_fmnist_dir),
                 "--out", str(out), *COMMON]) == 0
    return out


@pytest.fixture(scope="module")
def transfer_run(source, fake_fmnist_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli-transfer") / "run"
    assert main(["train", "--from", str(source), *FEW, "--data-dir", str(fake_fmnist_dir), "--out", str(out)]) == 0
    return out


def test_eval_of_a_transfer_run_matches_its_metrics(capsys, transfer_run):
    code, out, _ = run_cli(capsys, "eval", str(transfer_run), "--json", "--device", "cpu")
    assert code == 0
    result = json.loads(out)
    metrics = json.loads((transfer_run / "metrics.json").read_text())
    assert result["test_accuracy"] == metrics["test_accuracy"] and result["test_images"] == metrics["test_images"]
    assert list(result["per_class_accuracy"]) == ["Pullover", "Coat"]


def test_predict_with_a_transfer_run(capsys, transfer_run, tmp_path):
    images, _ = make_images(2, seed=5)
    paths = [tmp_path / "a.png", tmp_path / "b.png"]
    for img, p in zip(images, paths):
        Image.fromarray(img).resize((56, 56)).save(p)
    code, out, _ = run_cli(capsys, "predict", str(transfer_run), *map(str, paths), "--top", "5", "--json")
    assert code == 0
    for r in json.loads(out):
        assert [t["class"] for t in r["top"]] in (["Pullover", "Coat"], ["Coat", "Pullover"])  # 2 classes, top 5
        assert sum(t["probability"] for t in r["top"]) == pytest.approx(1.0, abs=1e-5)


def test_viz_of_a_transfer_run(capsys, transfer_run, tmp_path):
    code, out, err = run_cli(capsys, "viz", str(transfer_run), "--methods", "filters,gradcam", "--images", "2",
                             "--out", str(tmp_path / "viz"))
    assert code == 0, err
    assert (tmp_path / "viz" / "index.html").is_file()


def test_torchvision_source_with_local_weights(capsys, fake_fmnist_dir, tmp_path):
    torch.manual_seed(0)
    weights = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("tv:resnet18").state_dict().items()}, str(weights))
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--from", "tv:resnet18", "--weights", str(weights), *FEW, "--epochs", "1",
                           "--data-dir", str(fake_fmnist_dir), "--out", str(out))
    assert code == 0, err
    given, trained = load_file(str(weights)), load_file(str(out / "model.safetensors"))
    # 3-channel kernels summed for the 1-channel images; every other backbone tensor as given, bit for bit
    assert torch.equal(trained["conv1.weight"], given["conv1.weight"].sum(1, keepdim=True))
    assert all(torch.equal(given[k], trained[k]) for k in given if not k.startswith(("conv1.", "fc.")))
    assert trained["fc.weight"].shape == (2, 512)
    spec = json.loads((out / "model.json").read_text())
    assert spec["transfer"][0]["head_module"] == "fc" and spec["transfer"][0]["head"] == "last"
    assert spec["transfer"][0]["weights"] == str(weights) and spec["transfer"][0]["input_size"] == [1, 28, 28]


@pytest.mark.parametrize("argv,needles", [
    (["--weights", "w.safetensors"], ["--weights apply to transfer learning", "--from RUN or tv:NAME"]),
    (["--freeze", "none"], ["--freeze apply to transfer learning"]),
    (["--from", "nowhere"], ["--from nowhere", "not a run directory", "tv:NAME"]),
    (["--from", "tv:resnet18"], ["--from tv:resnet18 needs --pretrained [WEIGHTS]", "or --weights PATH"]),
    (["--from", "tv:resnet9000", "--weights", "w.pth"], ["unknown torchvision model 'resnet9000'"]),
    (["--from", "{src}", "--model", "mlp"], ["--model mlp and --from", "drop --model"]),
    (["--from", "{src}", "--freeze", "7"], ["cannot freeze 7 blocks", "features.block1, features.block2", "0-2"]),
    (["--from", "{src}", "--freeze", "all"], ["--freeze", "'all'", "features, none"]),
    (["--from", "{src}", "--head", "gap", "--model-arg", "widths=[4]"], ["--model-arg widths", "drop --model-arg"]),
    (["--from", "{src}", "--classes", "Pullover,Cape"], ["--classes Pullover,Cape", "unknown: Cape"]),
    (["--from", "{src}", "--backbone-lr-mult", "0"], ["--backbone-lr-mult", "positive", "'0'"]),
    (["--from", "{src}", "--extract-features", "features.txt"], ["--extract-features features.txt", ".npz"]),
])
def test_bad_transfer_flags_get_one_line(capsys, source, fake_fmnist_dir, tmp_path, argv, needles):
    argv = [a.replace("{src}", str(source)) for a in argv]
    with pytest.raises(SystemExit) as e:
        raise SystemExit(main(["train", *FEW, *argv, "--data-dir", str(fake_fmnist_dir), "--out", str(tmp_path / "r")]))
    assert e.value.code == 2
    one_line_error(capsys.readouterr().err, *needles)
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # nothing written


def test_extract_features_from_the_command_line(capsys, source, fake_fmnist_dir, tmp_path):
    code, out, err = run_cli(capsys, "train", "--from", str(source), "--classes", "Pullover,Coat", "--val-size", "20",
                             "--data-dir", str(fake_fmnist_dir), "--extract-features", str(tmp_path / "f.npz"), *COMMON)
    assert code == 0, err
    assert out.strip().endswith(f"-> {tmp_path / 'f.npz'}") and "16 features per image" in out
    assert not list(Path.cwd().glob("runs/*"))  # nothing trained
