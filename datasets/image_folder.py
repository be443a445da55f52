"""Any folder of images laid out as root/<class>/<image>: the way a user brings their own domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from benchmark.data import DataSource, RawDataset, expand_path
from benchmark.errors import BenchmarkError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


class ImageFolder(DataSource):
    name = "image_folder"
    description = "root/<class>/<image> folders of PNG/JPEG/... images, any size or mode"

    def load(self) -> RawDataset:
        root = expand_path(self.option("root"))
        if not root.is_dir():
            raise BenchmarkError(f"Image folder {root} does not exist. Fix the dataset's `root` option.")
        class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
        if not class_dirs:
            raise BenchmarkError(f"Image folder {root} has no class sub-folders; lay it out as {root}/<class>/<image>.")
        images: list[Image.Image] = []
        labels: list[int] = []
        files: list[Path] = []
        for label, class_dir in enumerate(class_dirs):
            members = sorted(p for p in class_dir.iterdir() if p.is_file() and not p.name.startswith("."))
            if not members:
                raise BenchmarkError(f"Class folder {class_dir} is empty. Add images to it or remove it.")
            for path in members:
                if path.suffix.lower() not in IMAGE_SUFFIXES:
                    raise BenchmarkError(
                        f"{path} is not an image file (suffix '{path.suffix}'). Remove it from the dataset folder; "
                        f"accepted suffixes: {', '.join(sorted(IMAGE_SUFFIXES))}."
                    )
                try:
                    with Image.open(path) as image:
                        image.load()
                        images.append(image.copy())
                except (UnidentifiedImageError, OSError) as error:
                    raise BenchmarkError(f"{path} is not a readable image ({error}). Replace or remove the file.") from error
                labels.append(label)
                files.append(path)
        return RawDataset(
            images=images,
            labels=np.asarray(labels),
            class_names=[path.name for path in class_dirs],
            source_files=files,
        )
