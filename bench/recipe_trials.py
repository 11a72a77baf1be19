"""Benchmark: recipe trials for the lecture's CNN, one training run per trial, for the ablation table in
bench/RESULTS.md (which setting buys how much accuracy within a short budget).

Each trial is a set of ``TrainConfig`` settings over cnnlab's defaults (plus a ``name``); each run is tested
plainly and with flip test-time augmentation (labelled). Trials run one after another in this process; their
accuracies are comparable across runs, their times only when nothing else ran beside them.

    python bench/recipe_trials.py trials.json        # [{"name": "noaug-e8", "epochs": 8, "augment": false}, ...]
    python bench/recipe_trials.py --trial '{"name": "e6", "epochs": 6, "val_size": 0}'

Appends one JSON line per trial to ``bench/out/recipe_trials.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cnnlab._env import machine_info
from cnnlab.train import TrainConfig, fit


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trials", nargs="?", help="a JSON file: a list of trials")
    ap.add_argument("--trial", action="append", default=[], help="one trial as JSON (repeatable)")
    ap.add_argument("--out", default="bench/out/recipe_trials.jsonl")
    a = ap.parse_args()
    trials = (json.loads(Path(a.trials).read_text()) if a.trials else []) + [json.loads(t) for t in a.trial]
    if not trials:
        ap.error("give a trials file or --trial JSON")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    for trial in trials:
        settings = {k: v for k, v in trial.items() if k != "name"}
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            m = fit(TrainConfig(**settings, tta="flip"), Path(tmp) / "run", progress=False, log=lambda s: None)
            wall = time.perf_counter() - t0
        row = {"name": trial.get("name"), "settings": settings, "test_accuracy": m["test_accuracy"],
               "test_accuracy_with_flip_tta": m["tta"]["test_accuracy"], "train_seconds": m["train_seconds"],
               "wall_seconds": wall, "images_per_s": m["images_per_s"], "date": time.strftime("%Y-%m-%dT%H:%M"),
               "cpu": machine["cpu"], "code_revision": machine["code_revision"]}
        print(json.dumps(row), flush=True)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
