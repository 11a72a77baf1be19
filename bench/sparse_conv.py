"""Benchmark: PredefinedSparseConv2d's zero-skipping paths against the masked dense convolution.

For the convolutions of the lecture's Fashion-MNIST CNN (batch 256, 32->32 channels at 28x28 and 64->64
at 14x14, 3x3, padding 1, float32) and k = 2, 4, 6 kept positions of 9, it times

- ``dense``: a plain ``nn.Conv2d`` (the dense counterpart),
- ``masked``: ``PredefinedSparseConv2d(mode="masked")``, i.e. ``F.conv2d(x, weight * mask)``,
- ``shifted``: ``mode="regrouped"`` with the default rectangle patterns (per-channel shift + one dense
  ``bh x bw`` convolution),
- ``im2col``: ``mode="regrouped"`` with ``kind="cyclic"`` patterns (sparse im2col + one 1x1 convolution),

in inference (eval, ``torch.no_grad``) and training (forward + backward, with input and weight
gradients), for NCHW and channels-last inputs. Each method runs in blocks of calls, in three rounds with
the order rotated (see :func:`time_methods`); the table shows medians of all calls. Each configuration
is first checked: every path's output against the masked ``nn.Conv2d``.

    python bench/sparse_conv.py                         # 2 threads, 15 timed calls per method and case
    python bench/sparse_conv.py --threads 1 --repeats 6

Writes ``bench/out/sparse_conv.json`` (machine, load average before and after, every timing) and prints
a markdown table. On a machine that other work keeps busy, multi-threaded timings mostly measure waiting
for a core (each parallel region waits for both threads): compare the load average, and prefer a
quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

from cnnlab.layers import PredefinedSparseConv2d
from cnnlab.train.rundir import machine_info

SHAPES = {"32->32, 28x28": (32, 28), "64->64, 14x14": (64, 14)}
METHODS = ("dense", "masked", "shifted", "im2col")


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def build(channels: int, k: int) -> dict[str, nn.Module]:
    torch.manual_seed(0)
    mods = {"dense": nn.Conv2d(channels, channels, 3, padding=1),
            "masked": PredefinedSparseConv2d(channels, channels, 3, padding=1, k=k, kind="shifted", mode="masked"),
            "shifted": PredefinedSparseConv2d(channels, channels, 3, padding=1, k=k, kind="shifted",
                                              mode="regrouped"),
            "im2col": PredefinedSparseConv2d(channels, channels, 3, padding=1, k=k, kind="cyclic",
                                             mode="regrouped")}
    return mods


def check(mods: dict[str, nn.Module], x: torch.Tensor) -> dict[str, float]:
    """Largest difference of each path's output from the masked nn.Conv2d's (float32 rounding)."""
    errors = {}
    with torch.no_grad():
        for name in ("masked", "shifted", "im2col"):
            m = mods[name]
            ref = nn.Conv2d(m.in_channels, m.out_channels, 3, padding=1)
            ref.weight.copy_(m.weight * m.mask)
            ref.bias.copy_(m.bias)
            errors[name] = float((m(x) - ref(x)).abs().max())
    return errors


def time_methods(mods: dict[str, nn.Module], x: torch.Tensor, train: bool, repeats: int,
                 rounds: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each method: ``rounds`` rounds, in each a block of calls per method (after one
    warm-up call), the method order rotating between rounds. Blocks, because interleaving single calls
    let one method's allocations change the next one's cost (tensors of ~25 MB sit at glibc's mmap
    threshold, and a fresh mapping costs ~10 ms of page faults here); rounds, so that a change of machine
    load hits every method alike."""
    if train:
        x = x.detach().clone().requires_grad_()

    def call(m: nn.Module) -> None:
        if train:
            m.zero_grad(set_to_none=True)
            x.grad = None
            m(x).sum().backward()
        else:
            with torch.no_grad():
                m(x)

    for m in mods.values():
        m.train(train)
        call(m)  # first call: oneDNN primitives, index plans
    names = list(mods)
    times: dict[str, list[float]] = {name: [] for name in names}
    per_block = max(1, -(-repeats // rounds))
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            call(mods[name])  # warm-up
            for _ in range(per_block):
                t0 = time.perf_counter()
                call(mods[name])
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--repeats", type=int, default=15, help="timed calls per method and configuration")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--ks", default="2,4,6", help="kept positions of 9, comma-separated (default 2,4,6)")
    ap.add_argument("--out", default="bench/out/sparse_conv.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ks = [int(v) for v in a.ks.split(",")]
    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = _loadavg()
    rows = []
    for shape, (channels, size) in SHAPES.items():
        for k in ks:
            mods = build(channels, k)
            x0 = torch.randn(a.batch, channels, size, size)
            for layout in ("nchw", "channels_last"):
                x = x0 if layout == "nchw" else x0.contiguous(memory_format=torch.channels_last)
                errors = check(mods, x)
                for train in (False, True):
                    t = time_methods(mods, x, train, a.repeats)
                    med = {name: statistics.median(v) for name, v in t.items()}
                    probe = x.detach().requires_grad_(train)
                    with torch.set_grad_enabled(train):
                        auto = PredefinedSparseConv2d(channels, channels, 3, padding=1, k=k).train(train).execution(
                            probe)
                    rows.append({"shape": shape, "k": k, "layout": layout, "pass": "train" if train else "eval",
                                 "median_s": med, "times_s": t, "max_error": errors,
                                 "auto_default_kind": auto, "loadavg_after": _loadavg()})
                    r = rows[-1]
                    print(f"{shape} k={k} {layout} {r['pass']}: " + ", ".join(
                        f"{n} {1000 * med[n]:.1f} ms" for n in METHODS) + f" (load {r['loadavg_after'][0]:.2f})",
                        file=sys.stderr, flush=True)
    result = {"date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": machine_info(torch.device("cpu")) | {"node": platform.node()},
              "threads": torch.get_num_threads(), "batch": a.batch, "repeats": a.repeats,
              "loadavg_before": load_before, "loadavg_after": _loadavg(), "pid": os.getpid(), "results": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    load = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "n/a"  # noqa: E731
    print(f"\n### bench/sparse_conv.py, {started}, {result['machine']['cpu']}, {a.threads} threads, "
          f"torch {torch.__version__}, batch {a.batch}, float32, median of {a.repeats}; load average "
          f"{load(load_before)} before, {load(result['loadavg_after'])} after\n")
    print("| conv | k | layout | pass | dense `nn.Conv2d` | masked | regrouped shifted | regrouped cyclic (im2col) "
          "| shifted / masked | im2col / masked | auto (default kind) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["median_s"]
        print(f"| {r['shape']} | {r['k']}/9 | {r['layout']} | {r['pass']} | {1000 * m['dense']:.1f} ms | "
              f"{1000 * m['masked']:.1f} ms | {1000 * m['shifted']:.1f} ms | {1000 * m['im2col']:.1f} ms | "
              f"{m['shifted'] / m['masked']:.2f} | {m['im2col'] / m['masked']:.2f} | {r['auto_default_kind']} |")
    worst = max(e for r in rows for e in r["max_error"].values())
    print(f"\nLargest difference from the masked nn.Conv2d over all outputs: {worst:.1e} (float32).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
