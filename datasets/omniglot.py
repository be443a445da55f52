"""Omniglot (Lake, Salakhutdinov, Tenenbaum 2015): 1,623 handwritten characters of 50 alphabets, 20 drawers each.

Classes are characters; each class carries its `alphabet` and `subset` (background / evaluation), so a task can
select "every background alphabet" or "one evaluation alphabet". Ink becomes 255 on a 0 background, as in MNIST.

Layouts (option `layout`):
- `npz`: the lossless repackaging in the shared data folder, images_{background,evaluation}.npz with ink stored as
  False, plus alphabets.csv;
- `zip`: the official images_{background,evaluation}.zip (PNGs under images_<subset>/<alphabet>/<characterNN>/
  <id>_<drawer>.png), read without unpacking; missing zips are fetched into `root` from the official host (the
  dataset's GitHub repository) and checked against the MD5s torchvision publishes, unless `fetch` is false;
- `auto` (default): `npz` where those files are present, else `zip`;
- `torchvision`: omniglot-py/images_{background,evaluation}/<alphabet>/<character>/*.png as torchvision's Omniglot
  class unpacks it.
`npz` and `zip` give the same images, labels and class names in the same order (characters by their official id,
drawers 1-20), hence the same prepared content hash and the same splits.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmark.data import DataSource, RawDataset, expand_path, require_files
from benchmark.errors import BenchmarkError
from benchmark.fetch import RemoteFile, ensure_files

SUBSETS = ("background", "evaluation")
LAYOUTS = ("auto", "npz", "zip", "torchvision")
FIRST_ID = {"background": 1, "evaluation": 965}  # alphabets.csv ids: npz index + this offset
OFFICIAL_HOST = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/"
PUBLISHED_MD5 = {"background": "68d2efa1b9178cc56df9314c21c6e718", "evaluation": "6b91aef0f799c5bb55b94e3f2daec811"}
PNG_NAME = re.compile(r"^images_[^/]+/([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")  # under images_<subset>/


def remote_zip(subset: str) -> RemoteFile:
    name = f"images_{subset}.zip"
    return RemoteFile(name, (OFFICIAL_HOST + name,), PUBLISHED_MD5[subset], "omniglot")


class Omniglot(DataSource):
    name = "omniglot"
    description = "Omniglot characters (npz pair + alphabets.csv, or torchvision's folder layout)"
    option_names = ("root", "subsets", "layout", "fetch")

    def load(self) -> RawDataset:
        root = expand_path(self.option("root"))
        subsets = self.options.get("subsets", list(SUBSETS))
        unknown = set(subsets) - set(SUBSETS)
        if unknown:
            raise BenchmarkError(f"Omniglot subsets {sorted(unknown)} are unknown; use {list(SUBSETS)}.")
        layout = self.options.get("layout", "auto")
        if layout not in LAYOUTS:
            raise BenchmarkError(f"Omniglot layout '{layout}' is unknown; use one of {', '.join(LAYOUTS)}.")
        if layout == "auto":
            layout = "npz" if all(path.is_file() for path in _npz_files(root, subsets)) else "zip"
        if layout == "npz":
            return self._load_npz(root, subsets)
        if layout == "zip":
            return self._load_zip(root, subsets)
        return self._load_torchvision(root, subsets)

    def _load_npz(self, root: Path, subsets: list[str]) -> RawDataset:
        paths = _npz_files(root, subsets)
        require_files(
            paths,
            "Omniglot",
            "Point the dataset's `root` option (or GANBENCH_DATA_ROOT) at the folder holding images_background.npz, "
            "images_evaluation.npz and alphabets.csv (the shared data folder's omniglot/), or use layout `zip` or `auto`, "
            "which read (and fetch) the official zips.",
        )
        alphabet_of_id = _read_alphabets(root / "alphabets.csv")
        characters: list[Character] = []
        for subset in subsets:
            with np.load(root / f"images_{subset}.npz", allow_pickle=False) as archive:
                strokes_are_false = archive["images"]
            # Stored True = background; ink becomes 255 so that strokes are bright as in MNIST.
            ink_bright = np.where(strokes_are_false, 0, 255).astype(np.uint8)
            per_alphabet: dict[str, int] = {}
            for index, drawings in enumerate(ink_bright):
                alphabet = alphabet_of_id.get(index + FIRST_ID[subset])
                if alphabet is None:
                    raise BenchmarkError(
                        f"{root / 'alphabets.csv'} names no alphabet for character id {index + FIRST_ID[subset]} "
                        f"({subset} index {index}). Use the alphabets.csv that ships with the npz files."
                    )
                per_alphabet[alphabet] = per_alphabet.get(alphabet, 0) + 1
                characters.append(Character(subset, alphabet, f"character{per_alphabet[alphabet]:02d}", list(drawings)))
        return _raw_dataset(characters, paths)

    def _load_zip(self, root: Path, subsets: list[str]) -> RawDataset:
        paths = [root / f"images_{subset}.zip" for subset in subsets]
        if self.options.get("fetch", True):
            npz_instead = "Or point `root` at a folder holding the npz layout (images_<subset>.npz and alphabets.csv)."
            paths = ensure_files([remote_zip(subset) for subset in subsets], root, "Omniglot", npz_instead)
        require_files(
            paths,
            "Omniglot",
            "Copy the official images_background.zip and images_evaluation.zip there, let the source fetch them (`fetch: "
            "true`), or point `root` at the shared data folder's omniglot/ (npz layout).",
        )
        characters = [
            Character(subset, alphabet, character, drawings)
            for subset, path in zip(subsets, paths, strict=True)
            for (alphabet, character), drawings in _read_zip(path).items()
        ]
        return _raw_dataset(characters, paths)

    def _load_torchvision(self, root: Path, subsets: list[str]) -> RawDataset:
        characters: list[Character] = []
        files: list[Path] = []
        for subset in subsets:
            folder = root / "omniglot-py" / f"images_{subset}"
            if not folder.is_dir():
                raise BenchmarkError(f"Omniglot: missing folder {folder}. Download with torchvision.datasets.Omniglot.")
            for alphabet_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                for character_dir in sorted(p for p in alphabet_dir.iterdir() if p.is_dir()):
                    pngs = sorted(character_dir.glob("*.png"))
                    drawings = []
                    for png in pngs:
                        with Image.open(png) as image:
                            drawings.append(ImageOps.invert(image.convert("L")))  # ink is black in the PNGs
                    characters.append(Character(subset, alphabet_dir.name, character_dir.name, drawings))
                    files.extend(pngs)
        return _raw_dataset(characters, files)


@dataclass
class Character:
    """One Omniglot character: its subset, alphabet, name within the alphabet (characterNN) and its drawings."""

    subset: str
    alphabet: str
    name: str
    drawings: list[np.ndarray] | list[Image.Image]


def _raw_dataset(characters: list[Character], source_files: list[Path]) -> RawDataset:
    """Characters become classes in the given order, named "<alphabet>/<characterNN>"."""
    images = [drawing for character in characters for drawing in character.drawings]
    return RawDataset(
        images=np.stack(images) if images and isinstance(images[0], np.ndarray) else images,
        labels=np.concatenate([np.full(len(character.drawings), label) for label, character in enumerate(characters)]),
        class_names=[f"{character.alphabet}/{character.name}" for character in characters],
        class_attributes={"alphabet": [c.alphabet for c in characters], "subset": [c.subset for c in characters]},
        source_files=source_files,
    )


def _read_alphabets(path: Path) -> dict[int, str]:
    alphabet_of_id: dict[int, str] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for char_id in range(int(row["first_char_id"]), int(row["last_char_id"]) + 1):
                alphabet_of_id[char_id] = row["alphabet"]
    return alphabet_of_id


def _npz_files(root: Path, subsets: list[str]) -> list[Path]:
    return [root / f"images_{subset}.npz" for subset in subsets] + [root / "alphabets.csv"]


def _read_zip(path: Path) -> dict[tuple[str, str], list[np.ndarray]]:
    """Every drawing of an official Omniglot zip, ink 255 on 0, grouped by (alphabet, character) in the order of the
    characters' official ids and the drawers' numbers: the order of the npz repackaging."""
    found: list[tuple[int, int, str, str, str]] = []
    try:
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                match = PNG_NAME.match(member)
                if match:
                    alphabet, character, char_id, drawer = match.groups()
                    found.append((int(char_id), int(drawer), alphabet, character, member))
            if not found:
                raise BenchmarkError(
                    f"{path} holds no Omniglot drawings (images_<subset>/<alphabet>/<characterNN>/<id>_<drawer>.png). "
                    "Use the official images_background.zip / images_evaluation.zip."
                )
            grouped: dict[tuple[str, str], list[np.ndarray]] = {}
            for _, _, alphabet, character, member in sorted(found):
                with Image.open(io.BytesIO(archive.read(member))) as image:
                    ink_bright = ImageOps.invert(image.convert("L"))  # the PNGs draw black ink on white
                grouped.setdefault((alphabet, character), []).append(np.asarray(ink_bright, dtype=np.uint8))
    except (OSError, zipfile.BadZipFile) as error:
        raise BenchmarkError(f"{path} is not a readable zip ({error}). Delete it and let the source fetch it again.") from error
    return grouped
