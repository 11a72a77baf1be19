"""The compression targets of issue 7 on the trained fmnist-cnn, measured.

    .venv/bin/python bench/compress_fmnist.py [--run runs/experiment-fmnist/fmnist-cnn] [--out runs/compress-fmnist]
        [--configs all|targets] [--compress-threads N]

Phase 1 compresses (``cnnlab.compress.compress_sweep`` without latency; finished rows are reused).
Phase 2 measures CPU latency (2 threads, batch 1 and 256) of every row and of the float model in
alternating rounds, keeping each model's best median over the rounds, so that a drift in the
machine's load hits all models alike. Writes ``bench/out/compress_fmnist.json``, and the sweep's
``sweep.json`` / ``sweep.md`` / ``sweep.png`` in ``--out`` with those latencies.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


from cnnlab._io import atomic_write_json, atomic_write_text
from cnnlab.compare import busy_warning, measure_latency
from cnnlab.compress.sweep import SWEEP, compress_sweep, format_sweep, plot_sweep
from cnnlab.train import load_run
from cnnlab.train.rundir import machine_info

#: One row per target of the issue: int8; 90% unstructured; 4-bit sharing; INQ 5-bit; BWN; structured >= 2x MACs.
TARGETS = [
    ("quantize", {}),
    ("prune", {"sparsity": 0.9}),
    ("prune", {"sparsity": 0.9, "steps": 3}),
    ("cluster", {"bits": 4}),
    ("inq", {"bits": 5}),
    ("binarize", {"mode": "bwn"}),
    ("binarize", {"mode": "xnor"}),
    ("prune", {"sparsity": 0.375, "structured": True}),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="runs/experiment-fmnist/fmnist-cnn")
    p.add_argument("--out", default="runs/compress-fmnist")
    p.add_argument("--configs", choices=("targets", "all"), default="targets")
    p.add_argument("--threads", type=int, default=2, help="latency threads (2)")
    p.add_argument("--compress-threads", type=int, default=2, help="threads while compressing and fine-tuning")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    configs = TARGETS if a.configs == "targets" else SWEEP
    t0 = time.time()
    result = compress_sweep(a.run, a.out, configs=configs, threads=a.compress_threads, measure=False,
                            log=lambda s: print(s, flush=True))
    compress_s = time.time() - t0

    warning = busy_warning(a.threads)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    base = load_run(a.run)
    cl = bool(base.config.channels_last)
    size = (int(base.data.get("in_channels", 1)), *map(int, base.data.get("image_size", (28, 28))))
    models = {"float32": (base.model.float().eval(), cl)}
    for r in result["rows"]:
        loaded = load_run(Path(a.out) / r["name"])
        models[r["name"]] = (loaded.model, bool(loaded.config.channels_last))
    best: dict[str, dict[int, float]] = {k: {} for k in models}
    for _ in range(a.rounds):
        for name, (model, channels_last) in models.items():
            for b in (1, 256):
                m = measure_latency(model, size, b, threads=a.threads, channels_last=channels_last)
                best[name][b] = min(best[name].get(b, float("inf")), m["median_ms"])
    for r in result["rows"]:
        r["latency_ms_b1"], r["latency_ms_b256"] = best[r["name"]][1], best[r["name"]][256]
        r["baseline_latency_ms_b1"], r["baseline_latency_ms_b256"] = best["float32"][1], best["float32"][256]
        r["speedup_b256"] = best["float32"][256] / r["latency_ms_b256"]
        r["threads"] = a.threads
    result["threads"] = a.threads
    out = Path(a.out)
    atomic_write_json(out / "sweep.json", result)
    atomic_write_text(out / "sweep.md", format_sweep(result, markdown=True) + "\n")
    plot_sweep(result, out / "sweep.png")
    record = {"command": " ".join([".venv/bin/python", *sys.argv]), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine_info(), "busy_warning": warning, "compress_seconds": compress_s,
              "latency_rounds": a.rounds, "rows": result["rows"]}
    atomic_write_json("bench/out/compress_fmnist.json", record)
    print(format_sweep(result, markdown=True))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    sys.exit(main())
