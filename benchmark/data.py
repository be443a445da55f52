"""Dataset sources and the one canonical prepared form every later stage reads.

A source adapter (one file in `datasets/`, or an entry point in group `ganbench.datasets`) reads raw files and
returns a `RawDataset`. `prepare_dataset` converts every image with one fixed filter to the configured size and
channels and stores a `PreparedDataset`: uint8 images N x C x H x W, integer labels, class names, per-class
attributes (e.g. an Omniglot character's alphabet) and the sha256 of every source file read.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_arrays, sha256_file
from benchmark.io import atomic_write_files, json_bytes
from benchmark.layout import dataset_metadata
from benchmark.plugins import discover, lookup, plugin_folders

log = logging.getLogger(__name__)

# The one resize filter used for every image of every dataset (recorded in the prepared metadata).
RESIZE_FILTER = Image.Resampling.BOX
RESIZE_FILTER_NAME = "PIL.Image.Resampling.BOX"


@dataclass
class RawDataset:
    """What a source adapter returns: images at native size, labels into `class_names`."""

    images: np.ndarray | Sequence[Image.Image]  # uint8 (N, H, W) or (N, H, W, 3) arrays, or PIL images
    labels: np.ndarray
    class_names: list[str]
    source_files: list[Path]
    class_attributes: dict[str, list[str]] = field(default_factory=dict)
    image_attributes: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. {"partition": train/test}
    # Grey level that transparent pixels are composited onto (0 black .. 255 white); adapters of images with an
    # alpha channel state it (image_folder: its `alpha_background` option).
    alpha_background: int = 255


@dataclass
class PreparedDataset:
    images: np.ndarray  # uint8 (N, C, H, W)
    labels: np.ndarray  # int64 (N,)
    metadata: dict[str, Any]
    image_attributes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def class_names(self) -> list[str]:
        return self.metadata["class_names"]

    @property
    def class_attributes(self) -> dict[str, list[str]]:
        return self.metadata["class_attributes"]

    @property
    def content_sha256(self) -> str:
        return self.metadata["content_sha256"]

    def save(self, npz_path: str | Path) -> None:
        """The arrays to `npz_path`, the metadata beside them (`benchmark.layout.dataset_metadata`)."""
        arrays = {"images": self.images, "labels": self.labels}
        arrays.update({f"attr_{key}": value for key, value in self.image_attributes.items()})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        # One unit: arrays without their metadata (or the reverse) would be a half-prepared dataset.
        atomic_write_files({npz_path: buffer.getvalue(), dataset_metadata(npz_path): json_bytes(self.metadata)})

    @classmethod
    def load(cls, npz_path: str | Path) -> PreparedDataset:
        npz_path = Path(npz_path)
        json_path = dataset_metadata(npz_path)
        if not npz_path.is_file() or not json_path.is_file():
            raise BenchmarkError(
                f"Prepared dataset {npz_path} (or its {json_path.name}) is missing. Run the prepare-data stage "
                "(snakemake does this) before the stages that read it."
            )
        try:
            metadata = json.loads(json_path.read_text())
            with np.load(npz_path, allow_pickle=False) as archive:
                images = archive["images"]
                labels = archive["labels"]
                attributes = {key[5:]: archive[key] for key in archive.files if key.startswith("attr_")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise BenchmarkError(f"Prepared dataset {npz_path} is unreadable ({error}). Delete it and rerun prepare-data.") from error
        if sha256_arrays(images, labels) != metadata["content_sha256"]:
            raise BenchmarkError(
                f"{npz_path} does not match the content hash in {json_path.name}: the file changed or is corrupt. "
                "Delete both files and run the prepare-data stage again."
            )
        return cls(images=images, labels=labels, metadata=metadata, image_attributes=attributes)


class DataSource:
    """Base class of dataset source adapters. Subclasses set `name`, list the options they read in
    `option_names` (any other option is refused by name, so a misspelt one is never ignored; None leaves a
    plugin's options unchecked) and implement `load`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    option_names: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, **options: Any) -> None:
        self.check_options(options)
        self.options = options

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(cls.option_names)) if cls.option_names is not None else []
        if unknown:
            known = ", ".join(cls.option_names) or "none"
            raise BenchmarkError(
                f"Dataset source '{cls.name}' has no option(s) {', '.join(unknown)}; it takes: {known}. Fix the spelling or remove them."
            )

    def option(self, key: str) -> Any:
        if key not in self.options:
            raise BenchmarkError(f"Dataset source '{self.name}' needs the option '{key}' (under datasets.<name>.options).")
        return self.options[key]

    def load(self) -> RawDataset:
        raise NotImplementedError


@cache
def data_sources() -> dict[str, type[DataSource]]:
    return discover(DataSource, plugin_folders("datasets", "GANBENCH_DATASETS_PATH"), "ganbench.datasets", "datasets")


def get_data_source(name: str) -> type[DataSource]:
    return lookup(data_sources(), name, "dataset source")


SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N")  # 16-bit grey levels, as PIL opens a 16-bit PNG


def convert_images(
    images: np.ndarray | Sequence[Image.Image], image_size: int, channels: int, alpha_background: int
) -> tuple[np.ndarray, dict[str, int]]:
    """Every image to uint8 (C, size, size) with one fixed filter; mixed sizes and modes are allowed.

    Two conversions would lose content if left to PIL's `convert`, so they are done first and counted: an alpha
    channel is composited onto the `alpha_background` grey level (dropped, a transparent background turns
    black), and 16-bit grey levels are rescaled to 0..255 (converted, they are clipped at 255). Returns the
    images and how many of them each conversion touched."""
    mode = {1: "L", 3: "RGB"}[channels]
    counts = {"alpha_composited": 0, "rescaled_from_16_bit": 0}
    if isinstance(images, np.ndarray) and images.ndim == 3 and channels == 1 and images.shape[1:] == (image_size,) * 2:
        return images.astype(np.uint8)[:, None], counts  # already the target form: skip the PIL round trip
    out = np.empty((len(images), channels, image_size, image_size), dtype=np.uint8)
    for index, image in enumerate(images):
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
        if pil.mode in SIXTEEN_BIT_MODES:
            wide = np.asarray(pil, dtype=np.float64)
            pil = Image.fromarray(np.clip(np.round(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8))
            counts["rescaled_from_16_bit"] += 1
        elif pil.mode in ("I", "F") and np.asarray(pil).max(initial=0) > 255:
            # 32-bit grey levels whose range is unknown: any rescaling would be a guess.
            raise BenchmarkError(
                f"Image {index} of the dataset has 32-bit grey levels above 255 (mode {pil.mode}), whose range is unknown. "
                "Save it with 8 or 16 bits per channel."
            )
        if pil.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in pil.info:  # alpha, or a transparent colour
            rgba = pil.convert("RGBA")
            pil = Image.alpha_composite(Image.new("RGBA", rgba.size, (alpha_background,) * 3 + (255,)), rgba)
            counts["alpha_composited"] += 1
        pil = pil.convert(mode)
        if pil.size != (image_size, image_size):
            pil = pil.resize((image_size, image_size), RESIZE_FILTER)
        array = np.asarray(pil, dtype=np.uint8)
        out[index] = array[None] if channels == 1 else array.transpose(2, 0, 1)
    return out, counts


def prepare_dataset(name: str, source: str, options: dict[str, Any], image_size: int, channels: int) -> PreparedDataset:
    adapter = get_data_source(source)(**options)
    raw = adapter.load()
    labels = np.asarray(raw.labels, dtype=np.int64)
    if len(raw.images) != len(labels):
        raise BenchmarkError(f"Dataset source '{source}' returned {len(raw.images)} images but {len(labels)} labels.")
    if len(labels) == 0:
        raise BenchmarkError(f"Dataset '{name}' (source '{source}') holds no images. Check its options: {options}.")
    log.info("converting %d images of '%s' to %dx%d, %d channel(s)", len(labels), name, image_size, image_size, channels)
    images, conversions = convert_images(raw.images, image_size, channels, raw.alpha_background)
    if any(conversions.values()):
        log.info("'%s': %s (alpha onto grey level %d)", name, conversions, raw.alpha_background)
    metadata = {
        "name": name,
        "source": source,
        "options": options,
        "image_size": image_size,
        "channels": channels,
        "resize_filter": RESIZE_FILTER_NAME,
        "conversions": {**conversions, "alpha_background": raw.alpha_background},
        "num_images": int(len(labels)),
        "class_names": list(raw.class_names),
        "class_attributes": {key: list(values) for key, values in raw.class_attributes.items()},
        "source_files": [{"path": str(path), "sha256": sha256_file(path)} for path in raw.source_files],
        "content_sha256": sha256_arrays(images, labels),
    }
    return PreparedDataset(images=images, labels=labels, metadata=metadata, image_attributes=raw.image_attributes)


# ---- helpers shared by adapters -------------------------------------------------------------------------------


def require_files(paths: Sequence[Path], what: str, how_to_get: str) -> None:
    missing = [str(path) for path in paths if not Path(path).is_file()]
    if missing:
        raise BenchmarkError(f"{what}: missing {', '.join(missing)}. {how_to_get}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
        shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    except (OSError, EOFError, struct.error) as error:
        raise BenchmarkError(f"{path} is not a readable IDX file ({error}). Replace it with the original file.") from error
    if zero != 0 or dtype_code != 0x08:
        raise BenchmarkError(f"{path} is not an unsigned-byte IDX file. Point the dataset at the original IDX files.")
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise BenchmarkError(f"{path} is truncated: header says {shape}, found {array.size} values. Re-fetch the file.")
    return array.reshape(shape)


def expand_path(value: str | os.PathLike[str]) -> Path:
    return Path(os.path.expandvars(os.fspath(value))).expanduser()
