"""`cnnlab experiment transfer`, tiny: a backbone on 8 classes of the generated data, the three approaches
at two sizes, the table, the JSON and the learning curve; a second call reuses every run."""

from __future__ import annotations

import json

import pytest

from cnnlab.experiments import TRANSFER_APPROACHES, format_transfer, run_transfer
from tests.cli.helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

BACKBONE = {"epochs": 1, "subset": 400, "val_size": 100}


def test_tiny_transfer_experiment_writes_table_json_plot_and_reuses_runs(fake_fmnist_dir, tmp_path):
    out = tmp_path / "exp"
    common = {"data_dir": str(fake_fmnist_dir), "device": "cpu", "precision": "fp32"}
    result = run_transfer(out, shots=(3, 6), seeds=1, steps=2, backbone_overrides=BACKBONE, overrides=common,
                          log=lambda s: None)
    assert result["classes"] == ["Pullover", "Coat"] and result["backbone"]["how"] == "trained"
    rows = result["rows"]
    assert [(r["approach"], r["per_class"]) for r in rows] == [(a, k) for k in (3, 6) for a in TRANSFER_APPROACHES]
    assert all(0 <= r["test_accuracy"] <= 1 and r["how"] == "trained" for r in rows)
    test_images = {r["test_images"] for r in rows}
    assert len(test_images) == 1 and 0 < test_images.pop() < 400  # the two classes' test images only
    frozen = next(r for r in rows if r["approach"] == "frozen")
    scratch = next(r for r in rows if r["approach"] == "scratch")
    assert frozen["trainable_params"] == 64 * 2 + 2 < scratch["trainable_params"]  # head only vs everything
    # 2 steps per run: 6 images (batch 6) -> 2 epochs; 12 images (batch 12) -> 2 epochs
    assert {r["epochs"] for r in rows} == {2}
    for name in ("transfer.json", "transfer.md", "transfer.png"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "transfer.json").read_text())["rows"] == rows
    md = (out / "transfer.md").read_text()
    assert "| approach | 3 per class | 6 per class |" in md and md.count("\n| ") == 4
    assert (out / "transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    spec = json.loads((out / "frozen-3" / "model.json").read_text())
    assert spec["name"] == "fmnist-gap" and spec["transfer"][0]["source"] == str(out / "backbone")

    again = run_transfer(out, shots=(3, 6), seeds=1, steps=2, backbone_overrides=BACKBONE, overrides=common,
                         log=lambda s: None)
    assert again["backbone"]["how"] == "reused" and {r["how"] for r in again["rows"]} == {"reused"}
    assert [r["test_accuracy"] for r in again["rows"]] == [r["test_accuracy"] for r in rows]
    assert format_transfer(again).splitlines()[0].startswith("Transfer to Pullover vs Coat")


def test_transfer_experiment_from_the_command_line(capsys, fake_fmnist_dir, tmp_path):
    code, out, err = run_cli(capsys, "experiment", "transfer", "--out", str(tmp_path / "exp"), "--shots", "4",
                             "--seeds", "2", "--steps", "1", "--epochs", "1", "--subset", "400", "--val-size", "100",
                             "--data-dir", str(fake_fmnist_dir), "--device", "cpu", "--json", "--no-progress")
    assert code == 0, err
    result = json.loads(out)
    assert [(r["approach"], r["seed"]) for r in result["rows"]] == [(a, s) for a in TRANSFER_APPROACHES for s in (0, 1)]
    assert (tmp_path / "exp" / "scratch-4-seed1" / "metrics.json").is_file()
    assert {s["n"] for s in result["summary"]} == {2}
    code, _, err = run_cli(capsys, "experiment", "fmnist", "--steps", "5")
    assert code == 2
    one_line_error(err, "--steps", "transfer experiment")
