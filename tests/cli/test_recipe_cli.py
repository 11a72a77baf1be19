"""`cnnlab train --recipe NAME`: the recipe's settings, every explicitly given flag over them, all recorded in
config.json; `--tta flip` on train and eval reports the augmented accuracy beside the plain one, labelled."""

from __future__ import annotations

import json

import pytest

from cnnlab.train import recipes
from cnnlab.train.recipes import RECIPES, recipe_config
from tests.cli.helpers import run_cli
from tests.cli.test_cli import QUICK


@pytest.fixture
def fake_fast(monkeypatch):
    monkeypatch.setitem(RECIPES, "fast", {"epochs": 3, "lr": 0.004, "label_smoothing": 0.0, "val_size": 50})


def test_a_recipe_sets_what_no_flag_gives_and_every_given_flag_wins(capsys, fake_fast, fake_fmnist_dir, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", *[a for a in QUICK if a not in ("--val-size", "100")], "--recipe", "fast",
                           "--label-smoothing", "0.2", "--data-dir", str(fake_fmnist_dir), "--out", str(out))
    assert code == 0, err
    train = json.loads((out / "config.json").read_text())["train"]
    assert train["recipe"] == "fast"
    assert train["lr"] == 0.004 and train["val_size"] == 50  # the recipe's: not given
    assert train["epochs"] == 1 and train["label_smoothing"] == 0.2  # given: over the recipe's 3 and 0.0
    assert train["batch_size"] == 64 and train["model"] == "mlp"


def test_recipe_config_is_the_recipes_settings_under_the_given_ones(fake_fast):
    cfg = recipe_config("fast", lr=0.01)
    assert (cfg.recipe, cfg.epochs, cfg.lr, cfg.label_smoothing) == ("fast", 3, 0.01, 0.0)
    assert recipe_config().recipe == "default" and recipe_config().epochs == recipes.TrainConfig().epochs
    with pytest.raises(recipes.ConfigError, match="--recipe 'slow'.*default, fast"):
        recipe_config("slow")


def test_every_recipe_names_only_real_settings_and_validates():
    from cnnlab.train.config import RECIPE_NAMES

    assert tuple(RECIPES) == RECIPE_NAMES
    for name in RECIPES:
        cfg = recipe_config(name).validate()
        assert cfg.recipe == name and set(RECIPES[name]) <= set(cfg.to_dict())


def test_train_and_eval_with_flip_tta_print_both_accuracies_labelled(capsys, fake_fmnist_dir, tmp_path):
    out = tmp_path / "run"
    code, text, err = run_cli(capsys, "train", *QUICK, "--tta", "flip", "--data-dir", str(fake_fmnist_dir),
                              "--out", str(out))
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert f"test accuracy {100 * metrics['test_accuracy']:.2f}%" in text
    assert f"with flip TTA: {100 * metrics['tta']['test_accuracy']:.2f}%" in text
    code, text, _ = run_cli(capsys, "eval", str(out), "--tta", "flip", "--device", "cpu")
    assert code == 0
    assert f"test accuracy {100 * metrics['test_accuracy']:.2f}%" in text
    assert f"test accuracy with flip TTA {100 * metrics['tta']['test_accuracy']:.2f}%" in text
    code, text, _ = run_cli(capsys, "eval", str(out), "--tta", "flip", "--json", "--device", "cpu")
    result = json.loads(text)
    assert result["test_accuracy"] == metrics["test_accuracy"]
    assert result["tta"]["label"] == "with flip TTA"
    assert result["tta"]["test_accuracy"] == metrics["tta"]["test_accuracy"]


def test_an_unknown_recipe_or_tta_is_exit_2_naming_the_valid_ones(capsys):
    for argv, needles in ((["train", "--recipe", "slow"], ["--recipe", "slow", "default", "fast"]),
                          (["train", "--tta", "crop"], ["--tta", "crop", "flip"]),
                          (["eval", "run", "--tta", "crop"], ["--tta", "crop", "flip"])):
        with pytest.raises(SystemExit) as e:
            run_cli(capsys, *argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert all(n in err for n in needles), err


def test_the_best_recipe_trains_its_wider_resnet_with_erasing(capsys, fake_fmnist_dir, tmp_path):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--recipe", "best", "--epochs", "1", "--subset", "128", "--batch-size",
                           "64", "--device", "cpu", "--no-progress", "--data-dir", str(fake_fmnist_dir),
                           "--model-arg", "blocks_per_stage=1", "--out", str(out))
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())["train"]
    assert (cfg["recipe"], cfg["model"], cfg["optimizer"], cfg["random_erasing"]) == ("best", "resnet-small", "sgd", 0.5)
    assert cfg["augment"] and cfg["val_size"] == 0 and cfg["epochs"] == 1
    # --model-arg replaces the recipe's model arguments as a whole: the widths are the model's default again
    spec = json.loads((out / "model.json").read_text())
    assert spec["kwargs"]["blocks_per_stage"] == 1 and spec["kwargs"]["widths"] == [16, 32, 64]


@pytest.mark.parametrize("value", ["1.5", "-0.1"])
def test_random_erasing_outside_zero_to_one_is_exit_2(capsys, value):
    code, _, err = run_cli(capsys, "train", *QUICK, "--random-erasing", value)
    assert code == 2
    assert "--random-erasing" in err and value.lstrip("-") in err and "Traceback" not in err
