"""``cnnlab compress RUN``: apply one method to a trained run and measure it against the run's float model.

A compressed run is a run directory like any other (``config.json``, ``model.json``, ``metrics.json``),
so ``cnnlab eval``, ``viz`` and ``compare`` take it; its weights are not ``model.safetensors`` but the
method's artifact ``model.cnnz`` (see :mod:`cnnlab.compress.storage`), and ``model.json`` names the
method. :func:`load_compressed` rebuilds the model from the artifact alone: the reported test accuracy
is measured on that reloaded model, so "saved and loaded back gives the same accuracy" holds by
construction (and is checked against the in-memory model).

The input run is only read. The output is written into a temporary sibling folder and renamed into
place when complete: a killed ``compress`` leaves no half-written run (run it again; it starts over).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from safetensors import SafetensorError

from cnnlab._env import machine_info
from cnnlab._io import atomic_write_json, file_digest
from cnnlab._outdir import COMPRESSED_RUN, Output, claim_output
from cnnlab.analysis import summarize
from cnnlab.analysis.latency import LATENCY_BATCHES, measure_latency
from cnnlab.compress.base import Compressed, CompressError
from cnnlab.compress.finetune import make_finetune
from cnnlab.compress.storage import ARTIFACT, read_artifact, write_artifact, xz_size
from cnnlab.data import normalize
from cnnlab.errors import CnnlabError
from cnnlab.models import build_from_spec
from cnnlab.train import RunDir, RunError, eval_set, load_run
from cnnlab.train.plots import plot_confusion

__all__ = ["METHODS", "DEFAULT_FINETUNE_EPOCHS", "compress_run", "load_compressed", "default_out", "setting_name",
           "read_compression", "stored_compression", "method_settings"]

#: method -> (module, what it does). Each module has ``compress_<name>`` and ``rebuild_<name>``.
METHODS: dict[str, tuple[str, str]] = {
    "prune": ("cnnlab.compress.prune", "magnitude pruning, unstructured (masks) or structured (channels removed)"),
    "quantize": ("cnnlab.compress.quantize", "int8 static post-training quantization (x86 backend)"),
    "cluster": ("cnnlab.compress.sharing", "weight sharing: k-means per layer, 2^bits shared values"),
    "inq": ("cnnlab.compress.sharing", "incremental network quantization to powers of two"),
    "binarize": ("cnnlab.compress.binarize", "binary weights (BWN) or weights and activations (XNOR)"),
}

#: Settings a result is always recorded and named with, at the method's default when not given: a pruned
#: run is ``RUN-prune-sparsity0.9`` and its record says how sparse, whichever face asked for it.
NAMED_SETTINGS: dict[str, tuple[str, ...]] = {"prune": ("sparsity",)}

#: Fine-tuning epochs when none are given: the methods that retrain get a short retraining.
DEFAULT_FINETUNE_EPOCHS = {"prune": 2, "quantize": 0, "cluster": 1, "inq": 1, "binarize": 3}

#: Training images used to calibrate activation ranges (quantize).
CALIBRATION_IMAGES = 2048


def _functions(method: str) -> tuple[Callable[..., Compressed], Callable[..., nn.Module]]:
    if method not in METHODS:
        raise CompressError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    module = importlib.import_module(METHODS[method][0])
    return getattr(module, f"compress_{method}"), getattr(module, f"rebuild_{method}")


#: Keyword arguments of ``compress_<method>`` that compress_run supplies, not the user.
_SUPPLIED = ("finetune", "finetune_epochs", "epochs_per_step", "calibration", "input_size")


def _settings_of(fn: Callable[..., Compressed]) -> list[str]:
    params = inspect.signature(fn).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _SUPPLIED]


def method_settings() -> dict[str, list[str]]:
    """Each method's settings: the keyword-only parameters of its ``compress_<method>`` that the user
    gives (those :func:`compress_run` supplies left out), e.g. ``{"prune": ["sparsity", ...], ...}``."""
    return {method: _settings_of(_functions(method)[0]) for method in METHODS}


def setting_name(method: str, settings: dict[str, Any]) -> str:
    """``prune-sparsity0.9``, ``prune-sparsity0.5-structured``, ``quantize``: a method and its settings as a
    folder name (sorted keys; a flag as ``key`` or ``nokey``)."""
    parts = [method]
    for k, v in sorted(settings.items()):
        key = k.replace("_", "")
        if v is not None:
            parts.append(key if v is True else f"no{key}" if v is False else f"{key}{v}")
    return "-".join(parts)


def default_out(run: str | os.PathLike, method: str, settings: dict[str, Any]) -> Path:
    """``<run>-<setting_name>`` beside the input run, e.g. ``fmnist-cnn-prune-sparsity0.9``."""
    run = Path(run)
    return run.parent / f"{run.name}-{setting_name(method, settings)}"


def load_compressed(path: str | os.PathLike, spec: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild a compressed run's model from its ``model.json`` and ``model.cnnz`` alone (eval mode, CPU).

    A broken artifact raises :class:`CompressError` (:func:`read_artifact`); one that reads but does not
    fit the model in ``model.json`` (meta or tensors missing, of other shapes or bits) raises
    :class:`RunError`: one line naming the artifact and what the method's rebuild said (a cnnlab error's
    message, a missing key, or PyTorch's message joined into one line, at most 300 characters)."""
    def one_line(e: BaseException) -> str:
        if isinstance(e, KeyError) and len(e.args) == 1:
            text = f"missing key {e.args[0]!r}"
        elif isinstance(e, CnnlabError):
            text = str(e)
        else:
            text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        text = " ".join(text.split())
        return text if len(text) <= 300 else text[:297] + "..."

    run = RunDir(Path(path))
    spec = spec if spec is not None else run.read_json("model.json")
    info = spec.get("compression") if isinstance(spec, dict) else None
    method = info.get("method") if isinstance(info, dict) else None
    if not isinstance(method, str) or method not in METHODS:
        raise RunError(f"{run.model_json}: unknown compression method {method!r}; valid: {', '.join(METHODS)}")
    _, rebuild = _functions(method)
    tensors, meta = read_artifact(run.path / ARTIFACT)
    try:
        base = build_from_spec({k: v for k, v in spec.items() if k != "compression"})
    except (ValueError, TypeError, KeyError) as e:
        raise RunError(f"{run.model_json}: cannot rebuild the model ({one_line(e)})") from None
    try:
        return rebuild(base, tensors, meta).eval()
    except (KeyError, ValueError, TypeError, RuntimeError, IndexError, AttributeError, ZeroDivisionError,
            OverflowError, SafetensorError) as e:  # CompressError is a ValueError
        raise RunError(f"{run.path / ARTIFACT}: does not fit the model in model.json ({one_line(e)})") from None


def _calibration(data, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train_y), generator=g)[: min(n, len(data.train_y))]
    x = normalize(data.train_x[idx], data.mean, data.std)
    return list(x.split(256))


def _latency(model: nn.Module, size: tuple[int, ...], threads: int, channels_last: bool | None,
             repeats: int | None) -> dict[str, float]:
    out = {}
    for b in LATENCY_BATCHES:  # the batches every comparison measures (compression.json's latency_ms_b* keys)
        m = measure_latency(model, size, b, threads=threads, channels_last=channels_last, repeats=repeats)
        out[f"latency_ms_b{b}"] = m["median_ms"]
    return out


def compress_run(
    run: str | os.PathLike,
    method: str,
    *,
    settings: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
    finetune_epochs: int | None = None,
    overwrite: bool = False,
    threads: int = 2,
    subset: int | None = None,
    max_steps: int | None = None,
    measure: bool = True,
    repeats: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compress the trained run at ``run`` with ``method`` and write a new run at ``out``; return its
    ``compression.json``.

    ``settings``: the method's keyword arguments (e.g. ``{"sparsity": 0.9}``, ``{"bits": 4}``).
    ``finetune_epochs``: retraining epochs with the run's recipe (default :data:`DEFAULT_FINETUNE_EPOCHS`).
    ``subset``: fine-tune and calibrate on this many training images (tests); the test set is always whole.
    ``max_steps``: at most this many fine-tuning steps per epoch (tests). ``measure``: CPU latency at batch
    1 and 256 with ``threads`` threads, for the compressed and the float model (off in tests); ``repeats``:
    timed passes per latency (default adaptive, see :func:`cnnlab.analysis.latency.measure_latency`).
    """
    settings = dict(settings or {})
    compress_fn, _ = _functions(method)
    takes = inspect.signature(compress_fn).parameters  # what the method needs besides its settings
    valid = _settings_of(compress_fn)
    for key in settings:
        if key not in valid:
            raise CompressError(f"{method} has no setting {key!r}; valid: {', '.join(valid) or 'none'}")
    for key in NAMED_SETTINGS.get(method, ()):
        settings.setdefault(key, takes[key].default)
    if finetune_epochs is None:
        finetune_epochs = DEFAULT_FINETUNE_EPOCHS[method]
    if finetune_epochs < 0:
        raise CompressError(f"--finetune-epochs must be 0 or more; got {finetune_epochs}")
    if finetune_epochs and "finetune" not in takes:
        retrain = [m for m in METHODS if "finetune" in inspect.signature(_functions(m)[0]).parameters]
        raise CompressError(f"--finetune-epochs {finetune_epochs}: {method} is post-training (no fine-tuning); "
                            f"fine-tuning applies to {', '.join(retrain)}")
    src = Path(run)
    spec = RunDir(src).read_json("model.json") if src.is_dir() else None
    if isinstance(spec, dict) and isinstance(spec.get("compression"), dict):
        raise CompressError(f"{src} is already compressed ({spec['compression'].get('method')}); "
                            "compress the float run it came from")
    base = load_run(src)  # a float run: one without weights fails here, naming it
    base_spec = base.run.read_json("model.json")
    out = Path(out) if out is not None else default_out(src, method, settings)
    claim = claim_output(out, COMPRESSED_RUN, inputs=(src,))  # before any work: one writer, a folder of ours
    try:
        record = _compress_into(claim, src, base, base_spec, method, settings, compress_fn, takes, finetune_epochs,
                                overwrite=overwrite, threads=threads, subset=subset, max_steps=max_steps,
                                measure=measure, repeats=repeats, log=log)
    except BaseException:
        try:
            if not (out / "metrics.json").is_file():
                claim.clear()  # an unfinished output is worth nothing: leave nothing that blocks the next one
        except (OSError, CnnlabError):
            pass
        finally:
            claim.release(failed=True)
        raise
    claim.release()
    return record


def _compress_into(claim: Output, src: Path, base, base_spec, method, settings, compress_fn, takes, finetune_epochs,
                   *, overwrite, threads, subset, max_steps, measure, repeats, log) -> dict[str, Any]:
    out = claim.path
    if claim.entries():
        if (out / "metrics.json").is_file() and not overwrite:
            raise CompressError(f"--out {out} holds a finished compressed run; pass --overwrite to replace it, or "
                                "choose another --out")
        claim.check_clearable()
        if not (out / "metrics.json").is_file():
            log(f"{out}: an earlier compress was stopped before it finished; starting again")

    cfg = base.config
    # normalised as the run was trained, whatever the subset
    data = cfg.load_data(**({} if subset is None else {"subset": subset}), log=log).normalised_as(base.data)
    # evaluated as `cnnlab eval` will evaluate the output run: float32, in the run's memory format
    tests = eval_set(base, data)
    channels_last = tests.channels_last
    float_model = base.model.float().eval()
    baseline = tests.evaluate(copy.deepcopy(float_model))

    size_input = base.input_size
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = copy.deepcopy(float_model)
        kwargs = dict(settings)
        if "input_size" in takes:
            kwargs["input_size"] = size_input
        if "calibration" in takes:
            kwargs["calibration"] = _calibration(data, CALIBRATION_IMAGES, cfg.seed)
        if "finetune" in takes:
            kwargs["finetune"] = make_finetune(cfg, data, max_steps=max_steps, log=log)
            kwargs["epochs_per_step" if "epochs_per_step" in takes else "finetune_epochs"] = finetune_epochs
        log(f"{method}: compressing {src} ({', '.join(f'{k}={v}' for k, v in settings.items()) or 'defaults'}; "
            f"{finetune_epochs} fine-tuning epoch(s))")
        t0 = time.perf_counter()
        result = compress_fn(model, **kwargs)
        seconds = time.perf_counter() - t0

        tmp = claim.partial()  # built beside, moved into place when complete: the old output stays till then
        spec = dict(base_spec)
        spec["compression"] = {"method": method, "settings": settings, "source": str(src)}
        size = write_artifact(tmp / ARTIFACT, result.tensors, result.meta)
        atomic_write_json(tmp / "model.json", spec)
        reloaded = tests.prepare(load_compressed(tmp, spec))
        test = tests.evaluate(reloaded)
        direct = tests.evaluate(result.model)
        if test["confusion_matrix"] != direct["confusion_matrix"]:  # the artifact must hold the whole model
            raise RuntimeError(f"{method}: the model rebuilt from {ARTIFACT} predicts differently "
                               f"({test['accuracy']:.4f} vs {direct['accuracy']:.4f}); this is a bug in cnnlab")
        record = _record(method, settings, finetune_epochs, src, base, result, size, test, baseline, seconds,
                         size_input, reloaded, float_model, threads if measure else None, repeats, channels_last)
        record |= {"subset": subset, "source_weights_sha256": file_digest(base.run.weights)}
        _write_run(tmp, base, record, test, data, finetune_epochs)
        claim.clear()  # only what cnnlab wrote (checked above, before the work)
        claim.publish(last="metrics.json")  # its presence marks the output complete
    finally:
        torch.set_num_threads(threads_before)
    log(_summary_line(record, out))
    return record


def _record(method, settings, finetune_epochs, src, base, result: Compressed, size, test, baseline, seconds,
            input_size, model, float_model, threads, repeats, channels_last) -> dict[str, Any]:
    base_bytes = base.run.weights.stat().st_size
    record: dict[str, Any] = {
        "method": method,
        "settings": settings,
        "finetune_epochs": finetune_epochs,
        "source": str(src),
        "size_bytes": size,
        "baseline_size_bytes": base_bytes,
        "baseline_xz_size_bytes": xz_size(base.run.weights),
        "size_ratio": base_bytes / size,
        "test_accuracy": test["accuracy"],
        "baseline_test_accuracy": baseline["accuracy"],
        "accuracy_drop_points": 100 * (baseline["accuracy"] - test["accuracy"]),
        "compress_seconds": seconds,
    }
    record["baseline_macs"] = int(summarize(float_model, input_size).total_macs)
    if method == "quantize":
        # the MAC counter counts float aten ops; the int8 model runs the same convs and dense layers
        record["macs"], record["macs_counted_on"] = record["baseline_macs"], "the float model (int8 does the same MACs)"
    else:
        record["macs"] = int(summarize(model, input_size).total_macs)
    if threads is not None:
        mine = _latency(model, input_size, threads, result.meta.get("channels_last", channels_last), repeats)
        theirs = _latency(float_model, input_size, threads, channels_last, repeats)
        record |= mine | {f"baseline_{k}": v for k, v in theirs.items()}
        record["speedup_b256"] = theirs["latency_ms_b256"] / mine["latency_ms_b256"]
        record["threads"] = threads
    else:
        record |= {"latency_ms_b1": None, "latency_ms_b256": None, "baseline_latency_ms_b1": None,
                   "baseline_latency_ms_b256": None, "speedup_b256": None, "threads": None}
    record["report"] = result.report
    record["machine"] = machine_info()
    record["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    return record


def _write_run(path: Path, base, record: dict[str, Any], test: dict[str, Any], data, finetune_epochs: int) -> None:
    config = base.run.read_json("config.json")
    config["train"] = dict(config["train"], precision="fp32")
    config["resolved"] = dict(config.get("resolved", {}), precision="fp32")
    config["compression"] = {k: record[k] for k in ("method", "settings", "finetune_epochs", "source")}
    atomic_write_json(path / "config.json", config)
    atomic_write_json(path / "compression.json", record)
    classes = list(base.data.get("classes", data.classes))
    plot_confusion(test["confusion_matrix"], classes, path / "confusion.png",
                   title=f"{record['method']}: test accuracy {100 * test['accuracy']:.2f}%")
    atomic_write_json(path / "metrics.json", {
        "model": base.config.model, "dataset": data.name, "test_accuracy": test["accuracy"],
        "test_loss": test["loss"], "test_images": test["count"],
        "per_class_accuracy": dict(zip(classes, test["per_class_accuracy"])), "classes": classes,
        "confusion_matrix": test["confusion_matrix"], "epochs": finetune_epochs, "train_seconds":
        record["compress_seconds"], "precision": "fp32", "compression": record["method"],
    })


def _summary_line(r: dict[str, Any], out: Path) -> str:
    line = (f"{r['method']}: test accuracy {100 * r['test_accuracy']:.2f}% (float {100 * r['baseline_test_accuracy']:.2f}%, "
            f"{-r['accuracy_drop_points']:+.2f} points), {r['size_bytes']:,} bytes stored vs "
            f"{r['baseline_size_bytes']:,} ({r['size_ratio']:.1f}x smaller)")
    if r.get("latency_ms_b256"):
        line += (f", b256 {r['latency_ms_b256']:.1f} ms vs {r['baseline_latency_ms_b256']:.1f} ms "
                 f"({r['speedup_b256']:.2f}x) on {r['threads']} threads")
    return f"{line}; wrote {out}"


def stored_compression(out: str | os.PathLike, run: str | os.PathLike, method: str, *,
                       settings: dict[str, Any] | None = None, subset: int | None = None) -> dict[str, Any] | None:
    """The record of the finished compressed run in ``out`` when it is ``method`` with ``settings`` (every one
    given; the rest at their defaults) on ``subset`` of exactly the weights ``run`` holds now; else None (nothing
    there, another recipe, or a source retrained since). What a caller that keeps its own outputs (the lecture
    report) reuses instead of compressing again."""
    out = Path(out)
    if not (out / "metrics.json").is_file():
        return None
    try:
        record = read_compression(out)
        weights = RunDir(Path(run)).weights
        same = (isinstance(record, dict) and record.get("method") == method and record.get("subset") == subset
                and all(record.get("settings", {}).get(k) == v for k, v in (settings or {}).items())
                and weights.is_file() and record.get("source_weights_sha256") == file_digest(weights))
    except (OSError, CnnlabError, ValueError, AttributeError):
        return None
    return record if same else None


def read_compression(path: str | os.PathLike) -> dict[str, Any]:
    """A compressed run's ``compression.json``."""
    p = Path(path) / "compression.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise RunError(f"{path}: not a compressed run (no compression.json)") from None
