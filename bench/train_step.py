"""Benchmark: where the lecture CNN's training step goes, and what each lever buys (issue 18).

One process times the training step of ``fmnist-cnn`` (forward under autocast, loss, backward,
optimizer step: what ``cnnlab.train.fit`` does per batch) in several variants, interleaved round by
round so that a shared, noisy machine slows them alike; prints images/s per variant as the median over
rounds and the ratio to the first variant. Random data of the real shape (1x28x28, 10 classes): a step's
cost does not depend on the pixel values.

    python bench/train_step.py                     # all variants, 3 rounds of 20 steps
    python bench/train_step.py --variants default,fp32 --rounds 2 --steps 10
    python bench/train_step.py --profile default   # torch.profiler's table of one variant's steps

Writes ``bench/out/train_step.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cnnlab._env import machine_info
from cnnlab.models import create_model

#: name -> (batch size, precision, channels_last, optimizer kwargs, compile)
VARIANTS = {
    "default": (128, "bf16", True, {}, False),
    "fp32": (128, "fp32", True, {}, False),
    "contiguous": (128, "bf16", False, {}, False),
    "batch64": (64, "bf16", True, {}, False),
    "batch256": (256, "bf16", True, {}, False),
    "batch512": (512, "bf16", True, {}, False),
    "fused-adamw": (128, "bf16", True, {"fused": True}, False),
    "compile": (128, "bf16", True, {}, True),
}


class Step:
    def __init__(self, name: str, seed: int = 0) -> None:
        batch, self.precision, channels_last, opt_kwargs, compiled = VARIANTS[name]
        torch.manual_seed(seed)
        model = create_model("fmnist-cnn")
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.model = model.to(memory_format=fmt).train()
        params = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": 5e-3},
                  {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
        self.opt = torch.optim.AdamW(params, lr=1e-3, **opt_kwargs)
        self.forward = torch.compile(self.model) if compiled else self.model
        self.x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 10, (batch,))
        self.batch = batch

    def __call__(self) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.forward(self.x)
        loss = F.cross_entropy(out.float(), self.y, label_smoothing=0.1)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def images_per_s(step: Step, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * step.batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--profile", metavar="VARIANT", help="print torch.profiler's table for VARIANT and stop")
    p.add_argument("--out", default="bench/out/train_step.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.profile:
        step = Step(a.profile)
        for _ in range(a.warmup):
            step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(a.steps):
                step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))
        return 0
    names = a.variants.split(",")
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"unknown variant(s) {', '.join(unknown)}; valid: {', '.join(VARIANTS)}", file=sys.stderr)
        return 2
    steps = {}
    for n in names:
        t0 = time.perf_counter()
        steps[n] = Step(n)
        for _ in range(a.warmup):
            steps[n]()
        print(f"{n}: built and warmed up in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rates: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for n in names:
            rates[n].append(images_per_s(steps[n], a.steps))
        print(f"round {r + 1}: " + "  ".join(f"{n} {rates[n][-1]:.0f}" for n in names), file=sys.stderr)
    base = statistics.median(rates[names[0]])
    rows = [{"variant": n, "images_per_s": statistics.median(rates[n]), "rounds": rates[n],
             "ratio": statistics.median(rates[n]) / base} for n in names]
    info = machine_info() | {"threads": a.threads}
    print(f"| variant | images/s (median of {a.rounds}) | vs {names[0]} |\n|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['images_per_s']:,.0f} | {r['ratio']:.2f}x |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "machine": info, "argv": sys.argv[1:],
                               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
