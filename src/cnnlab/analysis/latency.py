"""CPU latency, measured as cnnlab runs models: eval mode, inference mode, float32, channels-last for conv
models, the thread count stated and restored, the median of adaptive repeats; and a warning when a busy machine
would make the figures lie. Used by ``compare`` (models and single layers) and ``compress`` (each method)."""

from __future__ import annotations

import copy
import gc
import os
import statistics
import time
from typing import Any, Sequence

import torch
import torch.nn as nn

from cnnlab.errors import CnnlabError
from cnnlab.models import has_conv2d

__all__ = ["LATENCY_BATCHES", "LatencyError", "busy_cpus", "busy_warning", "check_positive", "check_threads", "measure_latency"]


class LatencyError(CnnlabError):
    """A bad argument to a latency measurement; the message names the value and what would be valid."""


#: The batch sizes every model's latency is measured at: one image (what an interactive user waits
#: for) and a large batch (throughput, where the MACs count best predicts time).
LATENCY_BATCHES = (1, 256)


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise LatencyError(f"{name} must be a positive integer; got {value!r}")


def check_threads(threads: int | None) -> None:
    if threads is None:
        return
    check_positive("--threads", threads)
    if threads > _usable_cpus():
        raise LatencyError(f"--threads {threads} is more than the {_usable_cpus()} CPUs this process may use; "
                           f"choose 1-{_usable_cpus()}")


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat`` (steal time counts as busy: another guest has the
    core); None where there is no such file."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 4:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest time is inside user)
    return total - idle, total


def busy_cpus(window: float = 0.25) -> float | None:
    """How many CPUs *other* processes keep busy now: the machine's busy share over ``window`` seconds, in
    CPUs, less this process's own CPU time over the same window (its OpenMP threads may still spin after a
    parallel region). Unlike the load average, which a training run that just ended keeps high for a minute,
    this does not count cnnlab's own work. None where ``/proc/stat`` is not readable."""
    ncpu = os.cpu_count() or 1
    before, own = _cpu_jiffies(), os.times()
    if before is None:
        return None
    time.sleep(window)
    after, own_after = _cpu_jiffies(), os.times()
    if after is None or after[1] <= before[1]:
        return None
    machine = (after[0] - before[0]) / (after[1] - before[1]) * ncpu
    mine = (own_after.user + own_after.system - own.user - own.system) / max(own_after.elapsed - own.elapsed, 1e-3)
    return max(0.0, machine - mine)


def busy_warning(threads: int | None) -> str | None:
    """A warning when other processes keep the CPUs busy: measured with more threads than there are
    idle CPUs, each parallel region waits for a descheduled thread and latencies jump to multiples of
    the scheduler's time slice (bench/RESULTS.md). None when the CPUs other processes use (:func:`busy_cpus`,
    or the load average where that cannot be read) leave room for ``threads``."""
    busy = busy_cpus()
    what = "other processes keep {:.1f} of {} CPUs busy"
    if busy is None:
        try:
            busy = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
        what = "load average {:.1f} on {} CPUs"
    n = threads or torch.get_num_threads()
    cpus = _usable_cpus()
    if busy + n <= cpus + 0.5:
        return None
    advice = "measure on an idle machine" + (", or with --threads 1" if n > 1 else "")
    return (f"the CPUs are busy ({what.format(busy, cpus)}): latencies on {n} thread{'s' if n != 1 else ''} will "
            f"be inflated and noisy; {advice}")


def measure_latency(
    model: nn.Module,
    input_size: Sequence[int],
    batch: int = 1,
    *,
    repeats: int | None = None,
    warmup: int = 3,
    threads: int | None = None,
    budget_s: float = 1.0,
    max_repeats: int = 1000,
    channels_last: bool | None = None,
) -> dict[str, Any]:
    """Wall time of one forward pass of ``batch`` random float32 samples of ``input_size`` (C, H, W)
    through ``model`` on the CPU, in eval mode under ``torch.inference_mode``.

    ``warmup`` untimed passes first (oneDNN builds its kernels on the first calls). Then, with
    ``repeats`` given, exactly that many timed passes; else adaptively: at least 5, then more until
    ``budget_s`` seconds of timed passes or ``max_repeats``, so that a fast layer gets hundreds of
    samples and batch 256 of a slow model a handful. The median is the figure to quote (robust to a
    neighbour's burst on a shared machine); the minimum is the best case.

    ``threads``: the intra-op thread count to measure with (default: the current one).
    ``channels_last``: input and weights in channels-last memory format, as cnnlab trains models with
    convolutions (default: when the model has a 2D conv and the input is C, H, W). It matters: in
    contiguous NCHW, oneDNN reorders every conv's input and output, which costs more than a cheap conv
    itself (docs/ARCHITECTURE.md: "Latency is measured in the format cnnlab runs models in"). The model is
    measured on a copy then, so its own tensors keep their layout. Its train/eval flags and the thread count are
    restored afterwards.

    Returns ``{"batch", "median_ms", "min_ms", "repeats", "warmup", "threads", "channels_last",
    "input_size"}``.
    """
    check_positive("batch", batch)
    if repeats is not None:
        check_positive("repeats", repeats)
    if not isinstance(warmup, int) or warmup < 0:
        raise LatencyError(f"warmup must be 0 or more passes; got {warmup!r}")
    check_threads(threads)
    for p in list(model.parameters()) + list(model.buffers()):
        if p.device.type != "cpu":
            raise LatencyError(f"measure_latency times CPU inference; the model has a tensor on {p.device}")
        if p.is_floating_point() and p.dtype != torch.float32:
            raise LatencyError(f"measure_latency times float32 inference; the model has a {p.dtype} tensor")

    x = torch.randn(batch, *input_size, generator=torch.Generator().manual_seed(0))
    if channels_last is None:
        channels_last = len(input_size) == 3 and has_conv2d(model)
    if channels_last:
        if len(input_size) != 3:
            raise LatencyError(f"channels_last needs a C, H, W input; got input_size {tuple(input_size)}")
        model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    modes = [(m, m.training) for m in model.modules()]
    threads_before = torch.get_num_threads()
    gc_was_enabled = gc.isenabled()
    times: list[float] = []
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model.eval()
        gc.disable()  # a collection inside a timed pass is not the model's time
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            start = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
                n = len(times)
                if repeats is not None:
                    if n >= repeats:
                        break
                elif n >= max_repeats or (n >= 5 and time.perf_counter() - start >= budget_s):
                    break
        used = torch.get_num_threads()
    finally:
        if gc_was_enabled:
            gc.enable()
        torch.set_num_threads(threads_before)
        for m, training in modes:
            m.training = training
    return {"batch": batch, "median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
            "repeats": len(times), "warmup": warmup, "threads": used, "channels_last": bool(channels_last),
            "input_size": list(input_size)}
