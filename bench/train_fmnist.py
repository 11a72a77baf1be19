"""Benchmark: cnnlab's training recipes for the lecture's CNN against a plain PyTorch reference, in one run, and
issue 18's targets with met / not met.

Reference: the same model (``fmnist-cnn`` with ``nn.Dropout``), a ``DataLoader`` over a ``TensorDataset`` of
pre-normalised float images, Adam lr 1e-3, batch 128, fp32, no augmentation, on all 60,000 training images (what
a tutorial writes), test accuracy after every epoch. cnnlab: each recipe (``cnnlab train --recipe NAME``) for
every seed, tested plainly and with flip test-time augmentation (always labelled so). A one-cycle recipe reaches
its accuracy at its end, so a run's time to an accuracy is its training time when its final accuracy reaches it.
Both sides are tested on the same 10,000 test images; every time is training time (evaluation excluded).

    python bench/train_fmnist.py --seeds 3                 # the record (about an hour on 2 CPU cores)
    python bench/train_fmnist.py --smoke                   # a minute: every path, tiny budgets, no verdicts
    python bench/train_fmnist.py --recipes best --seeds 1 --no-reference   # target 4 alone (about an hour)

A killed run resumes: the reference and every finished recipe run are kept in ``<out>.partial`` (for the same
arguments) and only what is missing is trained again; the file is removed when the record is written.

Writes ``bench/out/train_fmnist.json`` and prints the tables for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from cnnlab._env import machine_info
from cnnlab.data import load_dataset
from cnnlab.experiments import FMNIST_RECIPES
from cnnlab.models import create_model
from cnnlab.train import fit, resolve_device
from cnnlab.train.recipes import recipe_config

TARGET = 0.935  # the lecture's "~93.5%"
TARGETS = {  # issue 18
    "fast_time_ratio": 1 / 4,  # 1. the fast recipe's time to 93.5% against the reference's
    "throughput_ratio": 3.0,  # 2. training images/s of the default recipe against the reference's
    "default_accuracy": 0.940,  # 3. the default recipe's test accuracy, every seed ...
    "default_time_ratio": 1 / 5,  # ... in this share of the reference's whole training time
    "best_accuracy": 0.955,  # 4. (stretch) the best recipe's test accuracy ...
    "best_seconds": 3600,  # ... within an hour of training on 2 cores
}


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
            "images_per_s": statistics.median(r["images_per_s"] for r in steady),
            "final_test_accuracy": rows[-1]["test_accuracy"],
            "best_test_accuracy": max(r["test_accuracy"] for r in rows), "seconds_to_target": reached}


def cnnlab_recipe(name: str, seeds: list[int], device: str, tmp: Path, log, **overrides) -> list[dict]:
    """``cnnlab train --recipe NAME --seed S --tta flip`` for every seed: the plain and the flip-TTA accuracy."""
    out = []
    for seed in seeds:
        cfg = recipe_config(name, seed=seed, device=device, tta="flip", **overrides)
        m = fit(cfg, tmp / f"{name}-{seed}", progress=False, log=log)
        row = {"recipe": name, "seed": seed, "epochs": m["epochs"], "test_accuracy": m["test_accuracy"],
               "test_accuracy_with_flip_tta": m["tta"]["test_accuracy"], "train_seconds": m["train_seconds"],
               "images_per_s": m["images_per_s"], "precision": m["precision"], "model": m["model"]}
        out.append(row)
        log(f"cnnlab {name} seed {seed}: test {100 * row['test_accuracy']:.2f}% "
            f"({100 * row['test_accuracy_with_flip_tta']:.2f}% with flip TTA), {row['train_seconds']:.0f}s, "
            f"{row['images_per_s']:.0f} img/s")
    return out


def _spread(values: list[float], fmt) -> str:
    """min / median / max, or the one value."""
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(min(values))} / {fmt(statistics.median(values))} / {fmt(max(values))}"


def verdicts(result: dict) -> list[dict]:
    """Each target of issue 18: what was measured and whether it is met (None: not measured in this run)."""
    ref, runs = result["reference"], result["cnnlab"]
    by = {name: [r for r in runs if r["recipe"] == name] for name in {r["recipe"] for r in runs}}
    rows = []
    best = by.get("best", [])
    if best:
        threads = result["machine"]["torch_threads"]
        rows.append({"target": "4. best recipe >= 95.5% test within 60 minutes of training on 2 cores",
                     "measured": f"{_spread([100 * r['test_accuracy'] for r in best], lambda v: f'{v:.2f}%')} "
                                 f"({_spread([100 * r['test_accuracy_with_flip_tta'] for r in best], lambda v: f'{v:.2f}%')}"
                                 f" with flip TTA) in {_spread([r['train_seconds'] / 60 for r in best], lambda v: f'{v:.1f} min')}"
                                 f" ({best[0]['model']}, {threads} threads)",
                     "met": threads <= 2 and all(r["test_accuracy"] >= TARGETS["best_accuracy"] and
                                                 r["train_seconds"] <= TARGETS["best_seconds"] for r in best)})
    if ref is None:
        return rows
    fast = by.get("fast", [])
    if fast and ref["seconds_to_target"]:
        for key, label in (("test_accuracy", "plain"), ("test_accuracy_with_flip_tta", "with flip TTA")):
            reached = [r for r in fast if r[key] >= TARGET]
            worst = max(r["train_seconds"] for r in fast) / ref["seconds_to_target"]
            met = len(reached) == len(fast) and worst <= TARGETS["fast_time_ratio"]
            rows.append({"target": f"1. fast recipe: time to 93.5% <= 1/4 of the reference's ({label})",
                         "measured": f"{len(reached)}/{len(fast)} seeds reach 93.5% "
                                     f"({_spread([100 * r[key] for r in fast], lambda v: f'{v:.2f}%')}); time "
                                     f"{_spread([r['train_seconds'] for r in fast], lambda v: f'{v:.0f} s')} vs "
                                     f"{ref['seconds_to_target']:.0f} s: ratio {worst:.2f} (slowest seed)",
                         "met": met})
    default = by.get("default", [])
    if default:
        ratio = statistics.median(r["images_per_s"] for r in default) / ref["images_per_s"]
        rows.append({"target": "2. throughput of the default recipe >= 3x the reference's images/s",
                     "measured": f"{statistics.median(r['images_per_s'] for r in default):.0f} vs "
                                 f"{ref['images_per_s']:.0f} images/s: {ratio:.2f}x",
                     "met": ratio >= TARGETS["throughput_ratio"]})
        budget = ref["train_seconds"] / len(ref["epochs"]) * 20 * TARGETS["default_time_ratio"]
        for key, label in (("test_accuracy", "plain"), ("test_accuracy_with_flip_tta", "with flip TTA")):
            worst_acc = min(r[key] for r in default)
            worst_time = max(r["train_seconds"] for r in default)
            rows.append({"target": f"3. default recipe >= 94.0% (every seed) in <= 1/5 of the reference's 20-epoch "
                                   f"time ({label})",
                         "measured": f"{_spread([100 * r[key] for r in default], lambda v: f'{v:.2f}%')} in "
                                     f"{_spread([r['train_seconds'] for r in default], lambda v: f'{v:.0f} s')}; "
                                     f"1/5 of the reference's 20 epochs: {budget:.0f} s",
                         "met": worst_acc >= TARGETS["default_accuracy"] and worst_time <= budget})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3, help="seeds per recipe (0, 1, ...)")
    ap.add_argument("--recipes", default="default,fast", help="cnnlab recipes, comma-separated")
    ap.add_argument("--ref-epochs", type=int, default=20)
    ap.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                    help="train the plain PyTorch reference (targets 1-3 need it; 4 does not)")
    ap.add_argument("--smoke", action="store_true", help="tiny budgets to check every path (no verdicts)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="bench/out/train_fmnist.json")
    a = ap.parse_args()
    log = lambda s: print(s, flush=True)  # noqa: E731
    device = resolve_device(a.device)
    overrides = {"epochs": 1, "subset": 2000} if a.smoke else {}
    data = load_dataset("fashion-mnist", val_size=0, seed=0, subset=overrides.get("subset"))
    recipes = a.recipes.split(",")
    seeds = list(range(a.seeds))
    started = time.strftime("%Y-%m-%d %H:%M")
    partial = Path(a.out + ".partial")
    key = {k: getattr(a, k) for k in ("seeds", "recipes", "ref_epochs", "smoke", "device", "reference")}
    done = json.loads(partial.read_text()) if partial.exists() else {}
    if done.get("key") != key:
        done = {"key": key, "started": started, "runs": {}}
    started = done["started"]

    def keep(**kw):
        done.update(kw)
        partial.parent.mkdir(parents=True, exist_ok=True)
        tmp_file = partial.with_name(partial.name + ".tmp")
        tmp_file.write_text(json.dumps(done, indent=2))
        tmp_file.replace(partial)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not a.reference:
            done["reference"] = None
        elif "reference" in done:
            log(f"reference: kept from the interrupted run ({len(done['reference']['epochs'])} epochs)")
        else:
            keep(reference=reference(data, 1 if a.smoke else a.ref_epochs, device, log))
        ref = done["reference"]
        runs = []
        for name in recipes:
            for seed in seeds:
                tag = f"{name}-{seed}"
                if tag in done["runs"]:
                    log(f"cnnlab {name} seed {seed}: kept from the interrupted run")
                else:
                    done["runs"][tag] = cnnlab_recipe(name, [seed], a.device, tmp, log, **overrides)[0]
                    keep()
                runs.append(done["runs"][tag])
        if "mlp" not in done:
            m = fit(replace(FMNIST_RECIPES["mlp"], device=a.device, **overrides), tmp / "mlp", progress=False, log=log)
            keep(mlp={"epochs": m["epochs"], "test_accuracy": m["test_accuracy"], "train_seconds": m["train_seconds"]})
        mlp = done["mlp"]
    result = {
        "date": started, "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine_info(device),
        "reference": ref, "cnnlab": runs,
        "mlp": mlp,
        "recipes": {name: recipe_config(name).to_dict() for name in recipes},
    }
    result["targets"] = [] if a.smoke else verdicts(result)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    partial.unlink(missing_ok=True)

    m = result["machine"]
    flags = ", ".join(k for k, v in m["cpu_flags"].items() if v) or "none of avx512f/avx512_bf16/amx"
    print(f"\n### bench/train_fmnist.py, {started}, {m['cpu']} ({flags}), {device}, {m['torch_threads']} threads, "
          f"torch {m['torch']}, oneDNN {m['onednn']}, code {m['code_revision']}\n")
    print("| | seed | images/s (training) | training time | test accuracy | with flip TTA |")
    print("|---|---|---|---|---|---|")
    if ref is not None:
        ref_at = (f" (93.5% after {ref['seconds_to_target']:.0f} s)" if ref["seconds_to_target"] else
                  " (93.5% not reached)")
        print(f"| reference (DataLoader, Adam 1e-3, batch 128, fp32), {len(ref['epochs'])} epochs | 0 | "
              f"{ref['images_per_s']:.0f} | {ref['train_seconds']:.0f} s{ref_at} | "
              f"{100 * ref['final_test_accuracy']:.2f}% (best {100 * ref['best_test_accuracy']:.2f}%) | |")
    for r in runs:
        print(f"| cnnlab `--recipe {r['recipe']}` ({r['model']}, {r['precision']}), {r['epochs']} epochs | {r['seed']} | "
              f"{r['images_per_s']:.0f} | {r['train_seconds']:.0f} s | {100 * r['test_accuracy']:.2f}% | "
              f"{100 * r['test_accuracy_with_flip_tta']:.2f}% |")
    print(f"| cnnlab mlp recipe, {mlp['epochs']} epochs | 0 | | {mlp['train_seconds']:.0f} s | "
          f"{100 * mlp['test_accuracy']:.2f}% | |")
    if result["targets"]:
        print("\n| target | measured | |\n|---|---|---|")
        for t in result["targets"]:
            print(f"| {t['target']} | {t['measured']} | {'met' if t['met'] else '**not met**'} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
