"""The MedMNIST source: the real PneumoniaMNIST file (skipped with the reason when the shared data folder is
absent), generated npz files of the same layout that cover every code path without it, and the bad-input cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmark.data import data_sources, prepare_dataset
from benchmark.encoder import encoder_training_set
from benchmark.errors import BenchmarkError
from benchmark.splits import build_source_manifest, build_task_manifest, select_indices
from conftest import SHARED, assert_uint8_nchw

PNEUMONIA = SHARED / "medmnist" / "pneumoniamnist.npz"
needs_pneumonia = pytest.mark.skipif(
    not PNEUMONIA.is_file(), reason=f"PneumoniaMNIST not found under {SHARED} (set GANBENCH_DATA_ROOT to the shared data folder)"
)
SIZES = {"train": 6, "val": 3, "test": 4}


def write_npz(folder: Path, flag: str, channels: int = 1, labels_columns: int = 1, drop: str | None = None) -> Path:
    """A MedMNIST-layout npz whose pixel values encode (split, index), so that order and content can be checked."""
    arrays = {}
    for number, (split, count) in enumerate(SIZES.items()):
        shape = (count, 28, 28) if channels == 1 else (count, 28, 28, 3)
        values = (np.arange(count)[:, None, None] + 20 * number).astype(np.uint8)
        arrays[f"{split}_images"] = np.broadcast_to(values.reshape(count, 1, 1, *([1] if channels == 3 else [])), shape).copy()
        arrays[f"{split}_labels"] = (np.arange(count * labels_columns).reshape(count, labels_columns) % 3).astype(np.uint8)
    if drop:
        arrays = {key: value for key, value in arrays.items() if not key.startswith(drop)}
    path = folder / f"{flag}.npz"
    np.savez(path, **arrays)
    return path


def test_registered():
    assert "medmnist" in data_sources()


@needs_pneumonia
def test_pneumoniamnist_official_splits_classes_and_checksum():
    """MedMNIST v2's published PneumoniaMNIST: 4,708 / 524 / 624 images (train / val / test), 1,583 normal and 4,273
    pneumonia in all; the recorded SHA-256 is the one the shared folder lists (SHA256SUMS)."""
    dataset = prepare_dataset("pneumonia", "medmnist", {"root": str(PNEUMONIA.parent), "flag": "pneumoniamnist"}, 28, 1)
    assert_uint8_nchw(dataset.images)
    split = dataset.image_attributes["split"]
    assert {name: int((split == name).sum()) for name in SIZES} == {"train": 4708, "val": 524, "test": 624}
    assert dataset.class_names == ["normal", "pneumonia"] and np.bincount(dataset.labels).tolist() == [1583, 4273]
    listed = dict(line.split()[::-1] for line in (PNEUMONIA.parent / "SHA256SUMS").read_text().splitlines())
    assert dataset.metadata["source_files"][0]["sha256"] == listed["pneumoniamnist.npz"]
    normal_train, classes = select_indices(dataset, {"classes": ["normal"], "where": {"split": "train"}}, "source")
    assert len(normal_train) == 1214 and classes == [0]


@pytest.mark.parametrize("channels", [1, 3])
def test_a_generated_file_keeps_its_order_splits_and_named_classes(tmp_path, channels):
    write_npz(tmp_path, "toymnist", channels)
    options = {"root": str(tmp_path), "flag": "toymnist", "class_names": ["a", "b", "c"]}
    dataset = prepare_dataset("toy", "medmnist", options, 28, channels)
    assert_uint8_nchw(dataset.images, channels=channels)
    assert dataset.images[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5, 20, 21, 22, 40, 41, 42, 43]  # train, val, test in order
    assert dataset.image_attributes["split"].tolist() == ["train"] * 6 + ["val"] * 3 + ["test"] * 4
    assert dataset.class_names == ["a", "b", "c"] and dataset.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2, 0]
    picked, _ = select_indices(dataset, {"classes": ["b"], "where": {"split": ["val", "test"]}}, "task")
    assert picked.tolist() == [7, 10]
    unnamed = prepare_dataset("toy", "medmnist", {"root": str(tmp_path), "flag": "toymnist"}, 28, channels)
    assert unnamed.class_names == ["0", "1", "2"]


def test_bad_files_are_refused_with_one_clear_error(tmp_path):
    write_npz(tmp_path, "nolabels", drop="val_labels")
    with pytest.raises(BenchmarkError, match=r"nolabels.npz is not a MedMNIST 2D npz: it lacks val_labels \(has test_images"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "nolabels"}, 28, 1)
    write_npz(tmp_path, "chestlike", labels_columns=14)
    with pytest.raises(BenchmarkError, match="multi-label MedMNIST file .*14 columns"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "chestlike"}, 28, 1)
    np.savez(tmp_path / "pickled.npz", **{f"{split}_{kind}": np.array([object()], dtype=object) for split in SIZES for kind in ("images", "labels")})
    with pytest.raises(BenchmarkError, match="cannot be read as a MedMNIST npz without unpickling"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "pickled"}, 28, 1)
    write_npz(tmp_path, "short")
    with pytest.raises(BenchmarkError, match="1 class names given for labels 0..2"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "short", "class_names": ["only"]}, 28, 1)
    with pytest.raises(BenchmarkError, match="missing.npz"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "missing"}, 28, 1)
    # A known file with fetching off is looked for, not fetched (GANBENCH_OFFLINE would give another message).
    with pytest.raises(BenchmarkError, match=r"MedMNIST: missing .*octmnist.npz.*fetched from Zenodo unless `fetch: false`"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "octmnist", "fetch": False}, 28, 1)


@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((6, 28, 28, 4), np.uint8), ((6, 784), np.uint8), ((6, 28, 28, 3, 1), np.uint8), ((6, 28, 28), np.float32)],
    ids=["four-channels", "flat", "five-dims", "float"],
)
def test_images_of_another_shape_or_type_are_refused(tmp_path, shape, dtype):
    path = write_npz(tmp_path, "odd")
    arrays = dict(np.load(path))
    arrays["val_images"] = np.zeros(shape, dtype=dtype)
    np.savez(path, **arrays)
    with pytest.raises(BenchmarkError, match=r"val_images has shape .* a MedMNIST 2D file holds uint8 N x H x W"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "odd"}, 28, 1)


def test_the_domain_encoder_refuses_a_target_domain_whose_every_image_is_held_out(tmp_path, digits):
    """A task that holds out a whole dataset (reference = all the rest) would leave the encoder, the metrics'
    feature space, without one image of that domain: one clear error names the dataset and the fix. With a
    reference_size that leaves images over, they train the encoder."""
    write_npz(tmp_path, "toymnist")
    xrays = prepare_dataset("toy", "medmnist", {"root": str(tmp_path), "flag": "toymnist"}, 28, 1)
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    spec = {"kind": "cross-domain", "source": "low", "target": {"dataset": "toy"}, "validation_size": 3, "shot_pool_size": 5}
    with pytest.raises(BenchmarkError, match=r"hold out every one of the 13 images of 'toy'.*Set reference_size to at most 4"):
        build_task_manifest("all_held_out", spec, source, digits, xrays, [2], 1, 0)  # one task: found at its split
    some_left = build_task_manifest("some_left", {**spec, "reference_size": 3}, source, digits, xrays, [2], 1, 0)
    # Several tasks on one dataset can hold it out together: found where the encoder gathers its images.
    other = build_task_manifest("other", {**spec, "reference_size": 3}, source, digits, xrays, [2], 1, 0)
    held = {
        index
        for manifest in (some_left, other)
        for block in ("reference", "validation", "shot_pool")
        for index in manifest["target"][block]["indices"]
    }
    everything = {**other, "target": {**other["target"], "reference": {"indices": sorted(set(range(13)) - held)}}}
    with pytest.raises(BenchmarkError, match=r"Dataset 'toy' leaves the domain encoder no image: the tasks hold out every one of its 13 images"):
        encoder_training_set([some_left, other, everything], {"digits": digits, "toy": xrays}, 1000, 0)
    _, _, _, provenance = encoder_training_set([some_left], {"digits": digits, "toy": xrays}, 1000, 0)
    assert provenance["datasets"]["toy"]["num_images"] == 13 - 3 - 5 - 3
