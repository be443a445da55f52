"""Each metric against an independent implementation, on real encoder features of MNIST digits: FID against a
direct Frechet distance (scipy's sqrtm), KID against a direct unbiased MMD^2, precision/recall/density/coverage
against the `prdc` package: agreement to 1e-5 relative. Encoder-LPIPS against a direct per-layer computation
(absolute 2e-5: its dot products run in float32)."""

from __future__ import annotations

import numpy as np
import prdc
import pytest
import scipy.linalg
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics

from benchmark.encoder import load_encoder, to_unit_range
from benchmark.metrics import FeatureExtractor, feature_space
from benchmark.metrics.fidelity import density_coverage, frechet_distance, kid, precision_recall
from benchmark.metrics.perceptual import PerceptualEmbedding, squared_distances
from conftest import blur

CPU = torch.device("cpu")
RELATIVE = 1e-5


@pytest.fixture(scope="module")
def features(mnist_encoder, digit_sets):
    """Reference digits against unseen digits of which half are blurred: the distributions overlap in part, so
    that no metric sits at a trivial 0 or 1."""
    path, _ = mnist_encoder
    sets, spare, _ = digit_sets
    extract = FeatureExtractor(feature_space(path), CPU)
    return torch.cat([extract(spare[:400]), extract(blur(spare[400:800], 0.8))]), extract(sets.reference)


def direct_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(root))


def direct_unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 (Gretton et al. 2012) with KID's kernel k(a, b) = (a.b / d + 1)^3, written from the formula."""
    d = x.shape[1]
    m, n = len(x), len(y)
    k_xx, k_yy, k_xy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
    return float((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1)) + (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1)) - 2 * k_xy.mean())


# Dead ReLU units of the encoder make the covariances singular; scipy warns, and its square root is still exact
# enough for the comparison (the FID formula needs only the trace of sqrtm).
@pytest.mark.filterwarnings("ignore:Matrix is singular:scipy.linalg.LinAlgWarning")
def test_fid_matches_a_direct_frechet_distance(features):
    fake, real = features
    ours = frechet_distance(fake, fid_features_to_statistics(real))
    assert ours > 1.0  # a real difference, not two near-zero numbers
    assert ours == pytest.approx(direct_frechet(fake.numpy(), real.numpy()), rel=RELATIVE)


def test_kid_on_whole_sets_matches_a_direct_unbiased_mmd(features):
    fake, real = features
    n = min(len(fake), len(real))
    # One "subset" of every sample: a permutation, to which the unbiased estimator is invariant.
    ours = kid(fake[:n], real[:n], subset_size=n, subsets=1, seed=0)
    assert ours["mean"] == pytest.approx(direct_unbiased_mmd2(fake[:n].numpy(), real[:n].numpy()), rel=RELATIVE)


def test_kid_over_subsets_matches_the_direct_mmd_on_the_same_seeded_subsets(features):
    """KID averages over random subsets, so it is stochastic; with its seed fixed, the subsets are numpy's
    RandomState(seed) draws without replacement (generated side first), which this test replays."""
    fake, real = features
    ours = kid(fake, real, subset_size=300, subsets=8, seed=7)
    rng = np.random.RandomState(7)
    direct = []
    for _ in range(8):
        x = fake.numpy()[rng.choice(len(fake), 300, replace=False)]
        y = real.numpy()[rng.choice(len(real), 300, replace=False)]
        direct.append(direct_unbiased_mmd2(x, y))
    assert ours["mean"] == pytest.approx(np.mean(direct), rel=RELATIVE)
    assert ours["std"] == pytest.approx(np.std(direct), rel=RELATIVE)


@pytest.mark.parametrize("nearest_k", [3, 5])
def test_precision_recall_density_coverage_match_prdc(features, nearest_k):
    fake, real = features
    reference = prdc.compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=nearest_k)
    ours = {**precision_recall(fake, real, nearest_k), **density_coverage(fake, real, nearest_k)}
    assert 0.05 < reference["precision"] < 0.95 and 0.05 < reference["coverage"] < 0.95  # not a trivial 0 or 1
    for name in ("precision", "recall", "density", "coverage"):
        assert ours[name] == pytest.approx(float(reference[name]), rel=RELATIVE), name


def test_encoder_lpips_matches_a_direct_per_layer_computation(mnist_encoder, digit_sets):
    """distance(a, b) = mean over the two conv layers of the spatial mean of sum_c (a_hat - b_hat)^2, with a_hat
    the activation vector at each position scaled to unit length. Tolerance: absolute 2e-5, because the suite
    takes the embeddings' dot products in float32 (for speed; see `squared_distances`), while this direct form
    subtracts in float64; distances here are 0.01 to 1."""
    path, _ = mnist_encoder
    sets, spare, _ = digit_sets
    a, b = spare[:6], sets.reference[:5]
    ours = squared_distances(PerceptualEmbedding(str(path), CPU)(a), PerceptualEmbedding(str(path), CPU)(b))
    encoder, _ = load_encoder(path)
    trunk = encoder.trunk
    with torch.no_grad():

        def layers(images: np.ndarray) -> list[torch.Tensor]:
            first = trunk[0:3](to_unit_range(torch.from_numpy(images)))
            second = trunk[3:7](first)
            return [(x / (x.norm(dim=1, keepdim=True) + 1e-10)).double() for x in (first, second)]

        la, lb = layers(a), layers(b)
    direct = torch.zeros(len(a), len(b), dtype=torch.float64)
    for i in range(len(a)):
        for j in range(len(b)):
            per_layer = [(x[i] - y[j]).pow(2).sum(0).mean() for x, y in zip(la, lb)]
            direct[i, j] = sum(per_layer) / len(per_layer)
    assert direct.min() > 0.01
    torch.testing.assert_close(ours, direct, rtol=0.0, atol=2e-5)
