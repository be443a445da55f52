"""MedMNIST v2 (Yang et al., Scientific Data 2023): 2D biomedical images at 28x28, one npz per dataset.

Reads any 2D MedMNIST npz of the standard layout: `train_images`, `val_images`, `test_images` (N x 28 x 28 grey or
N x 28 x 28 x 3 colour, uint8) and their `*_labels` (N x 1 class ids). Each image keeps its official split as the
per-image attribute `split` (train / val / test), so a source or task selects e.g. `where: {split: train}`.
Class names come from the `class_names` option, else from the table below for the files named there
(PneumoniaMNIST's labels: 0 normal, 1 pneumonia), else are the label numbers. The file is read with
`allow_pickle=False`; its SHA-256 is recorded with the prepared dataset, like every source file's.

Refused with one clear error: a file lacking any of the six arrays (naming the missing ones), and a multi-label
file (labels with more than one column, e.g. ChestMNIST's 14 findings), which a class-conditional benchmark
would misread. The `medmnist` package cannot be used here: it only downloads.
"""

from __future__ import annotations

import zipfile

import numpy as np

from benchmark.data import DataSource, RawDataset, expand_path, require_files
from benchmark.errors import BenchmarkError

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))
# Label tables of MedMNIST files, by file name without `.npz` (MedMNIST's `flag`), from its INFO table.
CLASS_NAMES = {"pneumoniamnist": ["normal", "pneumonia"]}


class MedMNIST(DataSource):
    name = "medmnist"
    description = "a MedMNIST v2 2D npz (e.g. PneumoniaMNIST), its official train/val/test split as the attribute `split`"
    option_names = ("root", "flag", "class_names")

    def load(self) -> RawDataset:
        flag = self.option("flag")
        path = expand_path(self.option("root")) / f"{flag}.npz"
        require_files(
            [path],
            "MedMNIST",
            f"Point the dataset's `root` option (or GANBENCH_DATA_ROOT) at the folder holding {flag}.npz (the shared data folder's medmnist/).",
        )
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in KEYS if key not in archive.files]
                if missing:
                    raise BenchmarkError(
                        f"{path} is not a MedMNIST 2D npz: it lacks {', '.join(missing)} (has {', '.join(sorted(archive.files))}). "
                        "Use an npz of MedMNIST's standard layout (train/val/test images and labels)."
                    )
                arrays = {key: archive[key] for key in KEYS}
        except (ValueError, OSError, zipfile.BadZipFile) as error:  # pickled objects, or not an npz at all
            raise BenchmarkError(f"{path} cannot be read as a MedMNIST npz without unpickling ({error}). Use the official file.") from error
        images, labels, split_of = [], [], []
        for split in SPLITS:
            split_images, split_labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
            if split_labels.ndim == 2 and split_labels.shape[1] != 1:
                raise BenchmarkError(
                    f"{path} is a multi-label MedMNIST file ({split}_labels has {split_labels.shape[1]} columns per image): this "
                    "benchmark needs one class per image. Use a single-label MedMNIST dataset (e.g. PneumoniaMNIST)."
                )
            if split_images.dtype != np.uint8 or split_images.ndim not in (3, 4) or (split_images.ndim == 4 and split_images.shape[3] != 3):
                raise BenchmarkError(
                    f"{path}: {split}_images has shape {split_images.shape} and dtype {split_images.dtype}; a MedMNIST 2D file holds "
                    "uint8 N x H x W (grey) or N x H x W x 3 (colour) images."
                )
            if len(split_labels) != len(split_images):
                raise BenchmarkError(f"{path}: {len(split_images)} {split} images but {len(split_labels)} labels. The file is damaged.")
            images.append(split_images)
            labels.append(split_labels.reshape(-1).astype(np.int64))
            split_of.append(np.full(len(split_images), split))
        labels_all = np.concatenate(labels)
        return RawDataset(
            images=np.concatenate(images),
            labels=labels_all,
            class_names=self._class_names(flag, int(labels_all.max()) + 1),
            source_files=[path],
            image_attributes={"split": np.concatenate(split_of)},
        )

    def _class_names(self, flag: str, count: int) -> list[str]:
        names = self.options.get("class_names") or CLASS_NAMES.get(flag) or [str(label) for label in range(count)]
        if len(names) < count:
            raise BenchmarkError(f"MedMNIST '{flag}': {len(names)} class names given for labels 0..{count - 1}. Give one name per label.")
        return list(names)
