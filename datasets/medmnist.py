"""MedMNIST v2 (Yang et al., Scientific Data 2023): 2D biomedical images at 28x28, one npz per dataset.

Reads any 2D MedMNIST npz of the standard layout: `train_images`, `val_images`, `test_images` (N x 28 x 28 grey or
N x 28 x 28 x 3 colour, uint8) and their `*_labels` (N x 1 class ids). Each image keeps its official split as the
per-image attribute `split` (train / val / test), so a source or task selects e.g. `where: {split: train}`.
Class names come from the `class_names` option, else from the table below for the files named there
(PneumoniaMNIST's labels: 0 normal, 1 pneumonia), else are the label numbers. The file is read with
`allow_pickle=False`; its SHA-256 is recorded with the prepared dataset, like every source file's.

Refused with one clear error: a file lacking any of the six arrays (naming the missing ones), and a multi-label
file (labels with more than one column, e.g. ChestMNIST's 14 findings), which a class-conditional benchmark
would misread.

A missing file of a single-label 2D dataset at 28 px (the table below) is fetched into `root` from the official
host, Zenodo's MedMNIST v2 record, and checked against the MD5 that the `medmnist` package publishes for it, unless
the option `fetch` is false. The `medmnist` package itself is not used: it needs the network for every load.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from benchmark.data import DataSource, RawDataset, expand_path, require_files
from benchmark.errors import BenchmarkError
from benchmark.fetch import RemoteFile, ensure_files

SPLITS = ("train", "val", "test")
KEYS = tuple(f"{split}_{kind}" for split in SPLITS for kind in ("images", "labels"))
ZENODO_RECORD = "https://zenodo.org/records/10519652/files/"  # MedMNIST v2's files, as the medmnist package 3.0 fetches them
# The single-label 2D files at 28 px, by file name without `.npz` (MedMNIST's `flag`): the MD5 and label table that
# the medmnist package's INFO publishes. ChestMNIST is multi-label and left out (the reader refuses it).
PUBLISHED_MD5 = {
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "tissuemnist": "ebe78ee8b05294063de985d821c1c34b",
    "organamnist": "68e3f8846a6bd62f0c9bf841c0d9eacc",
    "organcmnist": "b9ceb9546e10131b32923c5bbeaea2b1",
    "organsmnist": "9ab87b696fb54e2a387ebe992d6ed5f1",
}
ORGANS = [
    "bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left", "lung-right",
    "pancreas", "spleen",
]  # fmt: skip
CLASS_NAMES = {
    "pathmnist": [
        "adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
        "cancer-associated stroma", "colorectal adenocarcinoma epithelium",
    ],
    "dermamnist": [
        "actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma", "benign keratosis-like lesions",
        "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions",
    ],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "breastmnist": ["malignant", "normal, benign"],
    "bloodmnist": [
        "basophil", "eosinophil", "erythroblast",
        "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte", "monocyte", "neutrophil",
        "platelet",
    ],
    "tissuemnist": [
        "Collecting Duct, Connecting Tubule", "Distal Convoluted Tubule", "Glomerular endothelial cells",
        "Interstitial endothelial cells", "Leukocytes", "Podocytes", "Proximal Tubule Segments", "Thick Ascending Limb",
    ],
    "organamnist": ORGANS,
    "organcmnist": ORGANS,
    "organsmnist": ORGANS,
}  # fmt: skip


def remote_file(flag: str) -> RemoteFile:
    return RemoteFile(f"{flag}.npz", (f"{ZENODO_RECORD}{flag}.npz?download=1",), PUBLISHED_MD5[flag], "medmnist")


class MedMNIST(DataSource):
    name = "medmnist"
    description = "a MedMNIST v2 2D npz (e.g. PneumoniaMNIST), its official train/val/test split as the attribute `split`"
    option_names = ("root", "flag", "class_names", "fetch")

    def load(self) -> RawDataset:
        flag = self.option("flag")
        path = expand_path(self.option("root")) / f"{flag}.npz"
        if self.options.get("fetch", True) and flag in PUBLISHED_MD5:
            [path] = ensure_files([remote_file(flag)], path.parent, "MedMNIST")
        require_files(
            [path],
            "MedMNIST",
            f"Point the dataset's `root` option (or GANBENCH_DATA_ROOT) at the folder holding {flag}.npz (the shared data folder's "
            f"medmnist/); the files named in datasets/medmnist.py are fetched from Zenodo unless `fetch: false`.",
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
            _check_labels(path, split, split_labels)
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
        if len(labels_all) == 0:
            raise BenchmarkError(f"{path} holds no images (every split is empty). Use the official file, or one with images in it.")
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


def _check_labels(path: Path, split: str, labels: np.ndarray) -> None:
    """One non-negative integer class id per image (N or N x 1): a label of -1 would index another dataset's class
    once the encoder offsets the labels, and a float label would be truncated to the class below."""
    if labels.ndim not in (1, 2):
        raise BenchmarkError(
            f"{path}: {split}_labels has shape {labels.shape}; MedMNIST labels are N x 1 (or N) class ids, one per image. "
            "Use the official file, or reshape the labels to N x 1."
        )
    if labels.dtype.kind not in "iu":
        raise BenchmarkError(
            f"{path}: {split}_labels are {labels.dtype}; MedMNIST labels are integer class ids (uint8 in the official files). "
            "Store them as integers 0, 1, ..."
        )
    if labels.size and labels.min() < 0:
        raise BenchmarkError(f"{path}: {split}_labels hold {int(labels.min())}; class ids are 0, 1, ... Fix the labels (or use the official file).")
