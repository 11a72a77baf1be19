"""Limits on what the step-by-step ops may take: memory estimated from the shapes and refused before
anything is allocated, matrix files checked before they are read, NaN/inf reported as notes instead
of NumPy warnings, animations that cannot be written refused before drawing and never left half written."""

from __future__ import annotations

import errno
import gc
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.ops import animation
from cnnlab.ops.animation import AnimationPathError, animate, animation_bytes
from cnnlab.ops.examples import EXAMPLES
from cnnlab.ops.limits import MEMORY_ENV, MEMORY_LIMIT, MemoryLimitError, format_bytes, memory_limit
from cnnlab.ops.matrix import MatrixFileError, load_matrix
from cnnlab.ops.steps import check_trace2d, trace2d

K3 = np.arange(9.0).reshape(3, 3)


@pytest.fixture(autouse=True)
def _no_env_limit(monkeypatch):
    monkeypatch.delenv(MEMORY_ENV, raising=False)


def _peak(fn):
    """(result, peak bytes traced while ``fn`` ran)."""
    gc.collect()
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# --- the estimate ----------------------------------------------------------------------------

@pytest.mark.parametrize("n, kernel, kwargs", [
    (150, K3, {}),
    (100, None, {"op": "max", "kernel_size": 3, "stride": 1, "padding": 1}),
    (100, None, {"op": "avg", "kernel_size": 2}),
])
def test_estimate_is_within_a_factor_2_of_the_peak(n, kernel, kwargs):
    x = np.random.default_rng(0).random((n, n))
    estimate = check_trace2d(x, kernel, **kwargs)
    trace, peak = _peak(lambda: trace2d(x, kernel, **kwargs))
    assert len(trace.steps) >= 2500
    assert peak / 2 <= estimate <= 2 * peak, (format_bytes(estimate), format_bytes(peak))


def test_json_estimate_is_within_a_factor_2_of_its_peak():
    x = np.random.default_rng(1).random((60, 60))
    trace = trace2d(x, K3, padding=1)
    extra = check_trace2d(x, K3, padding=1, as_json=True) - check_trace2d(x, K3, padding=1)
    text, peak = _peak(lambda: json.dumps(trace.to_dict()))
    assert len(text) > 1_000_000
    assert peak / 2 <= extra <= 2 * peak, (format_bytes(extra), format_bytes(peak))


def test_steps_share_one_read_only_kernel():
    trace = trace2d(np.ones((4, 4)), K3, op="convolve")
    assert all(s.weights is trace.kernel for s in trace.steps)
    np.testing.assert_array_equal(trace.kernel, np.flip(K3))
    with pytest.raises(ValueError):
        trace.kernel[0, 0] = 1.0


def test_the_lecture_and_a_100x100_input_are_well_inside_the_default_limit():
    assert MEMORY_LIMIT == 1 << 30 and memory_limit() == MEMORY_LIMIT
    for name, ex in EXAMPLES.items():
        assert check_trace2d(ex.input, ex.kernel, ex.op, as_json=True, **ex.options) < 1 << 20, name
    assert check_trace2d(np.zeros((100, 100)), K3, as_json=True) < MEMORY_LIMIT / 10
    assert len(trace2d(np.zeros((100, 100)), K3).steps) == 98 * 98


@pytest.mark.parametrize("kwargs, needles", [
    ({"padding": 100000}, ["input 5x5 with padding 100000", "3x3 window", "200003x200003", "TiB"]),
    ({"padding": (0, 0, 10**7, 10**7), "stride": (1, 2)}, ["(top 0, bottom 0, left 10000000, right 10000000)",
                                                           "3x10000002 = 30000006 output positions"]),
    ({"op": "max", "kernel": None, "kernel_size": 1, "x": np.zeros((2000, 2000))},
     ["max: input 2000x2000 with padding 0"]),
])
def test_huge_requests_are_refused_in_one_line(kwargs, needles):
    kwargs = {"x": np.zeros((5, 5)), "kernel": K3, **kwargs}
    start = time.perf_counter()
    with pytest.raises(MemoryLimitError) as e:
        trace2d(**kwargs)
    assert time.perf_counter() - start < 0.5
    msg = str(e.value)
    assert isinstance(e.value, CnnlabError) and "\n" not in msg
    for n in [*needles, "would need about", "(limit 1.00 GiB; $CNNLAB_CONV_MEMORY raises it)", "smaller input"]:
        assert n in msg, (n, msg)


def test_max_bytes_and_the_environment_set_the_limit(monkeypatch):
    x = np.zeros((30, 30))
    needed = check_trace2d(x, K3)
    assert len(trace2d(x, K3, max_bytes=needed).steps) == 28 * 28
    with pytest.raises(MemoryLimitError, match=r"limit 1\.00 KiB; from max_bytes"):
        trace2d(x, K3, max_bytes=1024)
    monkeypatch.setenv(MEMORY_ENV, "1K")
    with pytest.raises(MemoryLimitError, match=r"limit 1\.00 KiB; from \$CNNLAB_CONV_MEMORY"):
        trace2d(x, K3)
    assert len(trace2d(x, K3, max_bytes=needed).steps) == 28 * 28  # max_bytes wins


@pytest.mark.parametrize("raw, value", [("4096", 4096), ("64K", 64 << 10), ("1.5M", 3 << 19), ("2G", 2 << 30),
                                        ("2GiB", 2 << 30), (" 3 mb ", 3 << 20), ("1T", 1 << 40)])
def test_limit_syntax(monkeypatch, raw, value):
    monkeypatch.setenv(MEMORY_ENV, raw)
    assert memory_limit() == value


@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1X", "1e9", "0.1"])
def test_bad_limits_are_named(monkeypatch, raw):
    monkeypatch.setenv(MEMORY_ENV, raw)
    with pytest.raises(MemoryLimitError, match=r"\$CNNLAB_CONV_MEMORY=.*positive number of bytes"):
        trace2d([[1.0]], [[1.0]])
    with pytest.raises(MemoryLimitError, match="max_bytes must be a positive"):
        memory_limit(0)


_RLIMIT_SCRIPT = textwrap.dedent("""
    import resource, sys, time
    import numpy as np
    from cnnlab.ops import trace2d
    from cnnlab.ops.limits import MemoryLimitError
    from cnnlab.ops.matrix import load_matrix

    x, k = np.zeros((5, 5)), np.ones((3, 3))
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.RLIM_INFINITY))
    for call in (lambda: trace2d(x, k, padding=3000), lambda: load_matrix(sys.argv[1], max_bytes=16 << 20)):
        start = time.perf_counter()
        try:
            call()
        except MemoryLimitError:
            print("refused", time.perf_counter() - start)
    for call in (lambda: trace2d(x, k, padding=3000, max_bytes=1 << 60), lambda: np.load(sys.argv[1])):
        try:
            call()
        except MemoryError:
            print("MemoryError without the guard")
""")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
def test_refused_before_allocating_under_an_address_space_limit(tmp_path):
    """With 64 MiB of address space left, the guarded calls are refused (fast); the same work
    without the guard (a 288 MB padded input, a 72 MB file) runs out of memory."""
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((3000, 3000)))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    env.pop(MEMORY_ENV, None)
    out = subprocess.run([sys.executable, "-c", _RLIMIT_SCRIPT, str(path)], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    refused = [float(ln.split()[1]) for ln in lines if ln.startswith("refused")]
    assert len(refused) == 2 and max(refused) < 0.5, out.stdout
    assert lines.count("MemoryError without the guard") == 2, out.stdout


# --- NaN and inf ----------------------------------------------------------------------------

@pytest.mark.parametrize("x, kernel, kwargs, note", [
    ([[np.nan, 1, 2], [np.inf, 3, 4], [1, 1, 1]], [[0, 1], [1, 1]], {},
     "the input holds 1 NaN and 1 inf values; 2 of the 4 outputs are NaN or inf"),
    ([[np.inf, -np.inf, 2], [2, 3, 4], [1, 1, 1]], None, {"op": "avg", "kernel_size": 2, "stride": 1},
     "the input holds 2 inf values; 2 of the 4 outputs are NaN or inf"),
    ([[-np.inf, 1], [2, 3]], None, {"op": "max", "kernel_size": 1},
     "the input holds 1 inf value; 1 of the 4 outputs is NaN or inf"),
    ([[1, 2], [3, 4]], [[np.nan]], {}, "the kernel holds 1 NaN value; 4 of the 4 outputs are NaN or inf"),
    ([[1, 2], [3, 4]], [[1]], {"padding": 1, "padding_mode": "constant", "value": np.inf},
     "the padding value is inf; 12 of the 16 outputs are NaN or inf"),
    ([[1e308, 1e308], [1, 1]], [[1, 1]], {},
     "1 of the 2 outputs overflowed to inf or NaN (sums beyond the largest float64 number, about 1.8e+308)"),
])
def test_non_finite_values_give_a_note_and_no_warning(x, kernel, kwargs, note):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = trace2d(x, kernel, **kwargs)
        d = trace.to_dict()
    assert trace.notes == [note] and d["notes"] == [note]


def test_finite_input_has_no_notes():
    trace = trace2d(np.arange(16.0).reshape(4, 4), K3, padding=1)
    assert trace.notes == [] and trace.to_dict()["notes"] == []


# --- matrix files ---------------------------------------------------------------------------

def _header_only(path: Path, shape, descr="<f8") -> str:
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"shape": shape, "fortran_order": False, "descr": descr})
    return str(path)


@pytest.mark.parametrize("make, error, needles", [
    (lambda p: np.save(p, np.zeros((2, 2, 2))), MatrixFileError, ["2D matrix", "(2, 2, 2)"]),
    (lambda p: np.save(p, np.zeros((0, 3))), MatrixFileError, ["non-empty", "(0, 3)"]),
    (lambda p: np.save(p, np.array(5.0)), MatrixFileError, ["2D matrix", "()"]),
    (lambda p: np.save(p, np.ones((2, 2), complex)), MatrixFileError, ["numbers", "complex128"]),
    (lambda p: np.save(p, np.array([["a", "b"]])), MatrixFileError, ["numbers", "<U1"]),
    (lambda p: np.save(p, np.zeros(3, dtype=[("a", "f8")])), MatrixFileError, ["numbers", "('a', '<f8')"]),
    (lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True), MatrixFileError,
     ["could not be read", "Python objects", "never unpickled"]),
    (lambda p: p.write_bytes(b"not a numpy file"), MatrixFileError, ["could not be read as a .npy array"]),
    (lambda p: _header_only(p, (10, 10)), MatrixFileError, ["truncated", "800 bytes of values", "holds 0"]),
    (lambda p: _header_only(p, (10000, 10000)), MemoryLimitError,
     ["(a 10000x10000 float64 array) would need about 1.49 GiB", "limit 1.00 GiB", "smaller matrix"]),
    (lambda p: _header_only(p, (1 << 40,), "<i1"), MemoryLimitError, ["1099511627776 int8 array", "TiB"]),
    (lambda p: p.mkdir(), MatrixFileError, ["not a regular file"]),
])
def test_npy_files_are_checked_before_reading(tmp_path, make, error, needles):
    path = tmp_path / "m.npy"
    make(path)
    start = time.perf_counter()
    with pytest.raises(error) as e:
        load_matrix(str(path), "--input")
    assert time.perf_counter() - start < 0.5
    msg = str(e.value)
    assert isinstance(e.value, CnnlabError) and "\n" not in msg and str(path) in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_good_npy_files_load_as_float64(tmp_path):
    np.save(tmp_path / "row.npy", np.arange(3, dtype=np.int16))
    np.save(tmp_path / "b.npy", np.array([[True, False]]))
    np.save(tmp_path / "f.npy", np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)))
    for name, expected in [("row", [[0, 1, 2]]), ("b", [[1, 0]]), ("f", [[0, 1, 2], [3, 4, 5]])]:
        a = load_matrix(str(tmp_path / f"{name}.npy"))
        assert a.dtype == np.float64
        np.testing.assert_array_equal(a, expected)


def test_csv_files_are_counted_before_reading(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(("1," * 99 + "1\n") * 100)  # 10000 values in 20000 bytes
    assert load_matrix(str(path), max_bytes=1 << 20).shape == (100, 100)
    with pytest.raises(MemoryLimitError, match=r"up to 10001 values\) would need about 156 KiB"):
        load_matrix(str(path), "--input", max_bytes=100_000)
    path.write_text("")
    with pytest.raises(MatrixFileError, match="holds no values"):
        load_matrix(str(path), "--input")
    path.write_text("1,2\n3,x\n")
    with pytest.raises(MatrixFileError, match="could not be read as a numeric matrix"):
        load_matrix(str(path), "--input")


# --- animations -----------------------------------------------------------------------------

X5 = np.arange(25.0).reshape(5, 5) % 4


@pytest.fixture
def no_drawing(monkeypatch):
    """Fail the test if a frame is drawn."""
    def frames(*_):
        raise AssertionError("a frame was drawn")
    monkeypatch.setattr(animation, "_frames", frames)


def _refusal(path) -> AnimationPathError:
    start = time.perf_counter()
    with pytest.raises(AnimationPathError) as e:
        animate(trace2d(X5, K3), path)
    assert time.perf_counter() - start < 0.5
    assert isinstance(e.value, CnnlabError) and "\n" not in str(e.value)
    return e.value


def test_a_path_under_a_file_is_refused_before_drawing(tmp_path, no_drawing):
    (tmp_path / "f").write_text("x")
    e = _refusal(tmp_path / "f" / "sub" / "a.gif")
    target, file = tmp_path / "f" / "sub" / "a.gif", tmp_path / "f"
    assert str(e) == f"{target}: cannot write there ({file} is a file, not a folder)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_folder_as_the_path_is_refused(tmp_path, no_drawing):
    (tmp_path / "a.gif").mkdir()
    assert "(it is a folder)" in str(_refusal(tmp_path / "a.gif"))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_proc_is_refused(no_drawing):
    assert str(_refusal("/proc/x.gif")) == "/proc/x.gif: cannot write there (/proc does not take new files)"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write a read-only folder")
def test_a_read_only_folder_is_refused(tmp_path, no_drawing):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert "cannot write there (Permission denied)" in str(_refusal(folder / "a.png"))
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_folder_that_refuses_new_files_is_refused(tmp_path, monkeypatch, no_drawing):
    """What a read-only folder does for a user who is not root (root may write anywhere)."""
    def refuse(**_):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(animation.tempfile, "mkstemp", refuse)
    assert str(_refusal(tmp_path / "a.png")) == f"{tmp_path / 'a.png'}: cannot write there (Permission denied)"


@pytest.mark.parametrize("name", ["a.gif", "a.png"])
def test_a_failure_while_writing_leaves_no_new_file(tmp_path, monkeypatch, name):
    (tmp_path / "a.gif").write_bytes(b"old")
    (tmp_path / "a_000.png").write_bytes(b"old")
    real = animation._frames

    def failing(trace, dpi):
        frames = real(trace, dpi)
        yield next(frames)
        yield next(frames)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(animation, "_frames", failing)
    with pytest.raises(AnimationPathError, match=r"a\.(gif|png): cannot write there \(No space left on device\)"):
        animate(trace2d(X5, K3), tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a_000.png"]
    assert (tmp_path / "a.gif").read_bytes() == b"old" and (tmp_path / "a_000.png").read_bytes() == b"old"


def test_missing_folders_are_created(tmp_path):
    written = animate(trace2d([[1.0, 2.0], [3.0, 4.0]], [[1.0]], stride=2), tmp_path / "new" / "deeper" / "f.png")
    assert [p.name for p in written] == ["f_000.png", "f_001.png"] and all(p.is_file() for p in written)


def test_a_gif_that_would_keep_too_many_frames_is_refused(tmp_path, no_drawing):
    trace = trace2d(np.arange(1600.0).reshape(40, 40) % 5, K3)
    gif, png = animation_bytes(trace, gif=True), animation_bytes(trace, gif=False)
    assert png < MEMORY_LIMIT < gif  # 1445 frames of about 3 megapixels; PNGs keep one at a time
    start = time.perf_counter()
    with pytest.raises(MemoryLimitError) as e:
        animate(trace, tmp_path / "a.gif")
    assert time.perf_counter() - start < 0.5
    for n in ["animation: 1445 frames (38x38 output positions), input 40x40, as one GIF", "limit 1.00 GiB",
              "PNG frames"]:
        assert n in str(e.value)
    with pytest.raises(MemoryLimitError, match="from max_bytes"):
        animate(trace2d(X5, K3), tmp_path / "a.png", max_bytes=1 << 20)
    assert list(tmp_path.iterdir()) == []
