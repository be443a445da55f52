"""Fashion-MNIST (Xiao, Rasul, Vollgraf 2017), 60k train + 10k test, 10 clothing classes.

Read from `root`, by default the Debian package `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist). When
`root` lacks the files and the option `fetch_root` names a folder, they are read from there instead, fetched into it
first if missing from the official host (Zalando Research's S3 bucket) and checked against the MD5s torchvision
publishes for them. The presets set `fetch_root: "{data_root}/fashion-mnist"`. Debian's files are recompressed, so
their checksums differ from the official ones while the images and labels are the same.
"""

from __future__ import annotations

import numpy as np

from benchmark.data import DataSource, RawDataset, expand_path, read_idx, require_files
from benchmark.errors import BenchmarkError
from benchmark.fetch import RemoteFile, ensure_files

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
OFFICIAL_HOST = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


class FashionMNIST(DataSource):
    name = "fashion_mnist"
    description = "Fashion-MNIST IDX files (Debian dataset-fashion-mnist, else fetched), train and test partitions"
    option_names = ("root", "partitions", "fetch_root")

    def load(self) -> RawDataset:
        root = expand_path(self.options.get("root", "/usr/share/datasets/fashion-mnist"))
        partitions = self.options.get("partitions", ["train", "test"])
        if not partitions or set(partitions) - set(FILES):
            raise BenchmarkError(f"Fashion-MNIST partitions {partitions} are not a non-empty subset of {sorted(FILES)}.")
        names = [name for partition in partitions for name in FILES[partition]]
        paths = [root / name for name in names]
        fetch_root = self.options.get("fetch_root")
        if not all(path.is_file() for path in paths) and fetch_root:
            remote = [RemoteFile(name, (OFFICIAL_HOST + name,), PUBLISHED_MD5[name], "fashion-mnist") for name in names]
            root = expand_path(fetch_root)
            paths = ensure_files(remote, root, "Fashion-MNIST")
        require_files(
            paths,
            "Fashion-MNIST",
            "Install the Debian package (as root: apt-get install -y dataset-fashion-mnist), point the dataset's "
            "`root` option at a folder holding the IDX files, or name a `fetch_root` to fetch them into.",
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
