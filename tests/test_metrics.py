"""FID/KID through real torch-fidelity on the domain encoder: real < blurred < noise, with records complete."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from benchmark.encoder import EXTRACTOR_NAME, register_extractor, train_encoder
from benchmark.errors import BenchmarkError
from benchmark.metrics import feature_space, fidelity_metrics

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder_and_splits(tmp_path_factory, mnist_5k):
    """Encoder trained on 3,000 real MNIST digits; 1,000 held-out and 1,000 reference digits it never saw."""
    order = np.random.default_rng(0).permutation(len(mnist_5k.labels))
    train, heldout, reference = order[:3000], order[3000:4000], order[4000:]
    path = tmp_path_factory.mktemp("encoder") / "encoder.safetensors"
    summary = train_encoder(
        mnist_5k.images[train], mnist_5k.labels[train], mnist_5k.class_names, epochs=2, batch_size=64,
        learning_rate=1e-3, seed=0, holdout_fraction=0.1, output=path, provenance={"test": True},
    )  # fmt: skip
    assert summary["heldout_accuracy"] > 0.8
    return path, mnist_5k.images[heldout], mnist_5k.images[reference]


def _blur(images: np.ndarray, radius: float) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(image[0]).filter(ImageFilter.GaussianBlur(radius)))[None] for image in images])


def _scores(images, reference, space):
    records = fidelity_metrics(images, reference, space, kid_subset_size=500, kid_subsets=50, seed=0, device=CPU)
    return {record["metric"]: record for record in records}


def test_real_far_below_blurred_far_below_noise(encoder_and_splits):
    path, heldout, reference = encoder_and_splits
    space = feature_space(path)
    noise = np.random.default_rng(1).integers(0, 256, heldout.shape, dtype=np.uint8)
    real, blurred, noisy = (_scores(images, reference, space) for images in (heldout, _blur(heldout, 1.0), noise))
    # Seen here: FID 0.4 / 29 / 76 and KID 0.007 / 1.6 / 9.4 for real / blurred / noise.
    for metric in ("fid", "kid"):
        assert real[metric]["value"] * 10 < blurred[metric]["value"], metric
        assert blurred[metric]["value"] * 2 < noisy[metric]["value"], metric
    record = real["kid"]
    assert record["n_real"] == 1000 and record["n_fake"] == 1000 and record["kid_subset_size"] == 500
    assert record["feature_space"].startswith("domain encoder ") and len(record["feature_weights_sha256"]) == 64
    assert record["feature_extractor"] == EXTRACTOR_NAME


def test_metrics_are_deterministic_and_accept_rgb_input(encoder_and_splits):
    path, heldout, reference = encoder_and_splits
    space = feature_space(path)
    first, second = _scores(heldout[:300], reference, space), _scores(heldout[:300], reference, space)
    assert first["kid"]["value"] == second["kid"]["value"] and first["fid"]["value"] == second["fid"]["value"]
    rgb = _scores(np.repeat(heldout[:300], 3, axis=1), reference, space)  # folder PNGs reach torch-fidelity as RGB
    assert rgb["fid"]["value"] == pytest.approx(first["fid"]["value"], rel=1e-4)


def test_registering_twice_is_harmless():
    register_extractor()
    register_extractor()


def test_missing_inception_weights_is_one_clear_error(encoder_and_splits):
    with pytest.raises(BenchmarkError, match="inception_weights names .* does not exist"):
        feature_space(encoder_and_splits[0], inception_weights="/nonexistent/weights-inception-2015-12-05.pth")


def test_configured_inception_file_selects_the_standard_extractor(tmp_path, encoder_and_splits):
    weights = tmp_path / "weights-inception-2015-12-05.pth"
    weights.write_bytes(b"stand-in: only the selection is checked here, no Inception forward pass")
    space = feature_space(encoder_and_splits[0], inception_weights=weights)
    assert space.extractor == "inception-v3-compat" and space.name.startswith("Inception-v3 ") and space.rgb_input
