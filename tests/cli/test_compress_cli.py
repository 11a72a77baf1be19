"""``cnnlab compress``: every method end to end on a small trained run (a few fine-tuning steps), the
output run taken by ``cnnlab eval``, and one-line errors (exit 2) that never touch the input run."""

from __future__ import annotations

import json

import pytest

from tests.cli.helpers import one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("single_thread")

QUICK = ["--subset", "256", "--no-latency", "--threads", "1"]


@pytest.fixture(scope="module")
def base(fake_fmnist_dir, tmp_path_factory):
    from cnnlab.cli import main

    out = tmp_path_factory.mktemp("compress-cli") / "base"
    assert main(["train", "--model", "fmnist-cnn", "--epochs", "1", "--subset", "512", "--val-size", "64",
                 "--batch-size", "128", "--data-dir", str(fake_fmnist_dir), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--precision", "fp32"]) == 0
    return out


def _files(path):
    return {p.name: p.read_bytes() for p in path.iterdir() if p.is_file()}


@pytest.mark.parametrize("args,folder", [
    (["--method", "prune", "--sparsity", "0.8", "--finetune-epochs", "1"], "base-prune-sparsity0.8"),
    (["--method", "prune", "--sparsity", "0.3", "--structured", "--finetune-epochs", "1"],
     "base-prune-sparsity0.3-structured"),
    (["--method", "quantize"], "base-quantize"),
    (["--method", "cluster", "--bits", "3", "--finetune-epochs", "1"], "base-cluster-bits3"),
    (["--method", "inq", "--bits", "4", "--finetune-epochs", "0"], "base-inq-bits4"),
    (["--method", "binarize", "--mode", "xnor", "--finetune-epochs", "1"], "base-binarize-modexnor"),
])
def test_each_method_writes_a_run_that_eval_reproduces(capsys, base, fake_fmnist_dir, args, folder):
    before = _files(base)
    code, out, err = run_cli(capsys, "compress", str(base), *args, *QUICK, "--json")
    assert code == 0, err
    record = json.loads(out)  # --json: stdout is the record alone
    run = base.parent / folder
    assert record == json.loads((run / "compression.json").read_text())
    assert record["size_bytes"] == (run / "model.cnnz").stat().st_size < record["baseline_size_bytes"]
    assert _files(base) == before
    code, out, err = run_cli(capsys, "eval", str(run), "--data-dir", str(fake_fmnist_dir), "--json")
    assert code == 0, err
    assert json.loads(out)["test_accuracy"] == record["test_accuracy"]


def test_prune_without_sparsity_takes_the_librarys_default(capsys, base):
    """The default lives in ``compress_prune``'s signature; the run is still named and recorded with it."""
    code, out, err = run_cli(capsys, "compress", str(base), "--method", "prune", "--finetune-epochs", "0", *QUICK,
                             "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["report"]["target_sparsity"] == 0.9
    assert record["settings"] == {"sparsity": 0.9}
    out_dir = base.parent / f"{base.name}-prune-sparsity0.9"
    assert json.loads((out_dir / "compression.json").read_text())["settings"] == {"sparsity": 0.9}


@pytest.mark.parametrize("args,needles", [
    (["--method", "prune", "--sparsity", "1.5"], ["1.5", "(0, 1)"]),
    (["--method", "cluster", "--bits", "9"], ["9", "2"]),
    (["--method", "quantize", "--bits", "4"], ["--bits", "cluster and inq", "quantize"]),
    (["--method", "prune", "--finetune-epochs", "1", "--sweep"], ["--sweep"]),
    ([], ["--method", "--sweep"]),
    (["--method", "quantize", "--finetune-epochs", "2"], ["post-training"]),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(capsys, base, args, needles):
    before = sorted(p.name for p in base.parent.iterdir())
    code, _, err = run_cli(capsys, "compress", str(base), *args, *QUICK)
    assert code == 2
    one_line_error(err, *needles)
    assert sorted(p.name for p in base.parent.iterdir()) == before


def test_a_run_without_weights(capsys, base, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for name in ("config.json", "model.json"):
        (empty / name).write_bytes((base / name).read_bytes())
    code, _, err = run_cli(capsys, "compress", str(empty), "--method", "quantize", *QUICK)
    assert code == 2
    one_line_error(err, "model.safetensors")


def test_an_unknown_method_is_refused_by_the_parser(capsys, base):
    with pytest.raises(SystemExit) as e:
        run_cli(capsys, "compress", str(base), "--method", "zip")
    assert e.value.code == 2
    assert "invalid choice: 'zip'" in capsys.readouterr().err


def test_viz_takes_a_binarized_run_and_explains_why_not_an_int8_one(capsys, base):
    run = base.parent / "base-binarize-modexnor"
    if not run.is_dir():
        assert run_cli(capsys, "compress", str(base), "--method", "binarize", "--mode", "xnor",
                       "--finetune-epochs", "0", *QUICK)[0] == 0
    code, _, err = run_cli(capsys, "viz", str(run), "--methods", "filters,gradcam", "--images", "2")
    assert code == 0, err
    assert (run / "viz" / "index.html").is_file()
    quant = base.parent / "base-quantize"
    if not quant.is_dir():
        assert run_cli(capsys, "compress", str(base), "--method", "quantize", *QUICK)[0] == 0
    code, _, err = run_cli(capsys, "viz", str(quant), "--images", "2")
    assert code == 2
    one_line_error(err, "int8 quantized run", str(base))
