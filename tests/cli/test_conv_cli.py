"""`cnnlab conv`: the lecture's figures from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.ops.examples import EXAMPLES
from tests.cli.helpers import run_cli as _run

INPUT = "3 3 2 1 0; 0 0 1 3 1; 3 1 2 2 3; 2 0 0 2 2; 2 0 0 0 1"
KERNEL = "0 1 2; 2 2 0; 0 1 2"



def test_prints_the_output_matrix(capsys):
    code, out, _ = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL)
    assert code == 0
    assert out.strip().splitlines()[-3:] == ["12 12 17", "10 17 19", " 9  6 14"]
    assert "output 3x3" in out


def test_steps_show_each_positions_products(capsys):
    code, out, _ = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL, "--steps")
    assert code == 0
    assert "[0,0] 3*0 + 3*1 + 2*2 + 0*2 + 0*2 + 1*0 + 3*0 + 1*1 + 2*2 = 12" in out
    assert sum(line.startswith("  [") for line in out.splitlines()) == 9


def test_json_holds_the_whole_trace(capsys):
    code, out, _ = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL, "--stride", "2", "--padding", "1",
                        "--json")
    assert code == 0
    d = json.loads(out)
    assert d["output_shape"] == [3, 3] and d["stride"] == [2, 2] and d["pads"] == [[1, 1], [1, 1]]
    assert len(d["steps"]) == 9
    step = d["steps"][4]
    assert step["result"] == pytest.approx(np.sum(np.multiply(step["values"], step["weights"])))


def test_convolve_flips_and_pooling_uses_the_window_size(capsys):
    _, out_corr, _ = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL, "--json")
    _, out_conv, _ = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL, "--op", "convolve", "--json")
    corr, conv = json.loads(out_corr), json.loads(out_conv)
    assert corr["output"] != conv["output"]
    assert conv["kernel"] == np.flip(np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]])).tolist()
    code, out, _ = _run(capsys, "conv", "--input", INPUT, "--op", "max", "--size", "3", "--stride", "1", "--json")
    assert code == 0 and json.loads(out)["output"] == [[3, 3, 3], [3, 3, 3], [3, 2, 3]]
    code, out, _ = _run(capsys, "conv", "--input", INPUT, "--op", "avg", "--kernel", "1 1; 1 1", "--json")
    assert code == 0 and json.loads(out)["output_shape"] == [2, 2]  # stride defaults to the window


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_examples_match_the_lecture(capsys, name):
    code, out, _ = _run(capsys, "conv", "--example", name)
    assert code == 0
    assert out.strip().endswith("matches the lecture")


def test_example_list_and_json(capsys):
    code, out, _ = _run(capsys, "conv", "--example", "list")
    assert code == 0 and all(name in out for name in EXAMPLES)
    code, out, _ = _run(capsys, "conv", "--example", "sharpen", "--json")
    d = json.loads(out)
    assert d["output"][0][0] == 114 and d["example"] == {"name": "sharpen", "matches_lecture": True}


def test_inputs_from_files(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.arange(16.0).reshape(4, 4))
    (tmp_path / "k.csv").write_text("1,0\n0,-1\n")
    code, out, _ = _run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", str(tmp_path / "k.csv"),
                        "--json")
    assert code == 0 and json.loads(out)["output"] == [[-5.0] * 3] * 3


def test_animate_writes_a_gif(capsys, tmp_path):
    path = tmp_path / "conv.gif"
    code, out, _ = _run(capsys, "conv", "--example", "stride-2", "--animate", str(path))
    assert code == 0 and path.is_file() and str(path) in out


@pytest.mark.parametrize("argv, needles", [
    (["--input", "1 2 3; 4 5", "--kernel", "1"], ["--input", "ragged"]),
    (["--input", "1 2; 3 4", "--kernel", "1 1 1; 1 1 1; 1 1 1"], ["kernel size 3", "at most 2"]),
    (["--input", INPUT, "--kernel", KERNEL, "--stride", "0"], ["stride", "positive", "0"]),
    (["--input", INPUT, "--kernel", KERNEL, "--dilation", "-1"], ["dilation", "positive"]),
    (["--input", INPUT, "--kernel", KERNEL, "--stride", "two"], ["--stride", "'two'"]),
    (["--input", INPUT, "--kernel", KERNEL, "--padding", "5", "--padding-mode", "reflect"], ["reflect", "smaller"]),
    (["--input", INPUT, "--kernel", KERNEL, "--padding-mode", "mirror"], ["--padding-mode", "mirror", "reflect"]),
    (["--input", INPUT, "--kernel", KERNEL, "--op", "min"], ["--op", "min", "correlate"]),
    (["--input", INPUT], ["--kernel"]),
    (["--kernel", KERNEL], ["--input"]),
    (["--example", "nope"], ["unknown example 'nope'", "lecture-3x3"]),
    (["--example", "sharpen", "--input", INPUT], ["--example", "--input"]),
    (["--input", INPUT, "--op", "max", "--size", "3", "--padding", "2"], ["padding 2", "half"]),
    (["--input", INPUT, "--kernel", KERNEL, "--size", "2"], ["--size", "pooling"]),
    (["--input", INPUT, "--kernel", KERNEL, "--animate", "out.mp4"], ["out.mp4", ".gif"]),
    (["--input", "missing.csv", "--kernel", KERNEL], ["missing.csv", "does not exist"]),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, needles):
    try:
        code = main(["conv", *argv])
    except SystemExit as e:  # argparse's own checks (choices)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
