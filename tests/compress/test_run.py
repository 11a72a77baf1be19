"""The orchestration of ``cnnlab compress``: the output run, its measurements, reload, atomicity, bad input.
A stand-in method (weights rounded to float16) keeps these tests independent of the real methods."""

from __future__ import annotations

import json

import pytest

from cnnlab.compress import CompressError
from cnnlab.compress import run as crun
from cnnlab.compress.storage import ARTIFACT, read_artifact
from cnnlab.compress.sweep import compress_sweep, format_sweep
from cnnlab.errors import CnnlabError
from cnnlab.runs import load_run
from cnnlab.train import RunError, TrainConfig, fit

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def base_run(fake_fmnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "base"
    cfg = TrainConfig(model="gap-cnn", epochs=1, batch_size=64, subset=256, val_size=64, data_dir=str(fake_fmnist_dir),
                      device="cpu", precision="fp32", channels_last=False)
    fit(cfg, out, progress=False, log=lambda s: None)
    return out


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(crun.METHODS, "fake", ("tests.compress.fake_method", "float16 weights"))
    monkeypatch.setitem(crun.DEFAULT_FINETUNE_EPOCHS, "fake", 1)


def _snapshot(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


def test_compress_writes_a_run_that_reloads_to_the_same_accuracy(base_run, fake, tmp_path):
    before = _snapshot(base_run)
    lines = []
    rec = crun.compress_run(base_run, "fake", settings={"level": 2}, out=tmp_path / "c", max_steps=2, measure=False,
                            log=lines.append)
    assert _snapshot(base_run) == before  # the input run is only read
    out = tmp_path / "c"
    for name in ("model.cnnz", "model.json", "config.json", "metrics.json", "compression.json", "confusion.png"):
        assert (out / name).is_file(), name
    assert not (out / "model.safetensors").exists()  # the artifact is the weights
    assert rec["size_bytes"] == (out / ARTIFACT).stat().st_size
    assert rec["baseline_size_bytes"] == (base_run / "model.safetensors").stat().st_size
    assert rec["size_ratio"] == pytest.approx(rec["baseline_size_bytes"] / rec["size_bytes"])
    assert rec["size_ratio"] > 1.5  # float16 halves the bytes, xz takes a little more
    for key in ("method", "settings", "size_bytes", "baseline_size_bytes", "test_accuracy", "baseline_test_accuracy",
                "latency_ms_b256", "baseline_latency_ms_b256"):
        assert key in rec, key
    assert rec["settings"] == {"level": 2} and rec["report"] == {"layers": len(read_artifact(out / ARTIFACT)[0])}
    assert json.loads((out / "compression.json").read_text())["test_accuracy"] == rec["test_accuracy"]
    assert any("fine-tune epoch 1/1" in s for s in lines)
    # cnnlab's loader rebuilds it from the artifact, and evaluation gives the recorded accuracy exactly
    loaded = load_run(out)
    assert loaded.config.precision == "fp32"
    from cnnlab.data import load_dataset
    from cnnlab.train import evaluate, make_eval_loader

    cfg = loaded.config
    data = load_dataset(cfg.dataset, cfg.data_dir, val_size=cfg.val_size, seed=cfg.seed)
    m = evaluate(loaded.model, make_eval_loader(data.test_x, data.test_y, data, "cpu", batch_size=1000), 10)
    assert m["accuracy"] == rec["test_accuracy"]
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == rec["test_accuracy"]


def test_latency_is_measured_against_the_float_model(base_run, fake, tmp_path):
    rec = crun.compress_run(base_run, "fake", out=tmp_path / "c", finetune_epochs=0, threads=1, repeats=1,
                            log=lambda s: None)
    assert rec["latency_ms_b1"] > 0 and rec["baseline_latency_ms_b256"] > 0 and rec["threads"] == 1
    assert rec["speedup_b256"] == pytest.approx(rec["baseline_latency_ms_b256"] / rec["latency_ms_b256"])
    assert rec["macs"] == rec["baseline_macs"] > 0


def test_default_out_is_beside_the_run_and_an_existing_out_is_refused(base_run, fake, tmp_path):
    assert crun.default_out(base_run, "prune", {"sparsity": 0.9}) == base_run.parent / "base-prune-sparsity0.9"
    out = tmp_path / "c"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    for overwrite in (False, True):  # a folder of the user's own files is never written into, nor cleared
        with pytest.raises(CnnlabError, match="holds files cnnlab did not write \\(keep.txt\\)"):
            crun.compress_run(base_run, "fake", out=out, overwrite=overwrite, measure=False, log=lambda s: None)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    crun.compress_run(base_run, "fake", out=tmp_path / "d", finetune_epochs=0, measure=False, log=lambda s: None)
    with pytest.raises(CompressError, match="holds a finished compressed run; pass --overwrite"):
        crun.compress_run(base_run, "fake", out=tmp_path / "d", finetune_epochs=0, measure=False, log=lambda s: None)
    with pytest.raises(CnnlabError, match="is the input"):
        crun.compress_run(base_run, "fake", out=base_run, overwrite=True, measure=False, log=lambda s: None)


def test_a_failing_method_leaves_nothing_behind(base_run, fake, tmp_path):
    with pytest.raises(CompressError, match="level must be 1 or 2; got 3"):
        crun.compress_run(base_run, "fake", settings={"level": 3}, out=tmp_path / "c", finetune_epochs=0,
                          measure=False, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs,needle", [
    ({"method": "zip"}, "unknown method 'zip'; valid: prune, quantize"),
    ({"method": "fake", "settings": {"nope": 1}}, "fake has no setting 'nope'; valid: level"),
    ({"method": "fake", "finetune_epochs": -1}, "--finetune-epochs must be 0 or more; got -1"),
    ({"method": "quantize", "finetune_epochs": 2}, "quantize is post-training"),
])
def test_bad_settings(base_run, fake, tmp_path, kwargs, needle):
    with pytest.raises(CompressError, match=needle):
        crun.compress_run(base_run, out=tmp_path / "c", measure=False, log=lambda s: None, **kwargs)


def test_a_run_without_weights_and_a_compressed_run_are_refused(base_run, fake, tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        crun.compress_run(tmp_path / "none", "fake", measure=False)
    crun.compress_run(base_run, "fake", out=tmp_path / "c", finetune_epochs=0, measure=False, log=lambda s: None)
    with pytest.raises(CompressError, match="already compressed"):
        crun.compress_run(tmp_path / "c", "fake", out=tmp_path / "d", measure=False, log=lambda s: None)
    with pytest.raises(RunError, match="no checkpoint"):
        load_run(tmp_path / "c", weights="checkpoint")


def test_sweep_reuses_finished_rows_and_writes_table_and_plot(base_run, fake, tmp_path):
    configs = [("fake", {"level": 1}), ("fake", {"level": 2})]
    kw = {"configs": configs, "finetune_epochs": 0, "measure": False, "log": lambda s: None}
    result = compress_sweep(base_run, tmp_path / "sweep", **kw)
    assert [r["name"] for r in result["rows"]] == ["fake-level1", "fake-level2"]
    for name in ("sweep.json", "sweep.md", "sweep.png"):
        assert (tmp_path / "sweep" / name).stat().st_size > 0
    stamp = (tmp_path / "sweep" / "fake-level1" / "compression.json").stat().st_mtime_ns
    lines = []
    compress_sweep(base_run, tmp_path / "sweep", **(kw | {"log": lines.append}))
    assert (tmp_path / "sweep" / "fake-level1" / "compression.json").stat().st_mtime_ns == stamp
    assert any(s.startswith("fake-level1: reusing") for s in lines)
    text = format_sweep(result, markdown=True)
    assert "float32 (baseline)" in text and "fake-level2" in text
    assert crun.setting_name("prune", {"structured": True, "sparsity": 0.5}) == "prune-sparsity0.5-structured"
    assert crun.setting_name("binarize", {"keep_first_last": False}) == "binarize-nokeepfirstlast"


def test_a_stored_compression_is_reused_only_for_the_same_weights_method_settings_and_subset(base_run, fake,
                                                                                          tmp_path):
    import shutil

    run = tmp_path / "base"
    shutil.copytree(base_run, run)
    out = tmp_path / "c"
    assert crun.stored_compression(out, run, "fake") is None  # nothing there
    rec = crun.compress_run(run, "fake", settings={"level": 2}, out=out, finetune_epochs=0, subset=128,
                            measure=False, log=lambda s: None)
    assert rec["subset"] == 128 and len(rec["source_weights_sha256"]) == 64
    assert crun.stored_compression(out, run, "fake", settings={"level": 2}, subset=128) == rec
    assert crun.stored_compression(out, run, "fake", settings={"level": 3}, subset=128) is None
    assert crun.stored_compression(out, run, "fake", settings={"level": 2}, subset=None) is None
    assert crun.stored_compression(out, run, "prune", settings={"level": 2}, subset=128) is None
    weights = run / "model.safetensors"  # the source retrained since: its weights differ
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    assert crun.stored_compression(out, run, "fake", settings={"level": 2}, subset=128) is None
