"""Benchmark: cnnlab's NumPy reference conv2d (forward + explicit backward) against ``F.conv2d``.

The issue's target: on (64, 32 -> 32 channels, 28x28, 3x3, padding 1), float32, the reference
forward+backward within 10x of PyTorch's on the same CPU. Both run in this process, alternating,
and the median of ``--repeats`` timings is reported (after warm-up).

    python bench/conv_reference.py                 # the issue's configuration
    python bench/conv_reference.py --repeats 3     # quicker

Writes ``bench/out/conv_reference.json`` and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnlab import ops
from cnnlab.train.rundir import machine_info

CONFIGS = {
    "issue (64, 32->32, 28x28, 3x3, pad 1)": dict(n=64, c=32, o=32, size=28, k=3, stride=1, padding=1, groups=1),
    "stride 2": dict(n=64, c=32, o=32, size=28, k=3, stride=2, padding=1, groups=1),
    "depthwise (groups 32)": dict(n=64, c=32, o=32, size=28, k=3, stride=1, padding=1, groups=32),
}


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(cfg: dict, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((cfg["n"], cfg["c"], cfg["size"], cfg["size"]), dtype=np.float32)
    w = rng.standard_normal((cfg["o"], cfg["c"] // cfg["groups"], cfg["k"], cfg["k"]), dtype=np.float32) * 0.1
    b = rng.standard_normal(cfg["o"], dtype=np.float32)
    args = (cfg["stride"], cfg["padding"], 1, cfg["groups"])
    go = np.ones_like(ops.conv2d(x, w, b, *args))

    def reference():
        ops.conv2d(x, w, b, *args)
        ops.conv2d_backward(x, w, go, *args)

    xt = torch.from_numpy(x).requires_grad_()
    wt = torch.from_numpy(w).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    got = torch.from_numpy(go)

    def pytorch():
        y = F.conv2d(xt, wt, bt, *args)
        y.backward(got)

    # correctness on the benchmarked configuration itself
    y = F.conv2d(xt, wt, bt, *args)
    y.backward(got)
    gx, gw, gb = ops.conv2d_backward(x, w, go, *args)
    err = max(float(np.abs(ops.conv2d(x, w, b, *args) - y.detach().numpy()).max()),
              float(np.abs(gx - xt.grad.numpy()).max()) / max(1.0, float(np.abs(xt.grad.numpy()).max())),
              float(np.abs(gw - wt.grad.numpy()).max()) / max(1.0, float(np.abs(wt.grad.numpy()).max())))
    t_ref = _median_seconds(reference, repeats)
    t_torch = _median_seconds(pytorch, repeats)
    return {"config": cfg, "reference_s": t_ref, "pytorch_s": t_torch, "ratio": t_ref / t_torch,
            "max_error_relative": err}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="bench/out/conv_reference.json")
    a = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M")
    rows = {name: measure(cfg, a.repeats) for name, cfg in CONFIGS.items()}
    result = {"date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": machine_info(torch.device("cpu")) | {"node": platform.node()},
              "numpy": np.__version__, "threads": torch.get_num_threads(), "results": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n### bench/conv_reference.py, {started}, {result['machine']['cpu']}, {torch.get_num_threads()} "
          f"threads, torch {torch.__version__}, numpy {np.__version__}\n")
    print("| configuration (float32, forward + backward) | reference (NumPy) | `F.conv2d` | ratio | max error |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {1000 * r['reference_s']:.1f} ms | {1000 * r['pytorch_s']:.1f} ms | "
              f"{r['ratio']:.1f}x | {r['max_error_relative']:.1e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
