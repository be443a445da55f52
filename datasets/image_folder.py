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
    # alpha_background: the grey level (0 black .. 255 white, default 255) transparent pixels are composited onto
    option_names = ("root", "alpha_background")

    def load(self) -> RawDataset:
        root = expand_path(self.option("root"))
        if not root.is_dir():
            raise BenchmarkError(f"Image folder {root} does not exist. Fix the dataset's `root` option.")
        background = self.options.get("alpha_background", 255)
        if not (isinstance(background, int) and not isinstance(background, bool) and 0 <= background <= 255):
            raise BenchmarkError(
                f"image_folder option alpha_background = {background!r} must be a grey level, an integer from 0 (black) to 255 (white)."
            )
        _refuse_broken_links(root)
        class_dirs = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
        if not class_dirs:
            raise BenchmarkError(f"Image folder {root} has no class sub-folders; lay it out as {root}/<class>/<image>.")
        images: list[Image.Image] = []
        labels: list[int] = []
        files: list[Path] = []
        for label, class_dir in enumerate(class_dirs):
            _refuse_broken_links(class_dir)
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
                except Image.DecompressionBombError as error:
                    raise BenchmarkError(
                        f"{path} declares more pixels than PIL decodes safely ({error}): a decompression bomb, or a huge image. "
                        "Downscale or remove the file."
                    ) from error
                except (UnidentifiedImageError, OSError) as error:
                    raise BenchmarkError(f"{path} is not a readable image ({error}). Replace or remove the file.") from error
                labels.append(label)
                files.append(path)
        return RawDataset(
            images=images,
            labels=np.asarray(labels),
            class_names=[path.name for path in class_dirs],
            source_files=files,
            alpha_background=background,
        )


def _refuse_broken_links(folder: Path) -> None:
    """A symbolic link to nothing (or to itself) would otherwise drop a class or an image without a word."""
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):  # skipped by the loader too (editor lock files are dangling links)
            continue
        if path.is_symlink() and not path.exists():
            raise BenchmarkError(f"{path} is a broken or looping symbolic link. Point it at an existing image or class folder, or remove it.")
