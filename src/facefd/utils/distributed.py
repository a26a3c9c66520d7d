"""Leave torch.distributed cleanly when a process exits.

Lightning destroys the default process group at exit only for NCCL. A gloo group (CPU DDP, e.g.
``trainer=ddp_sim``) is left to the interpreter's teardown, where gloo's threads can outlive it and abort
the rank ("terminate called without an active exception", SIGABRT) once in many runs; PyTorch's own gloo
tests avoid that race the same way, by destroying the group explicitly (pytorch/pytorch#65513).
"""
from __future__ import annotations

import atexit

import torch.distributed as dist

_registered = False


def destroy_process_group_at_exit() -> None:
    """Once per process, while a process group is up: destroy it when the interpreter exits (every
    rank calls this from a Lightning ``setup`` hook, which runs after the strategy set the group up)."""
    global _registered
    if _registered or not (dist.is_available() and dist.is_initialized()):
        return
    atexit.register(destroy_process_group_if_initialized)
    _registered = True


def destroy_process_group_if_initialized() -> None:
    """Destroy the default process group if one is up (an atexit hook for code that registers before any
    group exists, such as a module spawned ranks import)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
