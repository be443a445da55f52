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
import stat
import tempfile
from pathlib import Path

from benchmark.errors import BenchmarkError

log = logging.getLogger(__name__)

_held: list[int] = []  # open slot files' descriptors: the locks live as long as the process
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


def lock_folder() -> Path:
    """Where the slot files live: $GANBENCH_GPU_LOCKS, else a folder of this user's in $XDG_RUNTIME_DIR (private by
    design), else one named by the user id under the temporary directory, which `private_folder` checks."""
    configured = os.environ.get("GANBENCH_GPU_LOCKS")
    if configured:
        return Path(configured)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    return base / f"ganbench-gpu-slots-{os.getuid()}"


def private_folder(folder: Path) -> Path:
    """`folder`, created with mode 0700 where missing; refused unless it is a real folder (no symlink) of this user
    that nobody else can write: another local user who could put files there could make a slot file a symlink to
    any file of ours, or hold our slots."""
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    status = folder.lstat()
    if stat.S_ISLNK(status.st_mode) or not stat.S_ISDIR(status.st_mode):
        problem = "is a symlink" if stat.S_ISLNK(status.st_mode) else "is not a folder"
    elif status.st_uid != os.getuid():
        problem = f"belongs to user id {status.st_uid}, not to this user ({os.getuid()})"
    elif status.st_mode & 0o022:
        problem = f"can be written by other users (mode {stat.S_IMODE(status.st_mode):o})"
    else:
        return folder
    raise BenchmarkError(
        f"The GPU slot folder {folder} {problem}, so its lock files cannot be trusted. Remove it (a new one is made, mode "
        "700), or set GANBENCH_GPU_LOCKS to a folder of your own that only you can write."
    )


def open_lock_file(path: Path) -> int:
    """A slot file opened for locking: created 0600 where missing, never truncated, never through a symlink."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise BenchmarkError(f"Cannot open the GPU slot file {path} ({error.strerror}; a symlink is refused). Remove it and run again.") from error
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise BenchmarkError(f"The GPU slot file {path} is not a regular file. Remove it and run again.")
    return descriptor


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
    folder = private_folder(lock_dir or lock_folder())
    for slot, gpu in enumerate(gpus):
        descriptor = open_lock_file(folder / f"gpu{gpu}.lock")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        _held.append(descriptor)
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
