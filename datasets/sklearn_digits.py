"""scikit-learn's bundled digits (Alpaydin & Kaynak 1998): 1,797 images at 8x8, values 0..16. Small: for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.data import DataSource, RawDataset


class SklearnDigits(DataSource):
    name = "sklearn_digits"
    description = "scikit-learn's bundled 8x8 digits (1,797 images)"
    option_names = ()

    def load(self) -> RawDataset:
        import sklearn.datasets

        bunch = sklearn.datasets.load_digits()
        images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
        data_file = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
        return RawDataset(
            images=images,
            labels=bunch.target.astype(np.int64),
            class_names=[str(digit) for digit in range(10)],
            source_files=[data_file],
        )
