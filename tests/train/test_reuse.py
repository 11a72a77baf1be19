"""fit_or_reuse: a finished run is reused only when it answers the request (the same recipe)."""

from __future__ import annotations

import pytest

from cnnlab.train import TrainConfig
from cnnlab.train.reuse import RecipeMismatchError, fit_or_reuse
from tests.cli.helpers import one_line_error, run_cli

QUIET = {"log": lambda s: None, "progress": False}


def _cfg(data_dir, **kw) -> TrainConfig:
    base = dict(model="mlp", model_kwargs={"hidden": [16]}, subset=256, val_size=64, epochs=1, batch_size=64,
                data_dir=str(data_dir), device="cpu", precision="fp32", augment=False)
    return TrainConfig(**{**base, **kw})


def test_a_finished_run_of_another_recipe_is_never_reused(fake_fmnist_dir, tmp_path):
    run = tmp_path / "mlp"
    metrics, how = fit_or_reuse(_cfg(fake_fmnist_dir), run, **QUIET)
    assert how == "trained"
    assert fit_or_reuse(_cfg(fake_fmnist_dir), run, **QUIET) == (metrics, "reused")
    # where and how fast it runs does not change what it computed
    assert fit_or_reuse(_cfg(fake_fmnist_dir, device="auto", checkpoint_interval=5.0), run, **QUIET)[1] == "reused"
    for change, needle in (({"epochs": 2}, "epochs 1 there, 2 here"), ({"subset": 500}, "subset 256 there, 500 here"),
                           ({"lr": 0.01}, "lr 0.002 there, 0.01 here")):
        with pytest.raises(RecipeMismatchError, match=rf"holds a finished mlp run of another recipe \({needle}\)"):
            fit_or_reuse(_cfg(fake_fmnist_dir, **change), run, **QUIET)
    again, how = fit_or_reuse(_cfg(fake_fmnist_dir, epochs=2), run, overwrite=True, **QUIET)
    assert how == "trained" and again["epochs"] == 2


def test_experiment_with_other_epochs_refuses_the_finished_runs(capsys, fake_fmnist_dir, tmp_path):
    argv = ["experiment", "fmnist", "--out", str(tmp_path / "e"), "--subset", "256", "--val-size", "64",
            "--data-dir", str(fake_fmnist_dir), "--device", "cpu", "--no-progress"]
    code, _, err = run_cli(capsys, *argv, "--epochs", "1")
    assert code == 0, err
    code, out, err = run_cli(capsys, *argv, "--epochs", "2")
    assert code == 2 and "reusing" not in out
    one_line_error(err, "of another recipe", "epochs 1 there, 2 here", "--overwrite")


def test_replace_stale_trains_a_run_of_another_recipe_again_and_says_why(fake_fmnist_dir, tmp_path):
    """What the lecture report does with its own folder after cnnlab's recipe changed: train again, not fail."""
    run = tmp_path / "mlp"
    fit_or_reuse(_cfg(fake_fmnist_dir), run, **QUIET)
    said: list[str] = []
    metrics, how = fit_or_reuse(_cfg(fake_fmnist_dir, epochs=2), run, replace_stale=True, log=said.append,
                                progress=False)
    assert how == "trained" and metrics["epochs"] == 2
    assert any("another recipe (epochs 1 there, 2 here): training it again" in s for s in said), said
    assert fit_or_reuse(_cfg(fake_fmnist_dir, epochs=2), run, replace_stale=True, **QUIET)[1] == "reused"
    assert fit_or_reuse(_cfg(fake_fmnist_dir, epochs=2, recipe="fast"), run, **QUIET)[1] == "reused"  # a name only


def test_a_run_made_with_the_old_default_batch_is_another_recipe(fake_fmnist_dir, tmp_path):
    """Runs made before the default batch became 128 saved ``batch_size: null`` and trained at 256: their resolved
    batch tells them apart from today's default."""
    import json

    run = tmp_path / "mlp"
    fit_or_reuse(_cfg(fake_fmnist_dir, subset=600, batch_size=None), run, **QUIET)
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["batch_size"] is None and config["resolved"]["batch_size"] == 128
    assert fit_or_reuse(_cfg(fake_fmnist_dir, subset=600, batch_size=None), run, **QUIET)[1] == "reused"
    config["resolved"]["batch_size"] = 256  # as an older cnnlab resolved the same None
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(RecipeMismatchError, match=r"batch_size 256 there, 128 here"):
        fit_or_reuse(_cfg(fake_fmnist_dir, subset=600, batch_size=None), run, **QUIET)
