"""Benchmark: `cnnlab summary` on every torchvision classification model and every cnnlab model.

For each model: the time to build it (random weights, nothing downloaded) and the time of
``summarize`` (trace + MACs + receptive fields) at the model's own input size; whether it worked;
parameters and MACs (checked against ``torch.utils.flop_counter`` on the same input). The issue's
target: ``tv:resnet50`` at 3x224x224 in under 3 s on a 2-core CPU.

    python bench/summary_zoo.py                 # everything (a few minutes; the largest models need ~8 GB)
    python bench/summary_zoo.py --only tv:resnet50,tv:vgg16

Writes ``bench/out/summary_zoo.json`` and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from cnnlab.analysis import summarize
from cnnlab.models import create_model, list_models, model_info
from cnnlab.train.rundir import machine_info


def one(name: str) -> dict:
    size = model_info(name).input_size
    t0 = time.perf_counter()
    model = create_model(name)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = summarize(model, size, model_name=name)
    seconds = time.perf_counter() - t0
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model.eval()(torch.randn(1, *size))
    rf_layers = sum(1 for r in s.rows if r.receptive_field_dict() is not None)
    return {"model": name, "input": list(size), "build_s": built, "summary_s": seconds, "params": s.total_params,
            "macs": s.total_macs, "flop_counter_macs": fc.get_total_flops() // 2, "rows": len(s.rows),
            "rows_with_spatial_rf": rf_layers, "ok": True}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", help="comma-separated model names")
    ap.add_argument("--out", default="bench/out/summary_zoo.json")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list_models(zoo=True)
    cli = [str(Path(sys.executable).with_name("cnnlab")), "summary", "tv:resnet50"]
    t0 = time.perf_counter()
    subprocess.run(cli, check=True, capture_output=True)
    cli_s = time.perf_counter() - t0
    print(f"`cnnlab summary tv:resnet50` (a new process: imports, build, trace): {cli_s:.2f} s", flush=True)
    results = []
    for name in names:
        try:
            r = one(name)
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            r = {"model": name, "ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
        results.append(r)
        print(json.dumps(r), flush=True)
        gc.collect()
    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "machine": machine_info(torch.device("cpu")), "cli_resnet50_s": cli_s, "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    ok = [r for r in results if r["ok"]]
    print(f"\n`cnnlab summary tv:resnet50` wall clock: {cli_s:.2f} s")
    print(f"{len(ok)}/{len(results)} models summarised; MACs equal to flop_counter's for "
          f"{sum(r['macs'] == r['flop_counter_macs'] for r in ok)}")
    print("\n| model | input | params | MACs | build | summary |\n|---|---|---|---|---|---|")
    for r in ok:
        print(f"| {r['model']} | {'x'.join(map(str, r['input']))} | {r['params']:,} | {r['macs'] / 1e9:.2f} G | "
              f"{r['build_s']:.2f} s | {r['summary_s']:.2f} s |")
    for r in results:
        if not r["ok"]:
            print(f"| {r['model']} | failed: {r['error']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
