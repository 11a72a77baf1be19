"""Output folders: a marker, one writer at a time, and a clear that removes only what cnnlab wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab._outdir import (COMPRESSED_RUN, EXPERIMENT, LOCK, MARKER, RUN, OutputBusyError, OutputError,
                            check_output_file, claim_output)


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_a_claim_marks_and_locks_and_a_failed_one_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "run"
    with claim_output(out, RUN) as claim:
        assert claim.created and json.loads((out / MARKER).read_text())["kind"] == "run"
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
        with pytest.raises(OutputBusyError, match=rf"--out {out}: in use by another cnnlab process \(pid {os.getpid()}"):
            claim_output(out, RUN)
    assert (out / MARKER).is_file()  # released: claimable again
    claim_output(out, RUN).release()
    with pytest.raises(RuntimeError):
        with claim_output(tmp_path / "new", RUN):
            raise RuntimeError("the command failed before writing anything")
    assert not (tmp_path / "new").exists()


def test_another_process_holding_the_lock_is_named(tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time; from cnnlab._outdir import RUN, claim_output; "
            f"c = claim_output({str(out)!r}, RUN, command='cnnlab train --out x'); print('held', flush=True); "
            "time.sleep(30)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputBusyError, match=rf"pid {proc.pid}, `cnnlab train --out x`"):
            claim_output(out, RUN)
    finally:
        proc.kill()
        proc.wait()
    claim_output(out, RUN).release()  # the kernel released the dead holder's lock: never stale


def test_a_folder_with_files_cnnlab_did_not_write_is_refused_and_untouched(tmp_path):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "config.json").write_text("{}")
    (proj / "src" / "important.py").write_text("x")
    before = _tree(proj)
    with pytest.raises(OutputError, match=r"holds files cnnlab did not write \(src/\)"):
        claim_output(proj, RUN)
    assert _tree(proj) == before  # not even a lock file was left


def test_clear_removes_only_the_layouts_files_and_refuses_anything_else(tmp_path):
    run = tmp_path / "run"
    with claim_output(run, RUN) as claim:
        for name in ("config.json", "model.json", "metrics.json", "curves.png"):
            (run / name).write_text("x")
        (run / "checkpoint").mkdir()
        (run / "checkpoint" / "last.safetensors").write_text("x")
        (run / "notes.txt").write_text("mine")
        with pytest.raises(OutputError, match=r"holds files cnnlab did not write \(notes.txt\); refusing"):
            claim.clear()
        assert (run / "metrics.json").is_file()  # nothing removed when refusing
        (run / "notes.txt").unlink()
        removed = claim.clear()
    assert set(removed) == {"config.json", "model.json", "metrics.json", "curves.png", "checkpoint"}
    assert _tree(run) == {MARKER, LOCK}


def test_outputs_of_a_folder_of_runs_are_kept_when_it_is_cleared(tmp_path):
    exp = tmp_path / "exp"
    with claim_output(exp, EXPERIMENT) as claim:
        claim_output(exp / "fmnist-cnn", RUN).release()
        (exp / "fmnist-cnn" / "metrics.json").write_text("{}")
        (exp / "comparison.json").write_text("{}")
        claim.clear()
    assert (exp / "fmnist-cnn" / "metrics.json").is_file() and not (exp / "comparison.json").exists()


def test_a_run_from_before_markers_is_recognised_by_its_names(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.json").write_text('{"train": {}}')
    (old / "metrics.json").write_text("{}")
    with claim_output(old, RUN) as claim:
        assert claim.foreign() == []
    (old / "thesis.txt").write_text("t")
    os.remove(old / MARKER)
    with pytest.raises(OutputError, match="thesis.txt"):
        claim_output(old, RUN)


@pytest.mark.parametrize("where", ["input", "parent of input", "inside input"])
def test_the_input_is_never_an_output(tmp_path, where):
    src = tmp_path / "nest" / "myrun"
    src.mkdir(parents=True)
    out = {"input": src, "parent of input": tmp_path / "nest", "inside input": src / "sub"}[where]
    with pytest.raises(OutputError, match="input"):
        claim_output(out, COMPRESSED_RUN, inputs=(src,))
    assert sorted(os.listdir(src)) == []


def test_home_current_and_root_are_never_cleared(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (home / MARKER).write_text('{"cnnlab": "0"}')  # even one that looks like cnnlab's
    (home / "config.json").write_text("{}")
    with claim_output(home, RUN) as claim:
        with pytest.raises(OutputError, match="the home folder; cnnlab never clears it"):
            claim.clear()
    assert (home / "config.json").is_file()
    monkeypatch.chdir(home / "..")
    with claim_output(Path.cwd(), EXPERIMENT) as claim:
        with pytest.raises(OutputError, match="a folder above the home folder|the current folder"):
            claim.clear()


def test_a_killed_writers_temporary_files_are_removed_on_the_next_claim(tmp_path):
    run = tmp_path / "run"
    claim_output(run, RUN).release()
    (run / "checkpoint").mkdir()
    orphan = run / "checkpoint" / ".last.safetensors.abc123.tmp"
    orphan.write_bytes(b"\0" * 1000)
    (run / ".metrics.json.x1.tmp").write_text("x")
    claim_output(run, RUN).release()
    assert not orphan.exists() and not (run / ".metrics.json.x1.tmp").exists()


def test_unwritable_and_file_outputs_are_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not os.access(ro, os.W_OK):  # root writes anywhere: /proc below is unwritable for everyone
            with pytest.raises(OutputError, match="cannot write there"):
                claim_output(ro / "run", RUN)
    finally:
        ro.chmod(0o755)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        claim_output(f, RUN)
    with pytest.raises(OutputError, match="cannot write there"):
        claim_output("/proc/cnnlab-run", RUN)


def test_a_single_output_file_is_checked_before_the_work(tmp_path):
    mine = tmp_path / "mine.npz"
    mine.write_text("user data")
    with pytest.raises(OutputError, match="exists; pass --overwrite"):
        check_output_file(mine, overwrite=False, flag="--x", suffixes=(".npz",))
    with pytest.raises(OutputError, match="not written by cnnlab"):
        check_output_file(mine, overwrite=True, flag="--x", suffixes=(".npz",), ours=lambda p: False)
    with pytest.raises(OutputError, match="must end in .npz"):
        check_output_file(tmp_path / "a.txt", overwrite=False, flag="--x", suffixes=(".npz",))
    assert mine.read_text() == "user data"


def test_an_experiment_from_before_markers_with_its_runs_viz_and_sweep_is_recognised(tmp_path):
    exp = tmp_path / "experiment-fmnist"
    for rel, text in [("comparison.json", "{}"), ("fmnist-cnn/config.json", '{"train": {}}'),
                      ("fmnist-cnn/metrics.json", "{}"), ("fmnist-cnn/viz/viz.json", "{}"),
                      ("fmnist-cnn/viz/gradcam.png", ""), ("fmnist-cnn/checkpoint/last.safetensors", ""),
                      ("fmnist-cnn-sweep/sweep.json", "{}"), ("fmnist-cnn-sweep/quantize/compression.json", "{}")]:
        (exp / rel).parent.mkdir(parents=True, exist_ok=True)
        (exp / rel).write_text(text)
    with claim_output(exp, EXPERIMENT) as claim:
        assert claim.foreign() == []
        claim.clear()
    assert (exp / "fmnist-cnn" / "metrics.json").is_file() and (exp / "fmnist-cnn-sweep" / "sweep.json").is_file()
    (exp / "fmnist-cnn" / "viz" / "my-notes.txt").write_text("mine")
    with claim_output(exp, EXPERIMENT) as claim:  # a run holding the user's file is no longer only cnnlab's
        with pytest.raises(OutputError, match=r"did not write \(fmnist-cnn/\)"):
            claim.clear()
    assert (exp / "fmnist-cnn" / "viz" / "my-notes.txt").read_text() == "mine"


def test_an_output_of_another_kind_is_named(tmp_path):
    claim_output(tmp_path / "c", COMPRESSED_RUN).release()
    with pytest.raises(OutputError, match="holds a cnnlab compressed-run output, not a run"):
        claim_output(tmp_path / "c", RUN)
