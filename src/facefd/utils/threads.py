"""CPU threads that match the CPUs a container may actually use.

PyTorch sizes its thread pool from the CPUs it can see. In a container limited by a CPU *quota*
(cgroup ``cpu.max`` / ``cpu.cfs_quota_us``, e.g. ``docker --cpus=2`` or a Kubernetes CPU limit) it
sees every host CPU and starts that many threads on, say, 2 CPUs' worth of time: OpenMP threads then
spin waiting for each other and a run burns several times the CPU time it needs. The cpuset (the
CPUs actually listed for the process) is respected by PyTorch already; the quota is not.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Optional

import torch

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota(root: Path = CGROUP_ROOT) -> Optional[float]:
    """CPUs' worth of time the cgroup allows (``2.0`` for ``--cpus=2``), or None when unlimited/unknown."""
    try:
        v2 = root / "cpu.max"
        if v2.exists():  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota_file, period_file = root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us"
        if quota_file.exists() and period_file.exists():  # cgroup v1: quota -1 means unlimited
            quota, period = int(quota_file.read_text()), int(period_file.read_text())
            return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None
    return None


def limit_threads_to_cpu_quota(root: Path = CGROUP_ROOT) -> int:
    """Lower PyTorch's intra-op threads to the CPU quota (rounded up) unless OMP_NUM_THREADS is set;
    return the thread count in force."""
    threads = torch.get_num_threads()
    quota = cpu_quota(root)
    if quota is None or os.environ.get("OMP_NUM_THREADS"):
        return threads
    allowed = max(1, math.ceil(quota))
    if allowed < threads:
        torch.set_num_threads(allowed)
        log.info("CPU quota of %.2f CPUs: using %d PyTorch threads instead of %d (set OMP_NUM_THREADS to choose)",
                 quota, allowed, threads)
        return allowed
    return threads
