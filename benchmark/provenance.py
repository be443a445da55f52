"""What every result record carries about the code and machine that produced it."""

from __future__ import annotations

import platform
import subprocess
from functools import cache
from typing import Any

import torch

import benchmark
from benchmark.plugins import REPO_ROOT


@cache
def code_version() -> str:
    """`git describe --always --dirty` of the checkout, or the package version outside a git checkout."""
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        described = "unknown"
    return f"{benchmark.__version__}+{described}"


def environment(device: torch.device | str | None = None) -> dict[str, Any]:
    """What can change a stage's numbers besides its settings: the code, the libraries, the platform, torch's
    intra-op threads (CPU reductions round differently over another split) and the device it computed on."""
    return {
        "code_version": code_version(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        **({"device": str(device)} if device is not None else {}),
    }


def resolve_device(requested: str) -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        from benchmark.errors import BenchmarkError

        raise BenchmarkError("device: cuda was requested but no CUDA device is visible. Use device: auto or cpu.")
    return torch.device(requested)


def configure_determinism(threads: int | None) -> None:
    """Same seed, same numbers on CPU: deterministic kernels, a fixed thread count, and torch's global generator
    in a fixed state (torch seeds it at random in every process; stages draw from their own seeded generators,
    but checkpoints store the global state, which would make two identical runs' files differ)."""
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
