"""One GPU per job on a local multi-GPU node.

Snakemake's `--resources gpu=N` only limits how many GPU jobs run at once; it never tells a job which GPU to use
(`CUDA_VISIBLE_DEVICES` is left alone), so every job would land on `cuda:0`. A training job therefore claims a free
GPU slot itself before CUDA starts: an exclusive `flock` on one of N slot files, held until the process exits (the
kernel releases it even when the job is killed), and `CUDA_VISIBLE_DEVICES` set to that slot. With at most N GPU
jobs at once a free slot always exists. Nothing happens where the scheduler already chose (SLURM sets
`CUDA_VISIBLE_DEVICES` for a job that asked for `--gpus`), where the config asks for the CPU, or on a node with
one GPU or none. Where `CUDA_VISIBLE_DEVICES` already lists several GPUs (a share of a server), a job claims one of
those.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import IO

from benchmark.errors import BenchmarkError

log = logging.getLogger(__name__)

_held: list[IO[bytes]] = []  # open slot files: the locks live as long as the process
DEVICE_FILES = Path("/dev")  # where the NVIDIA driver puts one `nvidia<N>` file per GPU


def gpu_count() -> int:
    """GPUs on this node without starting CUDA (which would fix the visible devices): $GANBENCH_GPUS, else the
    NVIDIA device files `/dev/nvidia<N>`."""
    configured = os.environ.get("GANBENCH_GPUS")
    if configured:
        if not configured.isdigit():
            raise BenchmarkError(
                f"GANBENCH_GPUS is {configured!r}; set it to this node's number of GPUs (e.g. 8), or unset it to count /dev/nvidia*."
            )
        return int(configured)
    return sum(1 for entry in DEVICE_FILES.glob("nvidia*") if re.fullmatch(r"nvidia\d+", entry.name))


def claim_gpu_slot(requested_device: str, lock_dir: Path | None = None) -> int | None:
    """Claim a free GPU for this process (see the module's docstring); returns its index, or None when nothing was
    to be done. `requested_device`: the stage's `device` setting."""
    if requested_device == "cpu":
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    # Set with one GPU: the scheduler chose (SLURM with --gpus=1). Set with several (a shared server's share): claim
    # one of those. Unset: one of the node's.
    gpus = [entry.strip() for entry in visible.split(",") if entry.strip()] if visible is not None else [str(i) for i in range(gpu_count())]
    if len(gpus) < 2:
        return None
    folder = lock_dir or Path(os.environ.get("GANBENCH_GPU_LOCKS", Path(tempfile.gettempdir()) / f"ganbench-gpu-slots-{os.getuid()}"))
    folder.mkdir(parents=True, exist_ok=True)
    for slot, gpu in enumerate(gpus):
        handle = open(folder / f"gpu{gpu}.lock", "wb")  # noqa: SIM115 - held open on purpose: the lock is the open file
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held.append(handle)
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
        log.info("claimed GPU %s (%d of %d; CUDA_VISIBLE_DEVICES=%s)", gpu, slot + 1, len(gpus), gpu)
        return slot
    log.warning(
        "all %d GPU slots are taken: running on the GPUs CUDA shows by default (run at most %d GPU jobs at once: --resources gpu=%d)",
        len(gpus),
        len(gpus),
        len(gpus),
    )
    return None
