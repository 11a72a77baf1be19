"""Run by tests/train/test_distributed.py, under torchrun or alone: train a little, save this rank's weights."""

import os
import sys

from safetensors.torch import save_file

from cnnlab.train import TrainConfig, fit

out, data_dir = sys.argv[1], sys.argv[2]
cfg = TrainConfig(model="mlp", model_kwargs={"hidden": [64], "dropout": 0.0}, data_dir=data_dir, subset=512,
                  val_size=100, epochs=2, batch_size=64, precision="fp32", device="cpu", augment=True)
model = fit(cfg, os.path.join(out, "run"), progress=False).model
rank = os.environ.get("RANK", "single")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, f"rank-{rank}.safetensors"))
