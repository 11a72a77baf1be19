"""Importing cnnlab and training with it leaves the caller's process as it was: matplotlib's backend (a notebook's
inline backend), the warning filters, Pillow's pixel limit. (captum imports pyplot itself, so pyplot's presence
is not checked; cnnlab draws on its own Figure objects and never calls matplotlib.use.)"""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import cli_env

SCRIPT = """
import sys, warnings, matplotlib
import torch, torchvision, captum.attr  # these change the warning filters on import themselves
matplotlib.use("svg")
filters = list(warnings.filters)
from PIL import Image
pil_limit = Image.MAX_IMAGE_PIXELS
import cnnlab, cnnlab.cli, cnnlab.viz, cnnlab.compress.sweep, cnnlab.experiments, cnnlab.compare
from cnnlab.train import TrainConfig, fit
fit(TrainConfig(model="mlp", model_kwargs={"hidden": [8]}, subset=64, val_size=16, epochs=1, batch_size=32,
                data_dir=sys.argv[1], device="cpu", precision="fp32"), sys.argv[2], progress=False, log=lambda s: None)
from cnnlab.compress.sweep import plot_sweep
plot_sweep({"run": "r", "threads": 1, "rows": [{"name": "a", "size_bytes": 10, "test_accuracy": 0.5,
            "latency_ms_b256": 1.0, "baseline_size_bytes": 20, "baseline_test_accuracy": 0.6,
            "baseline_latency_ms_b256": 2.0}]}, sys.argv[2] + "/sweep.png")
print(matplotlib.get_backend(), warnings.filters == filters,
      Image.MAX_IMAGE_PIXELS == pil_limit)
"""


def test_importing_and_training_changes_no_global_state(fake_fmnist_dir, tmp_path):
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(fake_fmnist_dir), str(tmp_path / "run")],
                       capture_output=True, text=True, env=cli_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["svg", "True", "True"], r.stdout
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000 and (tmp_path / "run" / "sweep.png").is_file()
