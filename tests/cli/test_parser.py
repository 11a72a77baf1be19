"""The parser after the CLI became a package: every command keeps the options and positionals it had as one
module (a snapshot of the single-module ``cnnlab/cli.py``'s parser), every command has a ``run``, and
``compress``'s settings table, now read from the methods' signatures, is the table that was written by hand."""

from __future__ import annotations

import argparse

import pytest

from cnnlab.cli import build_parser

#: ``{command: sorted option strings}`` of the single-module cli.py ("" is the top-level parser), and the options
#: added since (train --recipe and --tta, eval --tta).
OPTIONS = {
    "": ("--help", "--version", "-h"),
    "compare": ("--augment", "--batch", "--batch-size", "--channels-last", "--data-dir", "--device", "--epochs",
                "--help", "--in-channels", "--json", "--layers", "--lr", "--no-augment", "--no-channels-last",
                "--no-progress", "--optimizer", "--out", "--out-channels", "--overwrite", "--progress", "--repeats",
                "--seed", "--size", "--subset", "--threads", "--val-size", "-h"),
    "compress": ("--bits", "--finetune-epochs", "--help", "--json", "--keep-first-last", "--method", "--mode",
                 "--no-keep-first-last", "--no-latency", "--out", "--overwrite", "--scope", "--sparsity", "--steps",
                 "--structured", "--subset", "--sweep", "--threads", "-h"),
    "conv": ("--animate", "--ceil-mode", "--dilation", "--example", "--exclude-pad", "--fps", "--help", "--input",
             "--json", "--kernel", "--op", "--padding", "--padding-mode", "--size", "--steps", "--stride", "--value",
             "-h"),
    "data": ("--data-dir", "--from", "--help", "--json", "--mirror", "--no-progress", "--progress", "-h"),
    "eval": ("--data-dir", "--device", "--help", "--json", "--tta", "-h"),
    "lecture": ("--budget", "--catsdogs", "--data-dir", "--help", "--json", "--no-reuse", "--out", "--reuse", "--section",
                "-h"),
    "explore": ("--data-dir", "--device", "--help", "--host", "--no-open", "--open", "--port", "--pretrained", "-h"),
    "experiment": ("--data-dir", "--device", "--epochs", "--help", "--json", "--no-progress", "--out", "--overwrite",
                   "--progress", "--seeds", "--shots", "--steps", "--subset", "--val-size", "-h"),
    "models": ("--help", "--json", "--zoo", "-h"),
    "predict": ("--help", "--invert", "--json", "--pretrained", "--top", "-h"),
    "rf": ("--help", "--input", "--json", "--layer", "--model-arg", "--pretrained", "--unit", "--weights", "-h"),
    "summary": ("--all", "--dense-equivalent", "--depth", "--help", "--input", "--json", "--keras", "--model-arg",
                "--pretrained", "--weights", "-h"),
    "train": ("--augment", "--backbone-lr-mult", "--batch-size", "--channels-last", "--checkpoint-interval",
              "--classes", "--compile", "--crop-padding", "--data-dir", "--dataset", "--device", "--epochs",
              "--extract-features", "--freeze", "--from", "--grayscale", "--head", "--help", "--hflip",
              "--image-size", "--label-smoothing", "--lr", "--model", "--model-arg", "--momentum", "--no-augment",
              "--no-channels-last", "--no-grayscale", "--no-hflip", "--no-progress", "--optimizer", "--out",
              "--overwrite", "--per-class", "--precision", "--pretrained", "--progress", "--random-erasing", "--recipe", "--resume",
              "--schedule",
              "--seed", "--subset", "--sync-bn", "--tta", "--val-size", "--warmup", "--weight-decay", "--weights",
              "-h"),
    "viz": ("--data-dir", "--evaluate", "--faithfulness", "--help", "--image", "--images", "--json", "--layer", "--methods",
            "--out", "--pretrained", "--target", "-h"),
}

#: ``{command: positional destinations, in order}`` of the single-module cli.py (none where not listed).
POSITIONALS = {
    "compare": ("models",),
    "compress": ("run",),
    "data": ("action", "name"),
    "eval": ("run",),
    "explore": ("run",),
    "experiment": ("name",),
    "predict": ("run", "images"),
    "rf": ("model",),
    "summary": ("model",),
    "viz": ("run",),
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {"": parser, **sub.choices}


def test_the_same_commands():
    assert set(_commands()) == set(OPTIONS)


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_command_keeps_its_options(command):
    p = _commands()[command]
    assert tuple(sorted(s for a in p._actions for s in a.option_strings)) == OPTIONS[command]
    positionals = tuple(a.dest for a in p._actions if not a.option_strings)
    assert positionals == (("command",) if command == "" else POSITIONALS.get(command, ()))


@pytest.mark.parametrize("command", sorted(c for c in OPTIONS if c))
def test_every_command_has_a_run_function(command):
    func = _commands()[command].get_default("func")
    assert callable(func) and func.__name__ == "run" and func.__module__.startswith("cnnlab.cli.")


def test_compress_settings_come_from_the_methods():
    from cnnlab.cli.compress import _compress_settings

    # the table the single-module cli.py held by hand: settings flag -> the methods that take it
    assert _compress_settings() == {
        "sparsity": ("prune",), "scope": ("prune",), "steps": ("prune",), "structured": ("prune",),
        "bits": ("cluster", "inq"), "mode": ("binarize",), "keep_first_last": ("binarize",)}


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_every_command_prints_its_help(command, capsys):
    """argparse formats help strings with %: a literal "93.5%" in a help text broke `train --help` once."""
    with pytest.raises(SystemExit) as e:
        _commands()[command].parse_args(["--help"])
    assert e.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.parametrize("argv, extra", [(["train", "--bogus"], "--bogus"), (["summary", "fmnist-cnn", "stray"], "stray"),
                                         (["predict", "run", "a.png", "--bogus"], "--bogus")])
def test_leftover_words_are_still_an_error(argv, extra, capsys):
    """The CLI parses with parse_known_args (predict's images may follow --pretrained's value); anything else left
    over is argparse's usual "unrecognized arguments", exit 2."""
    from cnnlab.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert f"unrecognized arguments: {extra}" in capsys.readouterr().err
