"""DistributedDataParallel on 2 CPU processes (gloo, loopback) equals one process with the same global batch."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from tests.helpers import cli_env

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_ranks_match_a_single_process(fake_fmnist_dir, tmp_path):
    env = cli_env() | {"OMP_NUM_THREADS": "1"}
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(WORKER), str(ddp), str(fake_fmnist_dir)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run([sys.executable, str(WORKER), str(single), str(fake_fmnist_dir)], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    w0, w1 = load_file(str(ddp / "rank-0.safetensors")), load_file(str(ddp / "rank-1.safetensors"))
    ws = load_file(str(single / "rank-single.safetensors"))
    for k in ws:
        assert torch.equal(w0[k], w1[k]), f"ranks disagree on {k}"
        torch.testing.assert_close(w0[k], ws[k], rtol=1e-4, atol=1e-5, msg=f"DDP differs from one process on {k}")
    # only rank 0 wrote the run directory, and it is complete
    assert (ddp / "run" / "metrics.json").is_file()
    assert load_file(str(ddp / "run" / "model.safetensors")).keys() == ws.keys()
