"""A compressed run whose ``model.cnnz`` is broken, or whose meta and tensors do not fit the model in
``model.json``: loading it (``cnnlab eval``, ``predict``, ``viz``) fails with one line naming the file,
for every method, and never with a traceback."""

from __future__ import annotations

import copy
import json
import lzma
import shutil

import pytest
import torch

from cnnlab.cli import EXIT_BAD_INPUT, main
from cnnlab.compress import CompressError
from cnnlab.compress import storage
from cnnlab.compress.binarize import compress_binarize
from cnnlab.compress.prune import compress_prune
from cnnlab.compress.quantize import compress_quantize
from cnnlab.compress.sharing import compress_cluster, compress_inq
from cnnlab.compress.storage import ARTIFACT, write_artifact
from cnnlab.errors import CnnlabError
from cnnlab.models import create_model, model_spec
from cnnlab.runs import load_run
from cnnlab.train import RunError, TrainConfig, fit
from tests.helpers import one_thread

pytestmark = pytest.mark.usefixtures("single_thread")

MODEL = "inception-small"  # 65k parameters, branches and a concat: every method takes it


def calibration() -> list[torch.Tensor]:
    return [torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))]


#: variant -> (method, how to compress a fresh model)
VARIANTS = {
    "prune": ("prune", lambda m: compress_prune(m, sparsity=0.5)),
    "prune-structured": ("prune", lambda m: compress_prune(m, sparsity=0.5, structured=True)),
    "quantize": ("quantize", lambda m: compress_quantize(m, calibration=calibration())),
    "cluster": ("cluster", lambda m: compress_cluster(m, bits=4)),
    "inq": ("inq", lambda m: compress_inq(m, bits=5)),
    "binarize": ("binarize", lambda m: compress_binarize(m, mode="bwn")),
}


@pytest.fixture(scope="module")
def base_run(fake_fmnist_dir, tmp_path_factory):
    """A trained float run of MODEL (one short epoch): its records are what a compressed run copies."""
    out = tmp_path_factory.mktemp("broken") / "base"
    cfg = TrainConfig(model=MODEL, epochs=1, batch_size=64, subset=256, val_size=64, data_dir=str(fake_fmnist_dir),
                      device="cpu", precision="fp32", channels_last=False)
    fit(cfg, out, progress=False, log=lambda s: None)
    return out


@pytest.fixture(scope="module")
def compressed(base_run):
    """variant -> (method, tensors, meta, the compressed model's outputs on a fixed batch)."""
    out = {}
    x = calibration()[0]
    with one_thread():  # as the tests run: the outputs are compared bit for bit
        for variant, (method, fn) in VARIANTS.items():
            c = fn(load_run(base_run).model.eval())
            with torch.no_grad():
                out[variant] = (method, c.tensors, c.meta, c.model(x))
    return out


@pytest.fixture(autouse=True)
def fast_xz(monkeypatch):
    monkeypatch.setitem(storage._XZ, "preset", 0)  # the same format, written faster


def make_run(base_run, path, method: str, tensors, meta, model: str | None = None):
    """A compressed run directory as ``cnnlab compress`` leaves it, as far as loading it needs: the base
    run's records, ``model.json`` naming the method (and ``model``'s architecture if given), the artifact."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "metrics.json"):
        shutil.copy(base_run / name, path / name)
    spec = json.loads((base_run / "model.json").read_text())
    if model is not None:
        spec = model_spec(create_model(model))
    spec["compression"] = {"method": method, "settings": {}}
    (path / "model.json").write_text(json.dumps(spec))
    if tensors is not None:
        write_artifact(path / ARTIFACT, tensors, meta)
    return path


def load_error(run, kind: type[CnnlabError] = CnnlabError) -> str:
    """The one-line message loading ``run`` fails with; it names the artifact."""
    with pytest.raises(kind) as info:
        load_run(run)
    message = str(info.value)
    assert "\n" not in message and f"{run / ARTIFACT}:" in message, message
    return message


def assert_does_not_fit(run) -> str:
    message = load_error(run, RunError)
    assert message.startswith(f"{run / ARTIFACT}: does not fit the model in model.json ("), message
    return message


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_intact_run_loads_to_the_compressed_model(base_run, tmp_path, compressed, variant):
    method, tensors, meta, expected = compressed[variant]
    loaded = load_run(make_run(base_run, tmp_path / "run", method, tensors, meta))
    with torch.no_grad():
        assert torch.equal(loaded.model(calibration()[0]), expected)


# -- the file itself is broken ------------------------------------------------------------------------------
def _breakers(good: bytes) -> dict[str, bytes]:
    noise = torch.randint(0, 256, (len(good),), generator=torch.Generator().manual_seed(5), dtype=torch.uint8)
    return {"empty": b"", "truncated-start": good[:7], "truncated-half": good[: len(good) // 2],
            "truncated-end": good[:-1], "random": noise.numpy().tobytes(),
            "not-xz": lzma.decompress(good), "junk-after": good + b"\x00junk after the stream",
            "longer": good + lzma.compress(bytes(1000), format=lzma.FORMAT_XZ)}


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_broken_file_is_one_line_for_every_method(base_run, tmp_path, compressed, variant):
    method, tensors, meta, _ = compressed[variant]
    good = make_run(base_run, tmp_path / "good", method, tensors, meta)
    data = (good / ARTIFACT).read_bytes()
    for kind, broken in _breakers(data).items():
        run = make_run(base_run, tmp_path / kind, method, None, None)
        (run / ARTIFACT).write_bytes(broken)
        message = load_error(run, CompressError)
        assert any(w in message for w in ("truncated", "not an xz", "empty file", "more bytes", "not xz data",
                                          "corrupt xz")), (kind, message)
    (good / ARTIFACT).unlink()
    assert "no such artifact" in load_error(good, CompressError)


# -- it reads, but does not fit the model -------------------------------------------------------------------
def _drop(key):
    return lambda t, m: (t, {k: v for k, v in m.items() if k != key})


def _set(key, value):
    return lambda t, m: (t, {**m, key: value})


def _without_tensor(pick):
    def mutate(t, m):
        name = pick(t)
        return {k: v for k, v in t.items() if k != name}, m
    return mutate


def _halve_tensor(pick):
    def mutate(t, m):
        name = pick(t)
        return {**t, name: t[name].reshape(-1)[: t[name].numel() // 2].clone()}, m
    return mutate


def _first(suffix):
    return lambda t: next(k for k in t if k.endswith(suffix))


def _rename_first_layer(t, m):
    layers = copy.deepcopy(m["layers"])
    if isinstance(layers, dict):
        first = next(iter(layers))
        layers = {"features.nope": layers.pop(first), **layers}
    else:
        layers[0] = "features.nope"
    return t, {**m, "layers": layers}


def _first_layer_shape(t, m):
    layers = copy.deepcopy(m["layers"])
    first = next(iter(layers))
    layers[first] = [d + 1 for d in layers[first]]
    return t, {**m, "layers": layers}


def _kept(t, m, how):
    kept = copy.deepcopy(m["kept"])
    if how == "layer":
        kept[0][0] = "features.nope"
    else:
        kept[0][1] = [10_000]
    return t, {**m, "kept": kept}


MISFITS = [
    ("prune", "sparse-dropped", _drop("sparse")),
    ("prune", "sparse-names-no-parameter", _set("sparse", ["features.nope.weight"])),
    ("prune", "mask-halved", _halve_tensor(_first(".weight.mask"))),
    ("prune", "values-halved", _halve_tensor(_first(".weight.values"))),
    ("prune", "bias-dropped", _without_tensor(_first(".bias"))),
    ("prune-structured", "kept-dropped", _drop("kept")),
    ("prune-structured", "kept-names-no-layer", lambda t, m: _kept(t, m, "layer")),
    ("prune-structured", "kept-channel-out-of-range", lambda t, m: _kept(t, m, "channel")),
    ("prune-structured", "input-size-rgb", _set("input_size", [3, 28, 28])),
    ("prune-structured", "weight-halved", _halve_tensor(_first("conv.weight"))),
    ("quantize", "format", _set("format", 99)),
    ("quantize", "plan-dropped", _drop("plan")),
    ("quantize", "state-dropped", _drop("state")),
    ("quantize", "input-shape-rgb", _set("input_shape", [3, 28, 28])),
    ("quantize", "backend", _set("backend", "tpu")),
    ("quantize", "weight-dropped", _without_tensor(_first(".weight"))),
    ("quantize", "scale-halved", _halve_tensor(_first(".weight::scale"))),
    ("cluster", "bits-3", _set("bits", 3)),
    ("cluster", "bits-8", _set("bits", 8)),
    ("cluster", "bits-text", _set("bits", "4")),
    ("cluster", "layers-dropped", _drop("layers")),
    ("cluster", "layer-not-in-model", _rename_first_layer),
    ("cluster", "codebook-dropped", _without_tensor(_first(".weight.codebook"))),
    ("cluster", "codes-halved", _halve_tensor(_first(".weight.codes"))),
    ("inq", "bits-4", _set("bits", 4)),
    ("inq", "bits-6", _set("bits", 6)),
    ("inq", "n1-text", lambda t, m: (t, {**m, "layers": {k: "x" for k in m["layers"]}})),
    ("inq", "layers-a-list", lambda t, m: (t, {**m, "layers": list(m["layers"])})),
    ("inq", "layer-not-in-model", _rename_first_layer),
    ("inq", "codes-dropped", _without_tensor(_first(".weight.codes"))),
    ("binarize", "mode", _set("mode", "ternary")),
    ("binarize", "layers-a-list", lambda t, m: (t, {**m, "layers": list(m["layers"])})),
    ("binarize", "layer-not-in-model", _rename_first_layer),
    ("binarize", "layer-shape", _first_layer_shape),
    ("binarize", "sign-dropped", _without_tensor(_first(".weight.sign"))),
    ("binarize", "alpha-halved", _halve_tensor(_first(".weight.alpha"))),
    ("binarize", "bn-halved", _halve_tensor(_first(".bn.running_var"))),
]


@pytest.mark.parametrize("variant, what, mutate", MISFITS, ids=[f"{v}-{w}" for v, w, _ in MISFITS])
def test_meta_or_tensors_that_do_not_fit_the_model_are_one_run_error(base_run, tmp_path, compressed, variant, what,
                                                                     mutate):
    method, tensors, meta, _ = compressed[variant]
    tensors, meta = mutate(dict(tensors), copy.deepcopy(meta))
    assert_does_not_fit(make_run(base_run, tmp_path / "run", method, tensors, meta))


@pytest.mark.parametrize("variant", VARIANTS)
def test_an_artifact_of_another_architecture_does_not_fit(base_run, tmp_path, compressed, variant):
    method, tensors, meta, _ = compressed[variant]
    message = assert_does_not_fit(make_run(base_run, tmp_path / "run", method, tensors, meta, model="gap-cnn"))
    assert len(message) < 500


def _sample(names: list[str], n: int = 6) -> list[str]:
    step = max(1, len(names) // n)
    return names[::step][:n] + names[-1:]


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_meta_key_or_tensor_dropped_or_cut_fails_as_one_line_or_is_unused(base_run, tmp_path, compressed,
                                                                               variant):
    """Each meta key dropped; a sample of tensors dropped or cut to half their values. Each either loads (a
    key the rebuild does not read: prune's ``method``, BatchNorm's ``num_batches_tracked``) or fails as one
    RunError line; nothing else escapes."""
    method, tensors, meta, _ = compressed[variant]
    names = _sample(list(tensors))
    cases = [(f"meta {k}", _drop(k)) for k in meta]
    cases += [(f"drop {k}", _without_tensor(lambda t, k=k: k)) for k in names]
    cases += [(f"halve {k}", _halve_tensor(lambda t, k=k: k)) for k in names]
    loaded, failed = [], 0
    for i, (what, mutate) in enumerate(cases):
        t, m = mutate(dict(tensors), copy.deepcopy(meta))
        run = make_run(base_run, tmp_path / str(i), method, t, m)
        try:
            load_run(run)
        except RunError as e:
            assert str(e).startswith(f"{run / ARTIFACT}: does not fit the model in model.json ("), (what, e)
            assert "\n" not in str(e)
            failed += 1
        else:
            loaded.append(what)
    unused = ("meta method", "meta structured", "num_batches_tracked")
    assert all(any(u in w for u in unused) for w in loaded), loaded
    assert failed >= len(cases) - len(loaded) > 0


# -- the faces: one line on stderr, the bad-input exit code ---------------------------------------------------
@pytest.mark.parametrize("command", [["eval"], ["predict", "missing.png"], ["viz", "--methods", "filters"]])
def test_cnnlab_eval_predict_and_viz_say_one_line(base_run, tmp_path, compressed, capsys, command):
    method, tensors, meta, _ = compressed["cluster"]
    truncated = make_run(base_run, tmp_path / "truncated", method, tensors, meta)
    (truncated / ARTIFACT).write_bytes((truncated / ARTIFACT).read_bytes()[:100])
    misfit = make_run(base_run, tmp_path / "misfit", method, tensors, {**meta, "bits": 3})
    for run, needle in ((truncated, "truncated"), (misfit, "does not fit the model in model.json")):
        args = [command[0], str(run), *command[1:]]
        assert main(args) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"cnnlab {command[0]}: error: {run / ARTIFACT}: "), err
        assert needle in err and "Traceback" not in err
