"""`cnnlab conv`: the lecture's figures from the command line."""

from __future__ import annotations

import json
import os
import time
import warnings

import numpy as np
import pytest

from cnnlab.cli import main
from cnnlab.ops.examples import EXAMPLES
from tests.cli.helpers import one_line_error
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


# --- limits: refused in one line before anything is computed or drawn ---------------------------

@pytest.fixture
def no_env_limit(monkeypatch):
    monkeypatch.delenv("CNNLAB_CONV_MEMORY", raising=False)


def test_a_huge_npy_input_is_refused_from_its_header(capsys, tmp_path, no_env_limit):
    path = tmp_path / "big.npy"
    with open(path, "wb") as f:  # the header of a 10000x10000 float64 array; its 800 MB are never read
        np.lib.format.write_array_header_1_0(f, {"shape": (10000, 10000), "fortran_order": False, "descr": "<f8"})
    start = time.perf_counter()
    code, out, err = _run(capsys, "conv", "--input", str(path), "--kernel", KERNEL)
    assert time.perf_counter() - start < 1.0
    assert code == 2 and out == ""
    one_line_error(err, "cnnlab conv: error: --input file", "10000x10000 float64 array", "would need about 1.49 GiB",
                   "limit 1.00 GiB; $CNNLAB_CONV_MEMORY raises it", "smaller matrix")


def test_huge_padding_is_refused_before_allocating(capsys, no_env_limit):
    start = time.perf_counter()
    code, out, err = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL, "--padding", "100000")
    assert time.perf_counter() - start < 1.0
    assert code == 2 and out == ""
    one_line_error(err, "input 5x5 with padding 100000", "200003x200003", "would need about",
                   "TiB (limit 1.00 GiB; $CNNLAB_CONV_MEMORY raises it)", "less padding")


def test_the_limit_comes_from_the_environment(capsys, monkeypatch, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((60, 60)))
    code, _, _ = _run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", KERNEL)
    assert code == 0
    monkeypatch.setenv("CNNLAB_CONV_MEMORY", "1M")
    code, out, err = _run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", KERNEL)
    assert code == 2 and out == ""
    one_line_error(err, "input 60x60", "58x58 = 3364 output positions", "limit 1.00 MiB; from $CNNLAB_CONV_MEMORY")
    monkeypatch.setenv("CNNLAB_CONV_MEMORY", "lots")
    code, _, err = _run(capsys, "conv", "--example", "sharpen")
    assert code == 2
    one_line_error(err, "$CNNLAB_CONV_MEMORY='lots'", "K, M, G or T")


def test_json_output_counts_in_the_estimate(capsys, monkeypatch):
    from cnnlab.ops.steps import check_trace2d

    x = np.zeros((40, 40))
    plain, with_json = check_trace2d(x, np.ones((3, 3))), check_trace2d(x, np.ones((3, 3)), as_json=True)
    assert with_json > 2 * plain
    monkeypatch.setenv("CNNLAB_CONV_MEMORY", str((plain + with_json) // 2))
    matrix = "; ".join(" ".join(["0"] * 40) for _ in range(40))
    code, out, _ = _run(capsys, "conv", "--input", matrix, "--kernel", "1 1 1; 1 1 1; 1 1 1")
    assert code == 0 and "output 38x38" in out
    code, out, err = _run(capsys, "conv", "--input", matrix, "--kernel", "1 1 1; 1 1 1; 1 1 1", "--json")
    assert code == 2 and out == ""
    one_line_error(err, "one step record each, and their JSON", "would need about")


@pytest.mark.parametrize("make, needles", [
    (lambda p: np.save(p, np.zeros((2, 2, 2))), ["2D matrix", "(2, 2, 2)"]),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
     ["Python objects", "never unpickled"]),
    (lambda p: np.save(p, np.ones((2, 2), complex)), ["numbers", "complex128"]),
])
def test_bad_npy_inputs_exit_2_with_one_line(capsys, tmp_path, make, needles):
    make(tmp_path / "x.npy")
    code, _, err = _run(capsys, "conv", "--input", str(tmp_path / "x.npy"), "--kernel", KERNEL)
    assert code == 2
    one_line_error(err, "--input file", *needles)


def test_nan_input_gives_a_note_and_no_warning(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = _run(capsys, "conv", "--input", "nan 1 2; inf 3 4; 1 1 1", "--kernel", "0 1; 1 1")
        assert code == 0
        assert err == "note: the input holds 1 NaN and 1 inf values; 2 of the 4 outputs are NaN or inf\n"
        assert out.strip().splitlines()[-2:] == ["nan   9", "nan   6"]
        code, out, err = _run(capsys, "conv", "--input", "1e308 1e308; 1 1", "--kernel", "1 1", "--json")
    assert code == 0 and "RuntimeWarning" not in err
    assert json.loads(out)["notes"] == [err.removeprefix("note: ").strip()]
    assert "overflowed" in err


def test_finite_input_prints_no_note(capsys):
    code, out, err = _run(capsys, "conv", "--input", INPUT, "--kernel", KERNEL, "--json")
    assert code == 0 and err == "" and json.loads(out)["notes"] == []


@pytest.mark.parametrize("target, reason", [
    ("file/x.gif", "is a file, not a folder"),
    ("folder", "it is a folder"),
    ("/proc/x.gif", "/proc does not take new files"),
])
def test_animate_where_nothing_can_be_written(capsys, tmp_path, target, reason):
    if target.startswith("/proc") and not os.path.isdir("/proc/self"):
        pytest.skip("needs Linux's /proc")
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder.gif").mkdir()
    path = target if target.startswith("/") else str(tmp_path / (target + ("" if "." in target else ".gif")))
    code, out, err = _run(capsys, "conv", "--example", "stride-2", "--animate", path)
    assert code == 2 and out == ""
    one_line_error(err, f"cnnlab conv: error: --animate {path}: cannot write there (", reason)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder.gif"]
