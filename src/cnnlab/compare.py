"""Comparing CNN variants by measurement: parameters, MACs, measured CPU latency and test accuracy.

The lecture ranks its "reduced complexity" architectures by parameters and MACs; neither is time. The
depthwise-separable replacement of the lecture's 16 -> 32 conv has 1/7 of its MACs but runs far less
than 7x faster, and in contiguous NCHW not faster at all (bench/RESULTS.md has the measured figures):
the depthwise and pointwise halves do little work per byte they read. So every row carries a latency
measured on this machine (median of repeated forward passes, the thread count stated) beside the counts.

- :func:`compare_models` trains each registered model with one shared recipe (a
  :class:`~cnnlab.train.TrainConfig`), reusing finished runs, and writes ``compare.json``,
  ``compare.md`` and ``compare.png`` (accuracy against MACs and against latency).
- :func:`compare_layers` is the lecture's single-layer example: a 16 -> 32 channel 3x3 conv on a
  64x64 map (4,640 parameters) against its depthwise-separable replacement (688) and the other
  constrained convolutions.
- :func:`measure_latency` is the timer both use.

Units: MACs are multiply-accumulates for one sample as :func:`cnnlab.analysis.summarize` counts them
(convolutions and linear layers; biases, normalisation and activations cost none; FLOPs ~ 2 x MACs).
Latency is milliseconds of wall time per forward pass of a whole batch, float32, on the CPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from cnnlab import layers as L
from cnnlab._env import machine_info
from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab._outdir import COMPARE, claim_output
from cnnlab._plot import figure, save_figure
from cnnlab.analysis.latency import (LATENCY_BATCHES, busy_warning, check_positive, check_threads,
                                     measure_latency)
from cnnlab.analysis.summary import dense_equivalent, summarize
from cnnlab.errors import CnnlabError
from cnnlab.models import list_models, model_entrypoint
from cnnlab.runs import load_run
from cnnlab.train import TrainConfig
from cnnlab.train.config import DEFAULT_BATCH_SIZE
from cnnlab.train.reuse import check_reusable, fit_or_reuse

__all__ = ["CompareError", "LATENCY_BATCHES", "busy_warning", "compare_layers", "compare_models", "format_compare",
           "format_layers", "measure_latency", "plot_compare"]


class CompareError(CnnlabError):
    """A bad argument to a comparison; the message names the value and what would be valid."""


# --------------------------------------------------------------------------------------------------
# models


def _check_names(names: Sequence[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    names = list(names)
    registered = list_models()
    if not names:
        raise CompareError(f"give one or more models to compare; registered: {', '.join(registered)}")
    for n in names:
        if n not in registered:
            raise CompareError(f"unknown model {n!r}; registered: {', '.join(registered)}")
    seen: set[str] = set()
    for n in names:
        if n in seen:
            raise CompareError(f"model {n!r} is given twice; each model is one row")
        seen.add(n)
    return names


def compare_models(
    names: Sequence[str],
    *,
    epochs: int | None = None,
    subset: int | None = None,
    out: str | os.PathLike = "runs/compare",
    overrides: dict[str, Any] | None = None,
    threads: int = 2,
    overwrite: bool = False,
    latency_repeats: int | None = None,
    channels_last: bool | None = None,
    log: Callable[[str], None] = print,
    progress: bool | None = None,
    remeasure: bool = True,
    replace_stale: bool = False,
) -> dict[str, Any]:
    """Train each registered model in ``names`` with one recipe and measure it; write
    ``out/compare.json``, ``out/compare.md`` and ``out/compare.png``; return the comparison.

    The recipe is ``TrainConfig(model=name, epochs=epochs, subset=subset, **overrides)`` for every
    model (``epochs`` None: the TrainConfig default), trained into ``out/<name>``. A finished run there
    made with the same recipe is reused and an unfinished one resumed; one made with another recipe is
    an error (``overwrite`` trains it again; ``replace_stale`` trains only those again). Every name and the
    recipe are checked before anything is trained.

    ``threads``: torch's intra-op threads for the whole call, training and latency (restored after).
    A reused run keeps the time per epoch it was trained in; its thread count is in ``train_threads``.
    ``channels_last``: the memory format latency is measured in (default: the one the run trained in,
    see :func:`measure_latency`). ``latency_repeats``: timed passes per latency (default adaptive).
    ``remeasure`` False: when every run is reused and ``out/compare.json`` holds these names with this
    recipe, that comparison is returned as it stands (its latencies from when it was written; its rows'
    ``how`` becomes ``reused``) instead of timing every model again.

    Each row: ``name``, ``description``, ``params`` (trainable), ``macs`` (one sample, at the size the
    model was trained on), ``latency_ms_b1`` / ``latency_ms_b256`` (median; ``latency_min_ms_*`` the
    best), ``latency_repeats_*``, ``threads``, ``images_per_s_b256``, ``train_seconds_per_epoch``
    (training steps only, as ``fit`` records them; validation excluded), ``train_threads``,
    ``test_accuracy``, ``epochs``, ``precision`` (of training; latency is always float32),
    ``run``, ``how`` (trained, resumed or reused), and against the first model: ``params_ratio``,
    ``macs_ratio`` and ``speedup_b256`` (its b256 latency / this one's: > 1 is faster).
    """
    names = _check_names(names)
    check_threads(threads)
    overrides = dict(overrides or {})
    for key in ("model", "epochs", "subset"):
        if key in overrides:
            raise CompareError(f"overrides may not set {key!r}; it is an argument of compare_models "
                               "(the model is each name in turn)")
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "epochs", "subset"}
    for key in overrides:
        if key not in fields:
            raise CompareError(f"unknown recipe setting {key!r}; valid: {', '.join(sorted(fields))}")
    base = TrainConfig(**overrides, subset=subset, **({} if epochs is None else {"epochs": epochs}))
    cfgs = [replace(base, model=n).validate() for n in names]  # a bad setting fails here, for every model

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CompareError(f"--out {out}: exists and is not a directory")
    if out.is_dir() and os.listdir(out):
        claim_output(out, COMPARE).release()  # a folder that is not cnnlab's fails here, before any check below
    for cfg in cfgs:  # a run of another recipe would make its row lie: refuse before training anything
        if not overwrite and not replace_stale:
            check_reusable(cfg, out / cfg.model)

    with claim_output(out, COMPARE):  # one writer; a folder of cnnlab's
        threads_before = torch.get_num_threads()
        rows: list[dict[str, Any]] = []
        recipe = {k: v for k, v in cfgs[0].to_dict().items() if k != "model"}
        try:
            torch.set_num_threads(threads)
            fitted = [(cfg, *fit_or_reuse(replace(cfg), out / cfg.model, overwrite=overwrite,
                                          replace_stale=replace_stale, log=log, progress=progress)) for cfg in cfgs]
            if not remeasure and all(how == "reused" for _, _, how in fitted):
                stored = _stored_comparison(out, [cfg.model for cfg in cfgs], recipe)
                if stored is not None:
                    log(f"reused {out / 'compare.json'} (measured {stored.get('date', '?')})")
                    return stored
            warning = busy_warning(threads)  # what other processes do now (busy_cpus): our training is not counted
            if warning:
                log(f"warning: {warning}")
            for cfg, metrics, how in fitted:
                rows.append(_measure_run(cfg.model, out / cfg.model, metrics, how, threads, latency_repeats,
                                         channels_last, log))
        finally:
            torch.set_num_threads(threads_before)

        first = rows[0]
        for r in rows:
            r["params_ratio"] = r["params"] / first["params"] if first["params"] else None
            r["macs_ratio"] = r["macs"] / first["macs"] if first["macs"] else None
            r["speedup_b256"] = first["latency_ms_b256"] / r["latency_ms_b256"]
        info = machine_info()
        info["torch_threads"] = threads
        info["busy_warning"] = warning
        result = {"rows": rows, "recipe": recipe, "threads": threads, "latency_batches": list(LATENCY_BATCHES),
                  "machine": info, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        atomic_write_json(out / "compare.json", result)
        atomic_write_text(out / "compare.md", format_compare(result, markdown=True))
        plot_compare(result, out / "compare.png")
        log(f"wrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare.png'}")
        return result


def _stored_comparison(out: Path, names: list[str], recipe: dict[str, Any]) -> dict[str, Any] | None:
    """``out/compare.json`` when it compares exactly ``names`` with ``recipe``, its rows marked reused; else None."""
    try:
        stored = json.loads((out / "compare.json").read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(stored, dict) or stored.get("recipe") != json.loads(json.dumps(recipe))
            or [r.get("name") for r in stored.get("rows", [])] != names):
        return None
    for r in stored["rows"]:
        r["how"] = "reused"
    return stored


def _measure_run(name: str, path: Path, metrics: dict[str, Any], how: str, threads: int, repeats: int | None,
                 channels_last: bool | None, log: Callable[[str], None]) -> dict[str, Any]:
    loaded = load_run(path)  # the saved model, rebuilt: the same for trained, resumed and reused runs
    model = loaded.model.float()
    size = loaded.input_size
    s = summarize(model, size, model_name=name)
    config = loaded.run.read_json("config.json")
    if channels_last is None:
        channels_last = config.get("resolved", {}).get("channels_last")
    lat = {b: measure_latency(model, size, b, repeats=repeats, threads=threads, channels_last=channels_last)
           for b in LATENCY_BATCHES}
    epochs = int(metrics["epochs"])
    doc = (model_entrypoint(name).__doc__ or "").strip().splitlines()
    row = {
        "name": name,
        "description": doc[0] if doc else "",
        "input_size": list(size),
        "params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "macs": int(s.total_macs),
        "threads": lat[1]["threads"],
        "channels_last": lat[1]["channels_last"],
    }
    for b, m in lat.items():
        row[f"latency_ms_b{b}"] = m["median_ms"]
        row[f"latency_min_ms_b{b}"] = m["min_ms"]
        row[f"latency_repeats_b{b}"] = m["repeats"]
    big = LATENCY_BATCHES[-1]
    row |= {
        f"images_per_s_b{big}": 1000 * big / row[f"latency_ms_b{big}"],
        "train_seconds_per_epoch": float(metrics["train_seconds"]) / max(epochs, 1),
        "train_threads": config.get("machine", {}).get("torch_threads"),
        "test_accuracy": float(metrics["test_accuracy"]),
        "epochs": epochs,
        "precision": metrics.get("precision"),
        "run": str(path),
        "how": how,
    }
    log(f"{name}: {row['params']:,} params, {_si(row['macs'])}MACs, latency {row['latency_ms_b1']:.2f} ms (b1) "
        f"{row[f'latency_ms_b{big}']:.1f} ms (b{big}) on {_n(row['threads'], 'thread')}, "
        f"test accuracy {100 * row['test_accuracy']:.2f}%")
    return row


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _si(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"


def _table(head: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in body]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    fmt = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*head), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body]


def _ratio(v: float | None) -> str:
    return "" if v is None else f"{v:.3g}x"


def format_compare(result: dict[str, Any], markdown: bool = False) -> str:
    """The comparison as a table (plain text, or markdown with ``markdown``), recipe and machine above."""
    rows, t = result["rows"], result["threads"]
    big = result.get("latency_batches", LATENCY_BATCHES)[-1]
    first = rows[0]["name"]
    head = ["model", "params", "MACs", f"ms b1 ({t} thr)", f"ms b{big} ({t} thr)", "train s/epoch", "test acc",
            f"params vs {first}", f"MACs vs {first}", f"speed-up b{big}"]
    body = [[r["name"], f"{r['params']:,}", _si(r["macs"]), f"{r['latency_ms_b1']:.3f}",
             f"{r[f'latency_ms_b{big}']:.2f}", f"{r['train_seconds_per_epoch']:.3g}",
             f"{100 * r['test_accuracy']:.2f}%", _ratio(r.get("params_ratio")), _ratio(r.get("macs_ratio")),
             _ratio(r.get(f"speedup_b{big}"))] for r in rows]
    rc, m = result["recipe"], result["machine"]
    recipe = (f"{_n(rc['epochs'], 'epoch')}, {rc['dataset']}" + (f" (first {rc['subset']:,} training images)"
              if rc.get("subset") else "") + f", batch {rc['batch_size'] or DEFAULT_BATCH_SIZE}, "
              f"{rc['optimizer']} lr {rc['lr']:g}, {rc['schedule']} schedule, seed {rc['seed']}")
    formats = sorted({"channels-last" if r.get("channels_last") else "contiguous (NCHW)" for r in rows})
    machine = (f"{m.get('cpu')}, torch {m.get('torch')}, {_n(t, 'thread')}; latency: float32 CPU forward pass of a "
               f"whole batch, {' / '.join(formats)}, median of repeats (ms)")
    title = "Comparing models trained with one recipe"
    if markdown:
        lines = [f"# {title}", "", f"Recipe: {recipe}.", "", f"Machine: {machine}. {result.get('date', '')}", ""]
        return "\n".join(lines + _table(head, body, True)) + "\n"
    return "\n".join([title, f"recipe:  {recipe}", f"machine: {machine}", ""] + _table(head, body, False))


def plot_compare(result: dict[str, Any], path: str | os.PathLike) -> None:
    """Two scatter panels, each model a labelled point: test accuracy against MACs (log scale) and
    against the measured latency at the large batch (log scale)."""
    rows, t = result["rows"], result["threads"]
    big = result.get("latency_batches", LATENCY_BATCHES)[-1]
    fig = figure(figsize=(11, 4.4), dpi=110)
    acc = [100 * r["test_accuracy"] for r in rows]
    panels = (([r["macs"] for r in rows], "MACs per image (log)", "accuracy vs MACs"),
              ([r[f"latency_ms_b{big}"] for r in rows], f"latency at batch {big}, ms ({_n(t, 'CPU thread')}, log)",
               "accuracy vs measured latency"))
    for i, (xs, xlabel, title) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(xs, acc, s=36, zorder=3)
        for x, y, r in zip(xs, acc, rows):
            ax.annotate(r["name"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        if all(x > 0 for x in xs):
            ax.set_xscale("log")
        ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=title)
        ax.grid(alpha=0.3, which="both")
        ax.margins(x=0.15, y=0.12)
    fig.suptitle(f"{_n(len(rows), 'model')}, one recipe ({_n(result['recipe']['epochs'], 'epoch')})", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------------------
# layers


def _layer_candidates(cin: int, cout: int) -> list[tuple[str, str, Callable[[], nn.Module]]]:
    return [
        ("conv3x3", f"standard nn.Conv2d({cin}, {cout}, 3, padding=1)",
         lambda: nn.Conv2d(cin, cout, 3, padding=1)),
        ("depthwise-separable", f"DepthwiseSeparableConv2d({cin}, {cout}): depthwise 3x3, then pointwise 1x1 "
         "(MobileNet)", lambda: L.DepthwiseSeparableConv2d(cin, cout)),
        ("depthwise", f"DepthwiseConv2d({cin}) alone: one 3x3 filter per channel, no mixing ({cin} out)",
         lambda: L.DepthwiseConv2d(cin)),
        ("pointwise", f"PointwiseConv2d({cin}, {cout}) alone: 1x1, mixing only",
         lambda: L.PointwiseConv2d(cin, cout)),
        ("grouped-g2", f"GroupedConv2d({cin}, {cout}, 3, groups=2)", lambda: L.GroupedConv2d(cin, cout, 3, groups=2)),
        ("grouped-g4", f"GroupedConv2d({cin}, {cout}, 3, groups=4)", lambda: L.GroupedConv2d(cin, cout, 3, groups=4)),
        ("shuffle-unit", f"PointwiseConv2d({cin}, {cout}) + ShuffleUnit({cout}, {cout}, groups=4) (ShuffleNet v1; "
         "its residual needs in == out, hence the 1x1 first)",
         lambda: nn.Sequential(L.PointwiseConv2d(cin, cout), L.ShuffleUnit(cout, cout, groups=4))),
        ("sparse-k4", f"PredefinedSparseConv2d({cin}, {cout}, 3, padding=1, k=4): 4 of 9 kernel positions, "
         "zeros skipped (regrouped into dense sub-convolutions)",
         lambda: L.PredefinedSparseConv2d(cin, cout, 3, padding=1, k=4)),
        ("sparse-k4-masked", "the same sparse pattern run as a masked dense conv (mode='masked'): the zeros are "
         "multiplied", lambda: L.PredefinedSparseConv2d(cin, cout, 3, padding=1, k=4, mode="masked")),
    ]


def _effective_params(module: nn.Module, input_size: tuple[int, ...]) -> int:
    """Parameter elements that can change the output: those with a non-zero gradient for a random
    input. Equal to the parameter count except for masked layers (a pre-defined sparse conv that keeps
    a dense weight and a fixed mask), where it is the count the lecture's arithmetic means."""
    saved = [(p, p.grad) for p in module.parameters()]
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        for p, _ in saved:
            p.grad = None
        g = torch.Generator().manual_seed(1)
        x = torch.randn(1, *input_size, generator=g)
        y = module(x)
        (y * torch.randn(y.shape, generator=g)).sum().backward()
        return int(sum(int((p.grad != 0).sum()) for p, _ in saved if p.grad is not None))
    finally:
        for p, grad in saved:
            p.grad = grad
        for m, training in modes:
            m.training = training


def compare_layers(
    in_channels: int = 16,
    *,
    out_channels: int = 32,
    size: int = 64,
    batch: int = 32,
    threads: int | None = 2,
    repeats: int | None = None,
    budget_s: float = 0.5,
    channels_last: bool | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The lecture's single-layer comparison: ways to map ``in_channels`` to ``out_channels`` channels
    of a ``size`` x ``size`` map, by parameters, MACs and measured latency.

    ``out``: a folder to write the rows to, as ``layers.json`` and ``layers.md`` (:func:`format_layers`),
    each atomically; it is claimed as a comparison output (``compare.json`` may be beside them) after the
    arguments are checked and before anything is measured; a call that fails before writing leaves no
    folder it created. None: nothing is written. ``log``: where a warning that the machine is too busy for ``threads`` goes
    (:func:`busy_warning`; checked after the claim, before measuring); None: it is not checked.

    With the defaults (16 -> 32, 64x64): a standard 3x3 conv has 16*32*9 + 32 = 4,640 parameters and
    16*32*9*64*64 = 18,874,368 MACs (bias adds not counted); the depthwise-separable one 16*9 +
    16*32 + 32 = 688 parameters and 16*9*64*64 + 16*32*64*64 = 2,686,976 MACs.

    Each row: ``name``, ``description``, ``output_shape`` (one sample), ``params``,
    ``effective_params`` (parameter elements with a non-zero gradient for a random input: fewer than
    ``params`` only for a masked layer), ``macs`` (one sample), ``latency_ms_b1``,
    ``latency_ms_batch`` (at ``batch``; ``batch`` is in the row), ``threads``, ``channels_last`` (the
    memory format measured in; default channels-last, see :func:`measure_latency`), and against the standard
    conv: ``params_ratio``, ``macs_ratio``, ``speedup_batch`` (> 1 is faster). A layer the channel
    arithmetic does not allow (e.g. 2 groups of 3 channels) or that does not exist is a row with
    ``note`` saying why and ``None`` for the numbers.
    """
    for name, v in (("--in-channels", in_channels), ("--out-channels", out_channels), ("--size", size),
                    ("--batch", batch)):
        check_positive(name, v)
    check_threads(threads)
    worst = batch * max(in_channels, out_channels) * size * size * 4 * 3  # input, output, one intermediate
    if worst > 4 * 2**30:
        raise CompareError(f"--batch {batch} x {max(in_channels, out_channels)} channels x {size}x{size} needs "
                           f"about {worst / 2**30:.0f} GiB per pass; use a smaller --batch or --size")
    # one writer, a folder of cnnlab's, claimed before measuring; an error releases it as failed
    claim = claim_output(out, COMPARE) if out is not None else None
    with claim if claim is not None else contextlib.nullcontext():
        warning = busy_warning(threads) if log is not None else None
        if warning:
            log(f"warning: {warning}")
        rows = _layer_rows(in_channels, out_channels, size, batch, threads, repeats, budget_s, channels_last)
        if claim is not None:
            atomic_write_json(claim.path / "layers.json", rows)
            atomic_write_text(claim.path / "layers.md", format_layers(rows, markdown=True))
    return rows


def _layer_rows(in_channels: int, out_channels: int, size: int, batch: int, threads: int | None,
                repeats: int | None, budget_s: float, channels_last: bool | None) -> list[dict[str, Any]]:
    input_size = (in_channels, size, size)
    rows: list[dict[str, Any]] = []
    for name, description, build in _layer_candidates(in_channels, out_channels):
        row: dict[str, Any] = {"name": name, "description": description, "batch": batch}
        try:
            with torch.random.fork_rng(devices=[]):  # seeded weights, and the caller's RNG left alone
                torch.manual_seed(0)
                module = build()
        except ValueError as e:
            row |= {"output_shape": None, "input_activations": None, "output_activations": None,
                    "dense_equivalent_params": None, "params": None, "effective_params": None, "macs": None,
                    "latency_ms_b1": None, "latency_ms_batch": None, "threads": None, "channels_last": None,
                    "note": f"skipped: {str(e).splitlines()[0]}"}
            rows.append(row)
            continue
        module.eval()
        s = summarize(module, input_size, model_name=name)
        with torch.inference_mode():
            out_shape = list(module(torch.zeros(1, *input_size)).shape[1:])
        timing = {"repeats": repeats, "threads": threads, "budget_s": budget_s, "channels_last": channels_last}
        b1 = measure_latency(module, input_size, 1, **timing)
        bn = measure_latency(module, input_size, batch, **timing)
        row |= {"output_shape": out_shape, "input_activations": math.prod(input_size),
                "output_activations": math.prod(out_shape), "dense_equivalent_params": dense_equivalent(input_size,
                                                                                                       out_shape),
                "params": s.total_params,
                "effective_params": _effective_params(module, input_size), "macs": int(s.total_macs),
                "latency_ms_b1": b1["median_ms"], "latency_ms_batch": bn["median_ms"], "threads": bn["threads"],
                "channels_last": bn["channels_last"], "note": None}
        rows.append(row)
    ref = rows[0]
    for r in rows:
        ok = r["params"] is not None
        r["params_ratio"] = r["params"] / ref["params"] if ok else None
        r["macs_ratio"] = r["macs"] / ref["macs"] if ok else None
        r["speedup_batch"] = ref["latency_ms_batch"] / r["latency_ms_batch"] if ok else None
    return rows


def format_layers(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    """The layer comparison as a table, skipped layers listed below it with the reason."""
    done = [r for r in rows if r["params"] is not None]
    batch = rows[0]["batch"]
    threads = done[0]["threads"] if done else None
    head = ["layer", "output", "params", "effective", "MACs", f"ms b1 ({threads} thr)",
            f"ms b{batch} ({threads} thr)", "params vs conv", "MACs vs conv", f"speed-up b{batch}"]
    body = [[r["name"], "x".join(map(str, r["output_shape"] or [])), f"{r['params']:,}", f"{r['effective_params']:,}",
             f"{r['macs']:,}", f"{r['latency_ms_b1']:.3f}", f"{r['latency_ms_batch']:.2f}", _ratio(r["params_ratio"]),
             _ratio(r["macs_ratio"]), _ratio(r["speedup_batch"])] for r in done]
    if batch == 1:  # the batch column would repeat the b1 one
        head, body = head[:6] + head[7:], [b[:6] + b[7:] for b in body]
    lines = _table(head, body, markdown)
    lines += [""] + [f"{r['name']}: {r['description']}" for r in done]
    if done:
        r = done[0]
        lines += ["", f"{r['name']}: {r['input_activations']:,} input and {r['output_activations']:,} output activations "
                      f"per sample; a dense layer with the same activations would have "
                      f"{r['input_activations']:,} x {r['output_activations']:,} + {r['output_activations']:,} = "
                      f"{r['dense_equivalent_params']:,} parameters ({r['dense_equivalent_params'] / r['params']:,.0f}x "
                      f"its {r['params']:,})"]
    lines += [f"{r['name']}: {r['note']}" for r in rows if r["params"] is None]
    fmt = {True: "channels-last", False: "contiguous (NCHW)"}.get(done[0]["channels_last"] if done else None, "")
    lines += ["", f"MACs per sample, bias adds not counted; latency: float32 CPU forward pass, {fmt}, median of "
                  "repeats (ms)."]
    return "\n".join(lines) + ("\n" if markdown else "")
