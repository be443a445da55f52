"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), 60k train + 10k test, 10 clothing classes.

Read from the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist). When those files are
absent and the option `download` is true, torchvision downloads them into `download_root` (needs the network).
"""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np

from benchmark.data import DataSource, RawDataset, expand_path, read_idx, require_files
from benchmark.errors import BenchmarkError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class FashionMNIST(DataSource):
    name = "fashion_mnist"
    description = "Fashion-MNIST IDX files (Debian dataset-fashion-mnist), train and test partitions"
    option_names = ("root", "partitions", "download", "download_root")

    def load(self) -> RawDataset:
        root = expand_path(self.options.get("root", "/usr/share/datasets/fashion-mnist"))
        partitions = self.options.get("partitions", ["train", "test"])
        if not partitions or set(partitions) - set(FILES):
            raise BenchmarkError(f"Fashion-MNIST partitions {partitions} are not a non-empty subset of {sorted(FILES)}.")
        paths = [root / name for partition in partitions for name in FILES[partition]]
        if not all(path.is_file() for path in paths) and self.options.get("download", False):
            root = self._download()
            paths = [root / name for partition in partitions for name in FILES[partition]]
        require_files(
            paths,
            "Fashion-MNIST",
            "Install the Debian package (as root: apt-get install -y dataset-fashion-mnist), point the dataset's "
            "`root` option at a folder holding the IDX files, or set `download: true` when online.",
        )
        images, labels, partition_of = [], [], []
        for partition in partitions:
            image_file, label_file = FILES[partition]
            images.append(read_idx(root / image_file))
            labels.append(read_idx(root / label_file).astype(np.int64))
            partition_of.append(np.full(len(labels[-1]), partition))
        return RawDataset(
            images=np.concatenate(images),
            labels=np.concatenate(labels),
            class_names=CLASS_NAMES,
            source_files=paths,
            image_attributes={"partition": np.concatenate(partition_of)},
        )

    def _download(self) -> Path:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        target = expand_path(self.options.get("download_root", "~/.cache/ganbench"))
        try:
            for train in (True, False):
                TorchvisionFashionMNIST(str(target), train=train, download=True)
        except (URLError, OSError) as error:
            raise BenchmarkError(
                f"Fashion-MNIST is not installed and downloading it failed ({error}). Offline, install the Debian "
                "package: apt-get install -y dataset-fashion-mnist."
            ) from error
        return target / "FashionMNIST" / "raw"
