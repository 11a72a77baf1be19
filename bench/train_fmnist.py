"""Benchmark: cnnlab's recipe for the lecture's CNN against a plain PyTorch reference, one script.

Reference: the same model (``fmnist-cnn``), a ``DataLoader`` over a ``TensorDataset`` of
pre-normalised float images, Adam lr 1e-3, batch 128, fp32, no augmentation, test accuracy after
every epoch. cnnlab: ``TrainConfig()`` defaults (the recipe ``make run`` uses) at several epoch
budgets; the time to an accuracy is the training time of the shortest budget that reaches it
(a one-cycle schedule only reaches its accuracy at its end). Both train on the same 55,000 images
(5,000 held out) and are tested on the same 10,000.

    python bench/train_fmnist.py                       # full run (about 40 minutes on 2 CPU cores)
    python bench/train_fmnist.py --ref-epochs 1 --budgets 1 --mlp-epochs 1   # smoke test

Writes ``bench/out/train_fmnist.json`` and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from cnnlab.data import load_dataset
from cnnlab.experiments import FMNIST_RECIPES
from cnnlab.models import create_model
from cnnlab.train import TrainConfig, fit, resolve_device
from cnnlab.train.rundir import machine_info

TARGET = 0.935


def plain_pytorch(model: nn.Module) -> nn.Module:
    """Swap cnnlab's faster CPU dropout back to ``nn.Dropout``: the reference is plain PyTorch."""
    from cnnlab.layers import Dropout

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p))
    return model


def reference(data, epochs: int, device: torch.device, log) -> dict:
    """Plain PyTorch: what a tutorial would write."""
    torch.manual_seed(0)

    def prep(x):
        return ((x.float() / 255.0) - data.mean[0]) / data.std[0]

    train = DataLoader(TensorDataset(prep(data.train_x), data.train_y), batch_size=128, shuffle=True)
    test = DataLoader(TensorDataset(prep(data.test_x), data.test_y), batch_size=1000)
    model = plain_pytorch(create_model("fmnist-cnn")).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    rows, train_seconds, reached = [], 0.0, None
    for epoch in range(1, epochs + 1):
        model.train()
        t0, n = time.perf_counter(), 0
        for x, y in train:
            x, y = x.to(device), y.to(device)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            n += len(y)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        train_seconds += dt
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test:
                correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
        acc = correct / len(data.test_y)
        rows.append({"epoch": epoch, "test_accuracy": acc, "seconds": dt, "images_per_s": n / dt})
        if reached is None and acc >= TARGET:
            reached = train_seconds
        log(f"reference epoch {epoch}: test {100 * acc:.2f}%  {dt:.1f}s  {n / dt:.0f} img/s")
    steady = rows[1:] or rows
    return {"epochs": rows, "train_seconds": train_seconds,
            "images_per_s": sum(r["images_per_s"] for r in steady) / len(steady),
            "final_test_accuracy": rows[-1]["test_accuracy"],
            "best_test_accuracy": max(r["test_accuracy"] for r in rows), "seconds_to_target": reached}


def loading_only(data, log) -> dict:
    """Seconds to produce one epoch of batches, no model: the data pipeline's own cost."""
    from cnnlab.data import Augment, BatchLoader

    x = ((data.train_x.float() / 255.0) - data.mean[0]) / data.std[0]
    t0 = time.perf_counter()
    for _ in DataLoader(TensorDataset(x, data.train_y), batch_size=128, shuffle=True):
        pass
    dl = time.perf_counter() - t0
    times = {}
    for name, aug in (("plain", Augment()), ("augmented", Augment(2, True))):
        loader = BatchLoader(data.train_x, data.train_y, 256, shuffle=True, drop_last=True, augment=aug,
                             mean=data.mean, std=data.std, channels_last=True)
        t0 = time.perf_counter()
        for _ in loader.epoch(0):
            pass
        times[name] = time.perf_counter() - t0
    log(f"one epoch of batches: DataLoader {dl:.2f}s, BatchLoader {times['plain']:.2f}s "
        f"({times['augmented']:.2f}s with crop+flip)")
    return {"dataloader_s": dl, "batchloader_s": times["plain"], "batchloader_augmented_s": times["augmented"]}


def cnnlab_runs(data, budgets, device: str, tmp: Path, log) -> list[dict]:
    out = []
    for epochs in budgets:
        m = fit(TrainConfig(epochs=epochs, device=device), tmp / f"cnn-{epochs}", data=data, progress=False, log=log)
        out.append({"epochs": epochs, "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"],
                    "images_per_s": m["images_per_s"], "precision": m["precision"]})
        log(f"cnnlab {epochs} epochs: test {100 * m['test_accuracy']:.2f}%  {m['train_seconds']:.0f}s")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref-epochs", type=int, default=20)
    ap.add_argument("--budgets", default="7,10,15", help="cnnlab epoch budgets, comma-separated")
    ap.add_argument("--mlp-epochs", type=int, default=None, help="default: the experiment's MLP recipe")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="bench/out/train_fmnist.json")
    a = ap.parse_args()
    log = lambda s: print(s, flush=True)  # noqa: E731
    device = resolve_device(a.device)
    data = load_dataset("fashion-mnist", val_size=5000, seed=0)
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        loading = loading_only(data, log)
        ref = reference(data, a.ref_epochs, device, log)
        runs = cnnlab_runs(data, [int(b) for b in a.budgets.split(",")], a.device, tmp, log)
        mlp_cfg = FMNIST_RECIPES["mlp"] if a.mlp_epochs is None else replace(FMNIST_RECIPES["mlp"], epochs=a.mlp_epochs)
        mlp = fit(replace(mlp_cfg, device=a.device), tmp / "mlp", data=data, progress=False, log=log)
    reaching = [r for r in runs if r["test_accuracy"] >= TARGET]
    best = max(runs, key=lambda r: r["epochs"])
    result = {
        "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(device) | {"node": platform.node(), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
        "loading": loading, "reference": ref, "cnnlab": runs,
        "mlp": {"epochs": mlp["epochs"], "test_accuracy": mlp["test_accuracy"], "train_seconds": mlp["train_seconds"]},
        "throughput_ratio": best["images_per_s"] / ref["images_per_s"],
        "cnnlab_seconds_to_target": min((r["train_seconds"] for r in reaching), default=None),
    }
    t_ref, t_cnn = ref["seconds_to_target"], result["cnnlab_seconds_to_target"]
    result["time_to_target_ratio"] = (t_cnn / t_ref) if t_ref and t_cnn else None
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")

    def fmt_t(t):
        return f"{t:.0f} s" if t is not None else "not reached"

    print(f"\n### bench/train_fmnist.py, {started}, {result['machine']['cpu']}, {device}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| | images/s (training) | time to 93.5% test | final test accuracy |")
    print("|---|---|---|---|")
    print(f"| reference (DataLoader, Adam 1e-3, batch 128, fp32), {a.ref_epochs} epochs | {ref['images_per_s']:.0f} | "
          f"{fmt_t(t_ref)} | {100 * ref['final_test_accuracy']:.2f}% (best {100 * ref['best_test_accuracy']:.2f}%) |")
    for r in runs:
        print(f"| cnnlab default recipe ({r['precision']}), {r['epochs']} epochs | {r['images_per_s']:.0f} | "
              f"{fmt_t(r['train_seconds']) if r['test_accuracy'] >= TARGET else 'not reached'} | "
              f"{100 * r['test_accuracy']:.2f}% |")
    print(f"| cnnlab mlp recipe, {mlp['epochs']} epochs | | | {100 * mlp['test_accuracy']:.2f}% |")
    print(f"\none epoch of batches, no model: DataLoader(TensorDataset) {loading['dataloader_s']:.2f} s, "
          f"BatchLoader {loading['batchloader_s']:.2f} s ({loading['batchloader_augmented_s']:.2f} s with crop+flip)")
    ratio = result["time_to_target_ratio"]
    print(f"\nthroughput: {result['throughput_ratio']:.2f}x the reference; time to 93.5%: "
          + (f"{ratio:.2f} of the reference's" if ratio is not None else
             f"cnnlab {fmt_t(t_cnn)}, reference {fmt_t(t_ref)} in {ref['train_seconds']:.0f} s"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
