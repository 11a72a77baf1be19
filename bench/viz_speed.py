"""Benchmark: how fast cnnlab's visualisations run on CPU.

The targets, on a 2-core CPU: every Grad-CAM-like method (one forward and backward pass: gradcam,
hirescam, gradcam++, xgradcam, layercam; and eigencam, no backward) for 256 Fashion-MNIST images in 0.5 s
or less, ScoreCAM and AblationCAM (a forward pass per channel) in 10 s or less (issue 19); guided Grad-CAM
for 256 images and occlusion of one image with 3 patch sizes under 2 s (issue 5); the whole ``cnnlab viz
--evaluate`` table for 256 images (every method's maps, deletion/insertion twice, ROAD, the randomisation
cascade) in 3 minutes or less (issue 19). Measured on the first 256 test images, normalised with the
training set's mean and std; each the median of 5 runs after one warm-up run (the evaluation: once). The
model: a trained run directory (``--run``), else an untrained fmnist-cnn (a warning says so).

    python bench/viz_speed.py                                   # runs/lecture/fmnist/fmnist-cnn if present
    python bench/viz_speed.py --run runs/my-run --threads 2 --no-evaluate

Writes ``bench/out/viz_speed.json`` and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from cnnlab.data import load_dataset, normalize
from cnnlab.models import create_model
from cnnlab.train.rundir import load_run, machine_info
from cnnlab.viz import GRAD_CAM_VARIANTS, default_patch_sizes, grad_cam, occlusion

DEFAULT_RUN = next((p for p in (Path("runs/lecture/fmnist/fmnist-cnn"), Path("runs/experiment-fmnist/fmnist-cnn"))
                    if p.is_dir()), Path("runs/lecture/fmnist/fmnist-cnn"))
TARGET_S = {"scorecam": 10.0, "ablationcam": 10.0, "guided": 2.0, "occlusion": 2.0, "evaluate": 180.0}
GRAD_CAM_LIKE_S = 0.5  # every other CAM method


def target_of(name: str) -> float | None:
    if name.startswith("reference"):
        return None
    for key, limit in TARGET_S.items():
        if key in name:
            return limit
    return GRAD_CAM_LIKE_S


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up: first-call allocations, captum's imports
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "runs_s": times}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(DEFAULT_RUN) if DEFAULT_RUN.is_dir() else None,
                    help=f"a trained run directory (default: {DEFAULT_RUN} if it exists)")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="skip the --evaluate table")
    ap.add_argument("--out", default="bench/out/viz_speed.json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    data = load_dataset("fashion-mnist", a.data_dir, val_size=5000, seed=0)
    if a.run:
        model, model_from = load_run(a.run).model, a.run
    else:
        warnings.warn(f"{DEFAULT_RUN} not found and no --run given: timing an untrained fmnist-cnn", stacklevel=1)
        torch.manual_seed(0)
        model, model_from = create_model("fmnist-cnn").eval(), "untrained fmnist-cnn"
    images = normalize(data.test_x[: a.images], data.mean, data.std)
    one = images[:1]
    sizes = default_patch_sizes(min(one.shape[-2:]))

    results = {}
    for variant in GRAD_CAM_VARIANTS:
        results[f"grad_cam[{variant}] x{len(images)}"] = timed(lambda v=variant: grad_cam(model, images, variant=v),
                                                                a.repeats)
    results[f"occlusion x1, patches {','.join(map(str, sizes))}"] = timed(
        lambda: occlusion(model, one, patch_sizes=sizes), a.repeats)
    # references in the same process: captum called directly, without cnnlab's checks, hooks and restore
    from captum.attr import LayerAttribution, LayerGradCam, Occlusion

    from cnnlab.viz.attribution import grad_cam_module

    layer = grad_cam_module(model, None, images[:1])
    with torch.no_grad():
        predicted = model(images).argmax(1)

    def captum_grad_cam():
        cam = LayerGradCam(model, layer).attribute(images, target=predicted, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(images.shape[-2:]), interpolate_mode="bilinear")

    def captum_occlusion():
        occ = Occlusion(lambda x: torch.softmax(model(x), 1))
        with torch.no_grad():
            return [occ.attribute(one, sliding_window_shapes=(1, p, p), strides=(1, max(1, p // 2), max(1, p // 2)),
                                  target=predicted[:1], perturbations_per_eval=256) for p in sizes]

    results[f"reference: captum LayerGradCam x{len(images)}"] = timed(captum_grad_cam, a.repeats)
    results["reference: captum Occlusion x1"] = timed(captum_occlusion, a.repeats)
    with torch.no_grad():
        acc = float((model(images).argmax(1) == data.test_y[: a.images]).float().mean())
    evaluation = None
    if a.evaluate:
        from cnnlab.viz.attribution import black
        from cnnlab.viz.evaluate import evaluate_attributions

        t0 = time.perf_counter()
        evaluation = evaluate_attributions(model, images, predicted, baseline=black(data.mean, data.std))
        took = time.perf_counter() - t0
        results[f"evaluate x{len(images)} (viz --evaluate)"] = {"median_s": took, "min_s": took, "max_s": took,
                                                                 "runs_s": [took]}

    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "machine": machine_info(torch.device("cpu")), "model": model_from,
           "accuracy_on_these_images": acc, "targets_s": {k: target_of(k) for k in results}, "results": results,
           "evaluation": evaluation}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")

    m = out["machine"]
    print(f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads; model: {model_from} "
          f"(accuracy on these images {acc:.3f})\n")
    print("| what | median | min | max | target |\n|---|---|---|---|---|")
    for name, r in results.items():
        limit = target_of(name)
        ok = "" if limit is None else f"<= {limit:g} s, " + ("met" if r["median_s"] <= limit else "**not met**")
        print(f"| {name} | {r['median_s']:.3f} s | {r['min_s']:.3f} s | {r['max_s']:.3f} s | {ok} |")
    if evaluation:
        from cnnlab.viz.evaluate import evaluation_table
        from cnnlab.viz.report import verdict_text

        head, rows = evaluation_table(evaluation)
        print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print("\n" + verdict_text(evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
