"""Benchmark: the explorer's server time per endpoint (``cnnlab explore``, issue 16).

Targets on 2 CPU cores for ``fmnist-cnn`` at 28x28: a stroke to new probabilities (``POST /api/images?kind=drawing``
with a 280x280 canvas PNG, which decodes, centres, predicts) <= 30 ms p95; every layer's activations <= 100 ms;
Grad-CAM <= 60 ms; a unit's effective receptive field <= 60 ms. Measured through the ASGI app in-process
(``TestClient``: routing, validation, the session call and JSON encoding; no socket), ``--repeats`` requests per
endpoint after ``--warmup``, one at a time; p50 and p95 of the server time.

Two runs: ``fmnist-cnn`` (``--fmnist-run``, default a 1-epoch run on 2,000 real Fashion-MNIST images made under
``bench/out/explore``: the time hardly depends on how well it is trained) and a ``tv:resnet18`` transfer run at
224x224 (made there from randomly initialised weights on a generated two-class folder: the time does not depend
on the weights).

    python bench/explore_latency.py [--repeats 50]

Writes ``bench/out/explore_latency.json`` and prints a markdown table for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from cnnlab._env import machine_info
from cnnlab.cli import main as cnnlab
from cnnlab.explore import ExploreSession
from cnnlab.explore.app import create_app
from cnnlab.models import create_model

OUT = Path("bench/out/explore")
TARGETS_MS = {"stroke -> probabilities": 30, "activations (every layer)": 100, "grad-cam": 60,
              "unit (effective RF)": 60}


def _fmnist_run() -> Path:
    run = OUT / "fmnist-cnn"
    if not (run / "metrics.json").is_file():
        assert cnnlab(["train", "--model", "fmnist-cnn", "--epochs", "1", "--subset", "2000", "--out", str(run),
                       "--no-progress", "--overwrite"]) == 0
    return run


def _resnet_run() -> Path:
    run = OUT / "resnet18-transfer"
    if (run / "metrics.json").is_file():
        return run
    rng = np.random.default_rng(0)
    folder = OUT / "shapes224"
    for label, cls in enumerate(("disc", "square")):
        (folder / cls).mkdir(parents=True, exist_ok=True)
        for i in range(24):
            yy, xx = np.mgrid[:224, :224]
            mask = ((yy - 112) ** 2 + (xx - 112) ** 2 < 60 ** 2) if label == 0 else (
                (abs(yy - 112) < 60) & (abs(xx - 112) < 60))
            a = np.where(mask, 220, 30) + rng.integers(-20, 20, (224, 224))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).convert("RGB").save(folder / cls / f"{i:02d}.png")
    weights = OUT / "resnet18-random.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("tv:resnet18").state_dict().items()}, str(weights))
    assert cnnlab(["train", "--from", "tv:resnet18", "--weights", str(weights), "--dataset", f"folder:{folder}",
                   "--image-size", "224", "--epochs", "1", "--batch-size", "16", "--out", str(run), "--no-progress",
                   "--precision", "fp32", "--overwrite"]) == 0
    return run


def _canvas_png() -> bytes:
    a = np.zeros((280, 280), dtype=np.uint8)
    a[60:220, 100:180] = 255
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _measure(client, name: str, request, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        request()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = request()
        times.append(1000 * (time.perf_counter() - t0))
        assert r.status_code == 200, (name, r.text[:300])
    return {"p50_ms": round(float(np.percentile(times, 50)), 2), "p95_ms": round(float(np.percentile(times, 95)), 2),
            "max_ms": round(max(times), 2), "requests": repeats, "bytes": len(r.content)}


def bench(run: Path, repeats: int, warmup: int) -> dict:
    from fastapi.testclient import TestClient

    session = ExploreSession(run)
    client = TestClient(create_app(session))
    image = client.post("/api/images/test/0").json()["image"]
    spatial = [layer for layer in client.get(f"/api/activations?image={image}").json()["layers"] if layer["spatial"]]
    mid = spatial[len(spatial) // 2]
    canvas = _canvas_png()
    requests = {
        "stroke -> probabilities": lambda: client.post("/api/images?kind=drawing", content=canvas,
                                                       headers={"content-type": "image/png"}),
        "predict": lambda: client.get(f"/api/predict?image={image}"),
        "activations (every layer)": lambda: client.get(f"/api/activations?image={image}"),
        "grad-cam": lambda: client.get("/api/attribution", params={"image": image, "method": "gradcam"}),
        "unit (effective RF)": lambda: client.get("/api/unit", params={
            "image": image, "layer": mid["name"], "channel": 0,
            "position": f"{mid['height'] // 2},{mid['width'] // 2}"}),
        "saliency": lambda: client.get("/api/attribution", params={"image": image, "method": "saliency"}),
        "occlusion": lambda: client.get("/api/attribution", params={"image": image, "method": "occlusion"}),
    }
    results = {name: _measure(client, name, fn, repeats, warmup) for name, fn in requests.items()}
    session.close()
    return {"run": str(run), "model": session.spec.get("name"), "input_size": list(session.input_size),
            "unit_layer": mid["name"], "endpoints": results}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/out/explore_latency.json")
    a = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(a.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    runs = [bench(_fmnist_run(), a.repeats, a.warmup), bench(_resnet_run(), max(10, a.repeats // 5), 2)]
    record = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": "python bench/explore_latency.py",
              "threads": a.threads, "machine": machine_info(), "runs": runs, "targets_ms": TARGETS_MS}
    Path(a.out).write_text(json.dumps(record, indent=2) + "\n")
    heads = ["{} {}x{} p50 / p95 ms".format(r["model"], r["input_size"][1], r["input_size"][2]) for r in runs]
    print(f"| endpoint | {' | '.join(heads)} | target p95 (fmnist-cnn) |")
    print("|---|" + "---|" * len(runs) + "---|")
    for name in runs[0]["endpoints"]:
        cells = ["{:.1f} / {:.1f}".format(r["endpoints"][name]["p50_ms"], r["endpoints"][name]["p95_ms"]) for r in runs]
        target = TARGETS_MS.get(name)
        print(f"| {name} | {' | '.join(cells)} | {'<= %d' % target if target else ''} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
