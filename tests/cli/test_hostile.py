"""Every command over a table of broken runs and hostile files: one line, exit 2, no traceback, no raw library
warning, and nothing a user owns changed. Generated: each broken run meets each command that reads runs, so a
new command or a new way to break a run is checked without anyone remembering to add it.

The memory cases (a decompression bomb in a compressed run, an image or array whose header declares billions of
values) run in a subprocess under an address-space limit and assert its peak resident memory.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cnnlab.cli import main
from tests.helpers import cli_env

QUICK = ["--subset", "256", "--val-size", "100", "--epochs", "1", "--batch-size", "64", "--device", "cpu",
         "--no-progress", "--no-augment"]
RAW_WARNINGS = ("Warning:", "warnings.warn", "Traceback", "\x1b[", "weights_only=False")


class Payload:
    """A pickle that would write a file if it were ever unpickled."""

    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('CNNLAB_PWNED', '/tmp/cnnlab-pwned')}",))


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".cnnlab")}


def _run(capsys, argv: list[str]) -> tuple[int, str, str, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
        except BaseException as e:  # noqa: BLE001 - a traceback is the failure this test looks for
            pytest.fail(f"cnnlab {' '.join(argv)} raised {type(e).__name__}: {e}")
    out, err = capsys.readouterr()
    return code, out, err, [f"{w.category.__name__}: {w.message}" for w in caught]


def _assert_one_line(code, out, err, caught, argv, expected_code=2):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == expected_code, (argv, code, err)
    assert len(lines) == 1, (argv, err)
    assert lines[0].startswith(f"cnnlab {argv[0]}: error: "), lines[0]
    assert not any(s in err for s in RAW_WARNINGS), err
    assert not caught, caught
    return lines[0]


# ---------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def base(fake_fmnist_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    run = root / "run"
    assert main(["train", "--model", "fmnist-gap", *QUICK, "--data-dir", str(fake_fmnist_dir), "--out", str(run)]) == 0
    comp = root / "comp"
    assert main(["compress", str(run), "--method", "cluster", "--bits", "4", "--finetune-epochs", "0",
                 "--no-latency", "--subset", "256", "--out", str(comp)]) == 0
    img = root / "shirt.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(img)
    return {"run": run, "comp": comp, "img": img, "data": fake_fmnist_dir}


def _edit_json(name: str, edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        d = json.loads((run / name).read_text())
        edit(d)
        (run / name).write_text(json.dumps(d))
    return apply


def _write(name: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / name).write_bytes(data)


def _truncate(name: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        b = (run / name).read_bytes()
        (run / name).write_bytes(b[: len(b) // 2])
    return apply


def _other_weights(run: Path) -> None:
    w = load_file(str(run / "model.safetensors"))
    save_file({k + ".x": v for k, v in w.items()}, str(run / "model.safetensors"))


def _inconsistent_artifact(run: Path) -> None:
    from cnnlab.compress.storage import read_artifact, write_artifact

    tensors, meta = read_artifact(run / "model.cnnz")
    dropped = dict(list(tensors.items())[1:])  # one tensor missing, the meta unchanged
    write_artifact(run / "model.cnnz", dropped, meta)


RANDOM = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()

BROKEN_RUNS: dict[str, tuple[str, Callable[[Path], None]]] = {
    "no config.json": ("run", lambda r: (r / "config.json").unlink()),
    "config.json not JSON": ("run", _write("config.json", b"{not json")),
    "config.json a list": ("run", _write("config.json", b"[1, 2]")),
    "data removed": ("run", _edit_json("config.json", lambda d: d.pop("data"))),
    "data.classes shortened to 3": ("run", _edit_json("config.json", lambda d: d["data"].update(
        classes=d["data"]["classes"][:3]))),
    "data.mean a string": ("run", _edit_json("config.json", lambda d: d["data"].update(mean="0.5"))),
    "data.image_size 0": ("run", _edit_json("config.json", lambda d: d["data"].update(image_size=0))),
    "train.epochs a word": ("run", _edit_json("config.json", lambda d: d["train"].update(epochs="many"))),
    "train.lr infinite": ("run", _edit_json("config.json", lambda d: d["train"].update(lr=1e999))),
    "model.json not JSON": ("run", _write("model.json", b"\x00\x01")),
    "unknown model": ("run", _edit_json("model.json", lambda d: d.update(name="nope"))),
    "extra constructor argument": ("run", _edit_json("model.json", lambda d: d["kwargs"].update(colour=1))),
    "constructor argument out of range": ("run", _edit_json("model.json", lambda d: d["kwargs"].update(dropout=5))),
    "weights truncated": ("run", _truncate("model.safetensors")),
    "weights zero bytes": ("run", _write("model.safetensors", b"")),
    "weights random bytes": ("run", _write("model.safetensors", RANDOM)),
    "weights of another model": ("run", _other_weights),
    "no weights": ("run", lambda r: (r / "model.safetensors").unlink()),
    "artifact truncated": ("comp", _truncate("model.cnnz")),
    "artifact random bytes": ("comp", _write("model.cnnz", RANDOM)),
    "artifact zero bytes": ("comp", _write("model.cnnz", b"")),
    "artifact inconsistent with its meta": ("comp", _inconsistent_artifact),
    "artifact missing": ("comp", lambda r: (r / "model.cnnz").unlink()),
    "compressed run unfinished": ("comp", lambda r: (r / "metrics.json").unlink()),
}


def _commands(run: Path, base: dict[str, Path], scratch: Path) -> dict[str, list[str]]:
    d = str(base["data"])
    return {
        "eval": ["eval", str(run), "--data-dir", d],
        "predict": ["predict", str(run), str(base["img"])],
        "viz": ["viz", str(run), "--methods", "filters", "--out", str(scratch / "viz")],
        "compress": ["compress", str(run), "--method", "cluster", "--finetune-epochs", "0", "--no-latency",
                     "--out", str(scratch / "c")],
        "train --resume": ["train", "--resume", str(run)],
        "train --from": ["train", "--from", str(run), "--data-dir", d, "--classes", "Pullover,Coat", *QUICK[2:],
                         "--out", str(scratch / "t")],
    }


CASES = [(b, c) for b in BROKEN_RUNS for c in ("eval", "predict", "viz", "compress", "train --resume", "train --from")]


@pytest.mark.parametrize("broken,command", CASES, ids=[f"{b}-{c}" for b, c in CASES])
def test_every_command_refuses_a_broken_run_in_one_line(capsys, base, tmp_path, broken, command):
    kind, damage = BROKEN_RUNS[broken]
    run = tmp_path / "user" / "myrun"
    shutil.copytree(base[kind], run)
    damage(run)
    before = _snapshot(tmp_path / "user")
    argv = _commands(run, base, tmp_path / "out")[command]
    _assert_one_line(*_run(capsys, argv), argv)
    assert _snapshot(tmp_path / "user") == before  # the input is only read
    leftovers = [p for p in (tmp_path / "out").rglob("*")] if (tmp_path / "out").exists() else []
    assert not leftovers, leftovers  # a refused command leaves no output folder behind


# ---------------------------------------------------------------- hostile files


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height 8-bit gray pixels (and whose data is a few bytes)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("files")
    files = {}

    def put(name: str, data: bytes) -> None:
        (root / name).write_bytes(data)
        files[name] = root / name

    state = {"w": torch.zeros(2)}
    for ext in (".pth", ".pt", ".bin"):
        path = root / f"payload{ext}"
        torch.save({"state_dict": state, "extra": Payload()}, path)
        files[f"payload{ext}"] = path
    with open(root / "raw-pickle.pth", "wb") as f:
        pickle.dump(Payload(), f, protocol=2)
    files["raw-pickle.pth"] = root / "raw-pickle.pth"
    put("truncated.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    put("zero.safetensors", b"")
    put("random.safetensors", RANDOM)
    put("json.safetensors", b'{"weights": [1, 2, 3]}')
    put("weights.txt", b"1 2 3")
    put("truncated.png", _png_header(28, 28)[:30])
    put("random.png", RANDOM)
    put("zero.jpg", b"")
    put("text.png", b"this is not an image\n")
    put("bomb-20000.png", _png_header(20000, 20000))
    put("bomb-10000.png", _png_header(10000, 10000))
    (root / "folder.png").mkdir()
    files["folder.png"] = root / "folder.png"
    np.save(root / "object.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["object.npy"] = root / "object.npy"
    np.save(root / "cube.npy", np.zeros((2, 2, 2)))
    files["cube.npy"] = root / "cube.npy"
    with open(root / "huge.npy", "wb") as f:  # the header declares 100000 x 100000 float64 (80 GB); the data is absent
        np.lib.format.write_array_header_1_0(f, {"descr": "<f8", "fortran_order": False, "shape": (100000, 100000)})
    files["huge.npy"] = root / "huge.npy"
    put("letters.csv", b"1,2,x\n3,4,5\n")
    np.savez(root / "user.npz", mine=np.arange(3))
    files["user.npz"] = root / "user.npz"
    return files


def _hostile_cases() -> list[tuple[str, Callable[[dict, dict, Path], list[str]]]]:
    weights = ["payload.pth", "payload.pt", "payload.bin", "raw-pickle.pth", "truncated.safetensors",
               "zero.safetensors", "random.safetensors", "json.safetensors", "weights.txt", "missing.safetensors"]
    images = ["truncated.png", "random.png", "zero.jpg", "text.png", "bomb-20000.png", "bomb-10000.png",
              "folder.png", "missing.png"]
    cases: list[tuple[str, Callable]] = []
    for w in weights:
        cases.append((f"summary --weights {w}", lambda f, b, t, w=w: ["summary", "fmnist-gap", "--weights",
                                                                      str(f.get(w, t / w))]))
        cases.append((f"train --from tv: --weights {w}", lambda f, b, t, w=w: [
            "train", "--from", "tv:resnet18", "--weights", str(f.get(w, t / w)), "--data-dir", str(b["data"]),
            *QUICK, "--out", str(t / "o")]))
    for im in images:
        cases.append((f"predict {im}", lambda f, b, t, im=im: ["predict", str(b["run"]), str(f.get(im, t / im))]))
        cases.append((f"viz --image {im}", lambda f, b, t, im=im: ["viz", str(b["run"]), "--image",
                                                                   str(f.get(im, t / im)), "--out", str(t / "v")]))
    for arr in ("object.npy", "cube.npy", "huge.npy", "letters.csv"):
        cases.append((f"conv --input {arr}", lambda f, b, t, arr=arr: ["conv", "--input", str(f[arr]), "--kernel",
                                                                       "1 0; 0 1"]))
    cases += [
        ("conv --padding 100000", lambda f, b, t: ["conv", "--input", "1 2; 3 4", "--kernel", "1", "--padding",
                                                   "100000"]),
        ("conv --animate /proc", lambda f, b, t: ["conv", "--example", "lecture-3x3", "--animate", "/proc/cnnlab.gif"]),
        ("conv --animate under a file", lambda f, b, t: ["conv", "--example", "lecture-3x3", "--animate",
                                                         str(f["weights.txt"] / "x.gif")]),
        ("viz --out /proc", lambda f, b, t: ["viz", str(b["run"]), "--methods", "filters", "--out", "/proc/cnnlab"]),
        ("viz --out a file", lambda f, b, t: ["viz", str(b["run"]), "--methods", "filters", "--out",
                                              str(f["weights.txt"])]),
        ("compress --out a file --overwrite", lambda f, b, t: ["compress", str(b["run"]), "--method", "cluster",
                                                               "--no-latency", "--out", str(f["weights.txt"]),
                                                               "--overwrite"]),
        ("train --resume a file", lambda f, b, t: ["train", "--resume", str(f["weights.txt"])]),
        ("train --resume missing", lambda f, b, t: ["train", "--resume", str(t / "nope")]),
        ("eval --device tpu9", lambda f, b, t: ["eval", str(b["run"]), "--device", "tpu9"]),
        ("train --model-arg dropout=5", lambda f, b, t: ["train", "--model", "fmnist-cnn", "--model-arg",
                                                         "dropout=5", "--data-dir", str(b["data"]), *QUICK,
                                                         "--out", str(t / "o")]),
        ("train --model-arg image_size=0", lambda f, b, t: ["train", "--model", "fmnist-cnn", "--model-arg",
                                                            "image_size=0", "--data-dir", str(b["data"]), *QUICK,
                                                            "--out", str(t / "o")]),
        ("summary --model-arg image_size=0", lambda f, b, t: ["summary", "fmnist-cnn", "--model-arg", "image_size=0"]),
        ("train --dataset folder:", lambda f, b, t: ["train", "--dataset", "folder:", *QUICK, "--out", str(t / "o")]),
        ("train --dataset folder:missing", lambda f, b, t: ["train", "--dataset", f"folder:{t / 'nope'}", *QUICK,
                                                            "--out", str(t / "o")]),
        ("train --lr inf", lambda f, b, t: ["train", "--lr", "inf"]),
        ("train --extract-features over a user's file", lambda f, b, t: [
            "train", "--from", str(b["run"]), "--data-dir", str(b["data"]), "--classes", "Pullover,Coat",
            "--extract-features", str(f["user.npz"]), "--overwrite"]),
    ]
    return cases


HOSTILE = _hostile_cases()


@pytest.mark.parametrize("name,make", HOSTILE, ids=[n for n, _ in HOSTILE])
def test_every_hostile_file_or_value_is_one_line(capsys, base, hostile, tmp_path, monkeypatch, name, make):
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("CNNLAB_PWNED", str(pwned))
    files_before = _snapshot(hostile["weights.txt"].parent)
    runs_before = _snapshot(base["run"])
    argv = make(hostile, base, tmp_path)
    _assert_one_line(*_run(capsys, argv), argv)
    assert not pwned.exists()  # no pickle ran
    assert _snapshot(hostile["weights.txt"].parent) == files_before
    assert _snapshot(base["run"]) == runs_before
    assert not (tmp_path / "o").exists() and not (tmp_path / "v").exists()


# ---------------------------------------------------------------- memory: bounded, in a subprocess


def _bomb(run: Path, gib: int = 4) -> None:
    """A model.cnnz whose xz stream decompresses to ``gib`` GiB of zeros (a few hundred KB on disk)."""
    import lzma

    comp = lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=1)
    header = json.dumps({"w": {"dtype": "U8", "shape": [gib << 30], "data_offsets": [0, gib << 30]}}).encode()
    with open(run / "model.cnnz", "wb") as f:
        f.write(comp.compress(struct.pack("<Q", len(header)) + header))
        zeros = bytes(64 << 20)
        for _ in range(gib * 16):
            f.write(comp.compress(zeros))
        f.write(comp.flush())


_MEASURED = ("import resource, sys\n"
             "from cnnlab.cli import main\n"
             "try:\n"
             "    rc = main(sys.argv[1:])\n"
             "finally:\n"
             "    print('peak-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.__stdout__)\n"
             "sys.exit(rc)\n")


def _limited(argv: list[str], limit_gib: float = 6.0) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cnnlab argv`` with its address space limited (importing torch reserves ~3.5 GB of it, resident
    ~0.7 GB), so that a regression fails instead of taking the machine; return the result and the process's
    own peak resident memory in GiB."""
    def limit() -> None:
        cap = int(limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    r = subprocess.run([sys.executable, "-c", _MEASURED, *argv], capture_output=True, text=True, env=cli_env(),
                       timeout=300, preexec_fn=limit)
    peaks = [int(ln.split()[1]) for ln in r.stdout.splitlines() if ln.startswith("peak-kib ")]
    return r, (peaks[-1] / 2**20 if peaks else float("inf"))


@pytest.mark.parametrize("command", ["eval", "predict", "compress"])
def test_a_decompression_bomb_in_a_compressed_run_is_refused_with_bounded_memory(base, tmp_path, command):
    run = tmp_path / "comp"
    shutil.copytree(base["comp"], run)
    _bomb(run)
    argv = {"eval": ["eval", str(run), "--data-dir", str(base["data"])],
            "predict": ["predict", str(run), str(base["img"])],
            "compress": ["compress", str(run), "--method", "prune", "--no-latency", "--out", str(tmp_path / "c")]}
    r, peak = _limited(argv[command])
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert peak < 2.0, f"peak resident memory {peak:.2f} GiB"


@pytest.mark.parametrize("argv", [["conv", "--input", "{huge}", "--kernel", "1"],
                                  ["predict", "{run}", "{bomb}"]], ids=["conv huge array", "predict huge image"])
def test_huge_declared_sizes_are_refused_from_the_header_with_bounded_memory(base, hostile, argv):
    argv = [a.format(huge=hostile["huge.npy"], run=base["run"], bomb=hostile["bomb-20000.png"]) for a in argv]
    r, peak = _limited(argv)
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr, r.stderr
    assert peak < 2.0, f"peak resident memory {peak:.2f} GiB"
