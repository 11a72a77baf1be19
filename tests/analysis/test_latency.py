"""The busy-machine warning counts what other processes do now, not cnnlab's own work (the load average a
training run leaves behind kept warning the lecture's latency measurements right after its own training)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from cnnlab.analysis import latency
from cnnlab.analysis.latency import busy_cpus, busy_warning

pytestmark = pytest.mark.skipif(busy_cpus() is None, reason="no /proc/stat on this system")


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


def test_this_process_own_work_is_not_counted():
    baseline = busy_cpus(0.4)
    stop = threading.Event()
    worker = threading.Thread(target=_spin, args=(stop,))
    worker.start()
    try:
        time.sleep(0.1)
        assert busy_cpus(0.4) < baseline + 0.4  # one core spins, all of it ours
    finally:
        stop.set()
        worker.join()


def test_another_process_is_counted_and_warned_of():
    n = latency._usable_cpus()
    baseline = busy_cpus(0.4)
    if baseline > n - 1:
        pytest.skip(f"other processes already keep {baseline:.1f} of {n} CPUs busy: one more cannot show")
    child = subprocess.Popen([sys.executable, "-c", "while True: sum(range(1000))"])
    try:
        time.sleep(0.3)
        assert busy_cpus(0.4) > baseline + 0.6
        warning = busy_warning(n)  # every CPU asked for, one taken
        assert warning is not None and "other processes keep" in warning and f"of {n} CPUs busy" in warning
    finally:
        child.kill()
        child.wait()
