"""`cnnlab compare`: JSON on stdout only, the lecture's layer numbers, one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest

from cnnlab.cli import main
from tests.cli.helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

QUICK_LAYERS = ["--threads", "1", "--repeats", "1", "--batch", "2"]


def _exit(capsys, *argv: str) -> tuple[int, str, str]:
    """Like run_cli, also for argparse's errors (which raise SystemExit)."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_layers_json_and_table(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compare", "--layers", "--json", *QUICK_LAYERS, "--out", str(tmp_path / "l"))
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)}  # stdout is one JSON document
    assert rows["conv3x3"]["params"] == 4640 and rows["depthwise-separable"]["params"] == 688
    assert rows["conv3x3"]["macs"] == 18_874_368 and rows["conv3x3"]["batch"] == 2
    assert json.loads((tmp_path / "l" / "layers.json").read_text()) == list(rows.values())
    assert "| depthwise-separable |" in (tmp_path / "l" / "layers.md").read_text()
    code, out, _ = run_cli(capsys, "compare", "--layers", *QUICK_LAYERS)
    assert code == 0 and "4,640" in out and "688" in out and "ms b2 (1 thr)" in out


def test_layers_with_other_channels(capsys):
    code, out, _ = run_cli(capsys, "compare", "--layers", "--in-channels", "3", "--out-channels", "6", "--size", "8",
                           *QUICK_LAYERS, "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["conv3x3"]["params"] == 3 * 6 * 9 + 6 and rows["conv3x3"]["output_shape"] == [6, 8, 8]
    assert rows["grouped-g2"]["params"] is None and "in_channels=3" in rows["grouped-g2"]["note"]


def test_compare_models_json(capsys, fake_fmnist_dir, tmp_path):
    argv = ["compare", "mlp", "gap-cnn", "--epochs", "1", "--subset", "256", "--val-size", "100", "--batch-size", "64",
            "--data-dir", str(fake_fmnist_dir), "--device", "cpu", "--threads", "1", "--repeats", "2",
            "--out", str(tmp_path / "c"), "--no-progress", "--json"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["mlp", "gap-cnn"]
    for r in rows:
        assert {"name", "params", "macs", "latency_ms_b1", "latency_ms_b256", "test_accuracy"} <= set(r)
        assert r["latency_ms_b256"] > r["latency_ms_b1"] > 0 and r["threads"] == 1
    assert "training into" in err and (tmp_path / "c" / "compare.png").is_file()
    code, out, err = run_cli(capsys, *argv[:-1])  # again, as a table: nothing is trained
    assert code == 0 and "reusing" in out and "training into" not in out
    assert "gap-cnn" in out and "speed-up b256" in out and "1 thread" in out


@pytest.mark.parametrize("argv,needles", [
    (["mlp", "nope"], ["unknown model 'nope'", "registered:", "fmnist-cnn", "mlp"]),
    ([], ["give one or more MODELs", "--layers", "mlp"]),
    (["mlp", "--epochs", "0"], ["--epochs", "positive", "'0'"]),
    (["mlp", "--subset", "-5"], ["--subset", "positive", "'-5'"]),
    (["mlp", "--subset", "many"], ["--subset", "'many'"]),
    (["mlp", "--threads", "0"], ["--threads", "'0'"]),
    (["mlp", "--threads", "4096"], ["--threads 4096", "CPUs"]),
    (["mlp", "--optimizer", "rmsprop"], ["--optimizer", "rmsprop", "adamw"]),
    (["mlp", "--in-channels", "8"], ["--in-channels apply to --layers only"]),
    (["--layers", "mlp"], ["--layers compares single layers", "mlp"]),
    (["--layers", "--epochs", "3"], ["--epochs", "--layers trains nothing"]),
    (["--layers", "--size", "0"], ["--size", "'0'"]),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, needles):
    code, out, err = _exit(capsys, "compare", *argv, "--out", str(tmp_path / "c"))
    assert code == 2 and out == ""
    one_line_error(err, *needles)
    assert not (tmp_path / "c").exists()  # nothing trained, nothing written
