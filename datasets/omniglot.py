"""Omniglot (Lake, Salakhutdinov, Tenenbaum 2015): 1,623 handwritten characters of 50 alphabets, 20 drawers each.

Classes are characters; each class carries its `alphabet` and `subset` (background / evaluation), so a task can
select "every background alphabet" or "one evaluation alphabet". Ink becomes 255 on a 0 background, as in MNIST.

Layouts: `npz` (the lossless repackaging in the shared data folder: images_{background,evaluation}.npz with ink
stored as False, plus alphabets.csv) or `torchvision` (omniglot-py/images_{background,evaluation}/<alphabet>/
<character>/*.png as torchvision's Omniglot class downloads it).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmark.data import DataSource, RawDataset, expand_path, require_files
from benchmark.errors import BenchmarkError

SUBSETS = ("background", "evaluation")
FIRST_ID = {"background": 1, "evaluation": 965}  # alphabets.csv ids: npz index + this offset


class Omniglot(DataSource):
    name = "omniglot"
    description = "Omniglot characters (npz pair + alphabets.csv, or torchvision's folder layout)"
    option_names = ("root", "subsets", "layout")

    def load(self) -> RawDataset:
        root = expand_path(self.option("root"))
        subsets = self.options.get("subsets", list(SUBSETS))
        unknown = set(subsets) - set(SUBSETS)
        if unknown:
            raise BenchmarkError(f"Omniglot subsets {sorted(unknown)} are unknown; use {list(SUBSETS)}.")
        layout = self.options.get("layout", "npz")
        if layout == "npz":
            return self._load_npz(root, subsets)
        if layout == "torchvision":
            return self._load_torchvision(root, subsets)
        raise BenchmarkError(f"Omniglot layout '{layout}' is unknown; use 'npz' or 'torchvision'.")

    def _load_npz(self, root: Path, subsets: list[str]) -> RawDataset:
        paths = [root / f"images_{subset}.npz" for subset in subsets] + [root / "alphabets.csv"]
        require_files(
            paths,
            "Omniglot",
            "Point the dataset's `root` option (or GANBENCH_DATA_ROOT) at the folder holding images_background.npz, "
            "images_evaluation.npz and alphabets.csv (the shared data folder's omniglot/).",
        )
        alphabet_of_id = _read_alphabets(root / "alphabets.csv")
        images, labels, class_names, alphabets, subset_of_class = [], [], [], [], []
        for subset in subsets:
            with np.load(root / f"images_{subset}.npz", allow_pickle=False) as archive:
                strokes_are_false = archive["images"]
            characters, drawers = strokes_are_false.shape[:2]
            # Stored True = background; ink becomes 255 so that strokes are bright as in MNIST.
            images.append(np.where(strokes_are_false.reshape(-1, *strokes_are_false.shape[2:]), 0, 255).astype(np.uint8))
            for index in range(characters):
                alphabet = alphabet_of_id.get(index + FIRST_ID[subset])
                if alphabet is None:
                    raise BenchmarkError(
                        f"{root / 'alphabets.csv'} names no alphabet for character id {index + FIRST_ID[subset]} "
                        f"({subset} index {index}). Use the alphabets.csv that ships with the npz files."
                    )
                per_alphabet = sum(1 for name in alphabets if name == alphabet)
                labels.append(np.full(drawers, len(class_names)))
                class_names.append(f"{alphabet}/character{per_alphabet + 1:02d}")
                alphabets.append(alphabet)
                subset_of_class.append(subset)
        return RawDataset(
            images=np.concatenate(images),
            labels=np.concatenate(labels),
            class_names=class_names,
            class_attributes={"alphabet": alphabets, "subset": subset_of_class},
            source_files=paths,
        )

    def _load_torchvision(self, root: Path, subsets: list[str]) -> RawDataset:
        images: list[Image.Image] = []
        labels: list[int] = []
        class_names, alphabets, subset_of_class, files = [], [], [], []
        for subset in subsets:
            folder = root / "omniglot-py" / f"images_{subset}"
            if not folder.is_dir():
                raise BenchmarkError(f"Omniglot: missing folder {folder}. Download with torchvision.datasets.Omniglot.")
            for alphabet_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                for character_dir in sorted(p for p in alphabet_dir.iterdir() if p.is_dir()):
                    for png in sorted(character_dir.glob("*.png")):
                        with Image.open(png) as image:
                            images.append(ImageOps.invert(image.convert("L")))  # ink is black in the PNGs
                        labels.append(len(class_names))
                        files.append(png)
                    class_names.append(f"{alphabet_dir.name}/{character_dir.name}")
                    alphabets.append(alphabet_dir.name)
                    subset_of_class.append(subset)
        return RawDataset(
            images=images,
            labels=np.asarray(labels),
            class_names=class_names,
            class_attributes={"alphabet": alphabets, "subset": subset_of_class},
            source_files=files,
        )


def _read_alphabets(path: Path) -> dict[int, str]:
    alphabet_of_id: dict[int, str] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for char_id in range(int(row["first_char_id"]), int(row["last_char_id"]) + 1):
                alphabet_of_id[char_id] = row["alphabet"]
    return alphabet_of_id
