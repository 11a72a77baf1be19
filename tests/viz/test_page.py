"""`cnnlab viz RUN`: every method on a trained run, PNGs and an offline index.html that a real browser
loads without errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.train import TrainConfig, fit
from tests.helpers import one_thread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, fake_fmnist_dir) -> Path:
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("viz-run") / "cnn"
    cfg = TrainConfig(model="fmnist-cnn", epochs=1, batch_size=64, subset=512, val_size=100, device="cpu",
                      data_dir=str(fake_fmnist_dir), precision="fp32", augment=False)
    fit(cfg, out, progress=False, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def page(run_dir, fake_fmnist_dir) -> Path:
    with one_thread():
        code = main(["viz", str(run_dir), "--images", "4", "--faithfulness", "--data-dir", str(fake_fmnist_dir),
                     "--json"])
    assert code == 0
    return run_dir / "viz"


EXPECTED = ["filters.png", "feature_maps_features_block1_conv1.png", "feature_maps_features_block2_conv2.png",
            "maximize.png", "gradcam.png", "gradcam_plus_plus.png", "hirescam.png", "xgradcam.png", "layercam.png",
            "scorecam.png", "eigencam.png", "ablationcam.png", "occlusion.png", "saliency.png",
            "integrated_gradients.png", "mistakes.png", "confusion.png", "index.html", "faithfulness.json"]


def test_every_method_writes_its_picture(page):
    for name in EXPECTED:
        assert (page / name).is_file(), name
    for png in page.glob("*.png"):
        with Image.open(png) as im:
            im.verify()
    assert not list(page.glob(".*.tmp"))


def test_the_page_links_every_picture_with_a_caption_and_nothing_remote(page):
    text = (page / "index.html").read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert set(srcs) == {p.name for p in page.glob("*.png")}
    assert text.count("<figcaption>") == len(srcs)
    assert "fmnist-cnn" in text and "%" in text  # captions name the model and probabilities
    assert not re.search(r'(src|href)="(https?:)?//', text)  # offline: no remote scripts, fonts or images
    assert "deletion AUC" in text


def test_faithfulness_table(page, run_dir, fake_fmnist_dir, capsys):
    rows = json.loads((page / "faithfulness.json").read_text())
    assert {"gradcam", "occlusion", "saliency", "integrated gradients", "random (reference)"} <= set(rows)
    assert all(0 <= v["deletion_auc"] <= 1 and 0 <= v["insertion_auc"] <= 1 for v in rows.values())
    code = main(["viz", str(run_dir), "--methods", "gradcam", "--images", "2", "--faithfulness",
                 "--data-dir", str(fake_fmnist_dir), "--out", "small"])
    out = capsys.readouterr().out
    assert code == 0 and "deletion AUC" in out and "gradcam" in out and "random (reference)" in out


def test_evaluate_prints_the_table_and_writes_it(run_dir, fake_fmnist_dir, capsys, tmp_path):
    from cnnlab.viz import ATTRIBUTION_METHODS

    out = tmp_path / "evaluate"
    with one_thread():
        code = main(["viz", str(run_dir), "--evaluate", "--images", "12", "--data-dir", str(fake_fmnist_dir),
                     "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    ev = json.loads((out / "evaluation.json").read_text())
    assert set(ev["methods"]) == {*ATTRIBUTION_METHODS, "random (reference)", "gradcam @ features.block2.conv2",
                                  "gradcam @ features.block2.bn2"}
    assert ev["images"] == 12 and ev["layer"] == "features.block2.conv2" and ev["module"] == "features.block2.relu2"
    assert set(ev["ranking"]) | set(ev["untrusted"]) == set(ev["methods"]) - {"random (reference)"}
    assert "Pass the randomisation check" in printed and "random (reference)" in printed
    assert all(m in printed for m in ATTRIBUTION_METHODS)
    md = (out / "evaluation.md").read_text()
    assert md.startswith("# Which map to trust") and md.count("\n|") >= len(ev["methods"]) + 1
    assert (out / "methods.png").is_file() and not list(out.glob("gradcam*.png"))  # figures only when asked
    assert "Which map to trust" in (out / "index.html").read_text()
    # Fashion-MNIST has no known evidence: no localisation column, key or sentence (not zeros)
    assert "mass inside the object" not in printed + md and "Localisation" not in printed + md
    assert "localisation" not in ev and all("localisation" not in r for r in ev["methods"].values())


def test_evaluate_scores_localisation_on_a_known_answer_run(tmp_path, capsys):
    """A run trained on --dataset known-answer: the table, evaluation.json and .md gain the localisation
    column (the share of each map's mass inside the true object) and the verdict names the best localised
    method."""
    run, out = tmp_path / "ka", tmp_path / "ka-eval"
    with one_thread():
        assert main(["train", "--dataset", "known-answer", "--model", "fmnist-cnn", "--subset", "1024", "--val-size",
                     "256", "--epochs", "3", "--batch-size", "64", "--out", str(run), "--device", "cpu",
                     "--no-progress", "--precision", "fp32"]) == 0
        capsys.readouterr()
        code = main(["viz", str(run), "--evaluate", "--images", "8", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    ev = json.loads((out / "evaluation.json").read_text())
    test_y = load_dataset("known-answer", val_size=256).test_y[:8]  # those with an object are scored
    assert 0 < ev["localisation"]["images"] <= int((test_y < 2).sum())  # and explained as their class
    rows = ev["methods"]
    assert all(0 <= r["localisation"] <= 1 for r in rows.values())
    best = ev["localisation"]["best"]
    assert rows[best]["localisation"] > rows["random (reference)"]["localisation"]
    md = (out / "evaluation.md").read_text()
    for text in (printed, md):
        assert "mass inside the object" in text and f"{best} puts the most on the evidence" in text
    header = next(ln for ln in md.splitlines() if ln.startswith("| method"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    col = cells.index("mass inside the object")
    gradcam = next(ln for ln in md.splitlines() if ln.startswith("| gradcam |"))
    assert float(gradcam.strip("|").split("|")[col]) == pytest.approx(rows["gradcam"]["localisation"], abs=0.006)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs Debian's chromium)")
def test_headless_chromium_loads_every_image_without_console_errors(page):
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
         "--virtual-time-budget=5000", "--enable-logging=stderr", "--v=0", "--dump-dom",
         (page / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    body = re.search(r"<body[^>]*>", proc.stdout)
    assert body, proc.stderr[-2000:]
    images = int(re.search(r'data-images="(\d+)"', body.group(0)).group(1))
    loaded = int(re.search(r'data-loaded="(\d+)"', body.group(0)).group(1))
    assert images == len(list(page.glob("*.png"))) and loaded == images
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console


@pytest.mark.parametrize("argv, needles", [
    (["--layer", "classifier.fc1"], ["not a conv layer", "features.block1.conv1"]),
    (["--target", "10", "--methods", "gradcam"], ["target class 10", "0-9"]),
    (["--target", "-1", "--methods", "gradcam"], ["target class -1", "0-9"]),
    (["--target", "ankle bot", "--methods", "gradcam"], ["--target 'ankle bot'", "did you mean 'Ankle boot'"]),
    (["--target", "giraffe", "--methods", "gradcam"], ["--target 'giraffe'", "0-9", "T-shirt/top"]),
    (["--methods", "gradcam,dreams"], ["unknown method 'dreams'", "occlusion"]),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, fake_fmnist_dir, capsys, argv, needles):
    code = main(["viz", str(run_dir), "--images", "2", "--data-dir", str(fake_fmnist_dir), "--out", "bad", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    for n in needles:
        assert n in err[0]


def test_a_target_by_class_name_is_that_class(run_dir, fake_fmnist_dir, tmp_path):
    from cnnlab.viz.report import visualize_run

    r = visualize_run(run_dir, tmp_path / "v", methods="gradcam", n_images=2, target=" ankle BOOT ",
                      data_dir=str(fake_fmnist_dir), log=lambda s: None)
    assert "target: Ankle boot" in r["figures"][0]["caption"]


def test_not_an_image_and_no_weights(run_dir, tmp_path, capsys):
    (tmp_path / "x.png").write_text("not an image")
    assert main(["viz", str(run_dir), "--image", str(tmp_path / "x.png"), "--out", "bad"]) == 2
    assert "not a readable image" in capsys.readouterr().err
    empty = tmp_path / "run"
    shutil.copytree(run_dir, empty, ignore=shutil.ignore_patterns("model.safetensors", "viz", "checkpoint"))
    assert main(["viz", str(empty)]) == 2
    assert "no final weights" in capsys.readouterr().err
