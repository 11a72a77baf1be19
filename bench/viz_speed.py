"""Benchmark: how fast cnnlab's visualisations run on CPU.

The issue's targets (cnnlab issue 5), on a 2-core CPU: Grad-CAM for 256 Fashion-MNIST images in under
2 s; occlusion of one 28x28 image with 3 patch sizes in under 2 s. Measured here: Grad-CAM (all three
variants) on the first 256 test images, normalised with the training set's mean and std, and occlusion
(the default patch sizes 4, 7, 14, stride p // 2) of the first test image; each the median of 5 runs
after one warm-up run. The model: a trained run directory (``--run``), else an untrained fmnist-cnn
(the time hardly depends on the weights; a warning says so).

    python bench/viz_speed.py                                   # runs/experiment-fmnist/fmnist-cnn if present
    python bench/viz_speed.py --run runs/my-run --threads 2

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

DEFAULT_RUN = Path("runs/experiment-fmnist/fmnist-cnn")
TARGET_S = 2.0


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

    out = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "machine": machine_info(torch.device("cpu")), "model": model_from,
           "accuracy_on_these_images": acc, "target_s": TARGET_S, "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")

    m = out["machine"]
    print(f"{m['cpu']}, {m['cpu_count']} cores, {m['torch_threads']} torch threads; model: {model_from} "
          f"(accuracy on these images {acc:.3f})\n")
    print("| what | median | min | max | target |\n|---|---|---|---|---|")
    for name, r in results.items():
        ok = "met" if r["median_s"] < TARGET_S else "missed"
        print(f"| {name} | {r['median_s']:.3f} s | {r['min_s']:.3f} s | {r['max_s']:.3f} s "
              f"| < {TARGET_S:.0f} s, {ok} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
