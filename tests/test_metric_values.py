"""Metric functions on inputs small enough to work out by hand: known values, not just directions.

JSD is 0 for identical histograms and ln 2 for disjoint ones; the NN-ratio test is on Euclidean distances; K = 1
has no NN-ratio share at all; NDB's z-test is two-sided at alpha; coverage accumulates over every chunk of more
than 2,048 generated images; FID_inf's sample sizes follow its schedule and its value is the intercept.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmark.metrics import diversity, fidelity
from benchmark.metrics.diversity import NearestShots, intra_cluster_diversity, memorisation
from benchmark.metrics.fidelity import DISTANCE_CHUNK, density_coverage, fid_infinity, kth_neighbour_distances
from benchmark.metrics.modes import FeatureBins, NeighbourClassifier, class_modes, jensen_shannon, ndb_jsd
from benchmark.metrics.perceptual import squared_distances

LN2 = math.log(2)
KMEANS_COUNTS = [39, 52, 32, 18, 26, 33]  # n_init = 2 gives [29, 59, 23, 44, 26, 19]


# -- Jensen-Shannon ------------------------------------------------------------------------------------------------
def test_jsd_known_values():
    assert jensen_shannon(np.array([0.2, 0.3, 0.5]), np.array([0.2, 0.3, 0.5])) == 0.0
    assert jensen_shannon(np.array([0.5, 0.5, 0.0, 0.0]), np.array([0.0, 0.0, 0.25, 0.75])) == pytest.approx(LN2)
    # p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4): JSD = 1/2 [1/2 ln(2/3) + 1/2 ln 2] + 1/2 ln(4/3)
    expected = 0.5 * (0.5 * math.log(2 / 3) + 0.5 * math.log(2)) + 0.5 * math.log(4 / 3)
    p, q = np.array([0.5, 0.5]), np.array([1.0, 0.0])
    assert jensen_shannon(p, q) == pytest.approx(expected, rel=1e-12)
    assert jensen_shannon(q, p) == pytest.approx(expected, rel=1e-12)


# -- NDB -----------------------------------------------------------------------------------------------------------
def two_bins() -> FeatureBins:
    """500 reference samples near 0 and 500 near 10 (1-D features): k-means puts them in two bins."""
    real = torch.cat([torch.full((500, 1), 0.0), torch.full((500, 1), 10.0)]).double() + torch.linspace(-0.1, 0.1, 1000)[:, None].double()
    return FeatureBins(real, bins=2, seed=0)


def fake(near_zero: int, total: int = 1000) -> torch.Tensor:
    return torch.cat([torch.zeros(near_zero, 1), torch.full((total - near_zero, 1), 10.0)]).double()


def test_ndb_z_test_is_two_sided_at_alpha():
    """Reference 50/50, generated 54/46 of 1,000: z = 0.04 / sqrt(0.52 * 0.48 * 2 / 1000) = 1.79, below 1.96 (two-sided
    5%) but above 1.64 (one-sided): not different. 55/45 gives z = 2.24: both bins are different."""
    bins = two_bins()
    assert bins.real_counts.tolist() == [500, 500]
    close, far = ndb_jsd(fake(540), bins, alpha=0.05), ndb_jsd(fake(550), bins, alpha=0.05)
    assert close[0]["value"] == 0.0 and close[0]["ndb"] == 0
    assert far[0]["value"] == 1.0 and far[0]["ndb"] == 2 and far[0]["bins"] == 2 and far[0]["alpha"] == 0.05
    assert ndb_jsd(fake(540), bins, alpha=0.1)[0]["value"] == 1.0  # z = 1.79 > 1.64 at alpha = 10%
    p, q = np.array([0.55, 0.45]), np.array([0.5, 0.5])
    m = (p + q) / 2
    expected = 0.5 * float(np.sum(p * np.log(p / m))) + 0.5 * float(np.sum(q * np.log(q / m)))
    assert far[1]["metric"] == "ndb_jsd" and far[1]["value"] == pytest.approx(expected, rel=1e-9)


def test_ndb_with_a_single_bin_finds_no_difference():
    """One bin holds every sample of both sides: its standard error is 0 and it is never "different", at any alpha."""
    bins = FeatureBins(torch.linspace(0, 1, 50).double()[:, None], bins=1, seed=0)
    assert ndb_jsd(fake(300), bins, alpha=0.9)[0]["value"] == 0.0


def test_kmeans_bins_are_seeded_with_one_initialisation():
    """Pinned with the environment's scikit-learn: 200 Gaussian points, 6 bins, seed 3 (one k-means++ start)."""
    points = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert FeatureBins(points, bins=6, seed=3).real_counts.tolist() == KMEANS_COUNTS
    assert FeatureBins(points, bins=6, seed=3).counts(points).tolist() == KMEANS_COUNTS


def test_ndb_of_a_matching_or_collapsed_generator():
    bins = two_bins()
    assert ndb_jsd(fake(500), bins, 0.05)[0]["value"] == 0.0 and ndb_jsd(fake(500), bins, 0.05)[1]["value"] == 0.0
    collapsed = ndb_jsd(fake(1000), bins, 0.05)
    assert collapsed[0]["value"] == 1.0 and collapsed[1]["value"] == pytest.approx(0.5 * math.log(4 / 3) + 0.25 * math.log(2 / 3) + 0.25 * LN2)


# -- class modes ---------------------------------------------------------------------------------------------------
def test_class_modes_known_values():
    """Reference: 3 classes at 0, 10, 20 with shares 1/2, 1/4, 1/4. Generated: 6 at 0, 4 at 10, none at 20 (shares
    0.6, 0.4, 0). Covered at ratio 0.5: classes 0 and 1 (0.6 >= 0.25, 0.4 >= 0.125). KL = 0.6 ln 1.2 + 0.4 ln 1.6."""
    real = torch.tensor([[0.0]] * 4 + [[10.0]] * 2 + [[20.0]] * 2).double() + torch.linspace(0, 0.1, 8)[:, None].double()
    labels = np.array([7, 7, 7, 7, 8, 8, 9, 9])
    classifier = NeighbourClassifier(real, labels, k=1)
    generated = torch.tensor([[0.0]] * 6 + [[10.0]] * 4).double()
    heldout = torch.tensor([[0.0], [10.0], [20.0], [19.0], [5.0], [5.0]]).double()
    covered, kl = class_modes(generated, classifier, heldout, np.array([7, 8, 9, 8, 3, 12]), min_share_ratio=0.5)
    assert covered["value"] == pytest.approx(2 / 3) and covered["num_covered"] == 2
    assert kl["value"] == pytest.approx(0.6 * math.log(1.2) + 0.4 * math.log(1.6))
    # Held-out: labels 3 and 12 are unknown to the reference and left out; of the other four, the one at 19 (label 8)
    # is wrong.
    assert covered["classifier_heldout_accuracy"] == 0.75 and covered["num_classes"] == 3
    just_covered = class_modes(generated, classifier, heldout, np.array([7, 8, 9, 9, 9, 9]), min_share_ratio=1.6)
    assert just_covered[0]["num_covered"] == 1  # class 8: 0.4 >= 1.6 * 0.25 holds with equality


def test_neighbour_vote_is_the_majority_and_ties_go_to_the_smallest_label():
    real = torch.tensor([[0.0], [1.0], [2.0], [10.0]]).double()
    classifier = NeighbourClassifier(real, np.array([5, 3, 3, 9]), k=3)
    assert classifier.predict(torch.tensor([[0.2], [9.0]]).double()).tolist() == [0, 0]  # indices into classes [3, 5, 9]
    two = NeighbourClassifier(real, np.array([5, 3, 3, 9]), k=2)
    assert two.predict(torch.tensor([[0.4]]).double()).tolist() == [0]  # one vote each for 5 and 3: the smaller, 3


# -- memorisation and the NN-ratio test ------------------------------------------------------------------------------
def nearest(first: list[float], second: list[float]) -> NearestShots:
    return NearestShots(torch.zeros(len(first), dtype=torch.long), torch.tensor(first).double(), torch.tensor(second).double())


def test_memorisation_share_is_calibrated_on_the_heldout_quantile():
    """Held-out squared distances 1..11: the 0.3 quantile is 4 exactly, and 3 of 11 lie strictly below it. Generated
    1, 4, 5, 0.5, 2: three lie strictly below (4 itself does not count)."""
    heldout = nearest([float(v) for v in range(1, 12)], [100.0] * 11)
    generated = nearest([1.0, 4.0, 5.0, 0.5, 2.0], [100.0] * 5)
    share, ratio = memorisation(generated, heldout, num_shots=3, calibration_quantile=0.3, ratio_threshold=0.5)
    assert share["threshold"] == 4.0 and share["calibration_quantile"] == 0.3 and share["n_heldout"] == 11
    assert share["value"] == pytest.approx(3 / 5) and share["heldout_value"] == pytest.approx(3 / 11)
    assert ratio["metric"] == "nn_ratio_share" and ratio["n_heldout"] == 11


def test_nn_ratio_test_is_on_euclidean_distances():
    """Squared distances 1 and 2.25 are Euclidean 1 and 1.5: ratio 0.667, which fails a threshold of 0.6; on the
    squared distances (0.444) it would pass. Squared 1 and 4 (ratio 0.5) passes; equality (0.6 exactly) fails."""
    generated = nearest([1.0, 1.0, 0.36, 0.0], [2.25, 4.0, 1.0, 0.0])
    heldout = nearest([1.0, 1.0, 1.0, 1.0], [1.0, 4.0, 9.0, 1.0])
    _, ratio = memorisation(generated, heldout, num_shots=2, calibration_quantile=0.1, ratio_threshold=0.6)
    assert ratio["value"] == 0.25 and ratio["heldout_value"] == 0.5 and ratio["ratio_threshold"] == 0.6


def test_one_shot_has_no_nn_ratio_share():
    """With K = 1 there is no second-nearest shot (its distance is inf): the ratio test would pass for every sample,
    so no `nn_ratio_share` is reported."""
    shots = torch.tensor([[0.0, 0.0]])
    generated = NearestShots.of([torch.tensor([[1.0, 0.0], [0.0, 2.0]])], shots)
    assert generated.index.tolist() == [0, 0] and generated.first.tolist() == [1.0, 4.0]
    assert torch.isinf(generated.second).all()
    records = memorisation(generated, generated, num_shots=1, calibration_quantile=0.5, ratio_threshold=0.5)
    assert [record["metric"] for record in records] == ["memorisation_share"]


def test_nearest_shots_over_chunks():
    shots = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    chunks = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 4.0], [3.0, 1.0]])]
    result = NearestShots.of(chunks, shots)
    assert result.index.tolist() == [0, 2, 1] and len(result) == 3
    assert result.first.tolist() == pytest.approx([1.0, 1.0, 1.0]) and result.second.tolist() == pytest.approx([4.0, 16.0, 10.0])


def test_intra_cluster_diversity_known_value():
    """Cluster 0: 1-D points 0, 1, 3 (pairs: 1, 9, 4 squared: mean 14/3); cluster 1: 10, 12 (4); cluster 2: one
    member, not scored. Value: mean of 14/3 and 4. With max_per_cluster 2, cluster 0 keeps 0 and 1 only (1)."""
    embeddings = torch.tensor([[0.0], [10.0], [1.0], [12.0], [3.0], [20.0]])
    assignment = torch.tensor([0, 1, 0, 1, 0, 2])
    shots_nearest = NearestShots(assignment, torch.zeros(6).double(), torch.ones(6).double())
    result = intra_cluster_diversity(embeddings, shots_nearest, num_shots=4, max_per_cluster=10)
    assert result["value"] == pytest.approx((14 / 3 + 4) / 2) and result["clusters_scored"] == 2
    assert result["cluster_sizes"] == [3, 2, 1, 0] and result["max_per_cluster"] == 10
    assert intra_cluster_diversity(embeddings, shots_nearest, 4, max_per_cluster=2)["value"] == pytest.approx((1 + 4) / 2)
    lonely = intra_cluster_diversity(embeddings[:2], NearestShots(torch.tensor([0, 1]), torch.zeros(2), torch.ones(2)), 2, 10)
    assert math.isnan(lonely["value"]) and lonely["clusters_scored"] == 0


def test_squared_distances_known_values():
    a, b = torch.tensor([[0.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    assert squared_distances(a, b).tolist() == [[25.0, 2.0], [13.0, 0.0]]
    assert squared_distances(a, b).dtype == torch.float64


# -- density and coverage over chunks ------------------------------------------------------------------------------
def test_density_and_coverage_accumulate_over_every_chunk():
    """2,500 generated points (two chunks of 2,048 and 452): the second chunk alone covers the real points near 100.
    Coverage and density must equal a direct computation on all 2,500 at once."""
    generator = torch.Generator().manual_seed(0)
    real = torch.cat(
        [torch.randn(300, 2, generator=generator, dtype=torch.float64), 100 + torch.randn(100, 2, generator=generator, dtype=torch.float64)]
    )
    first = torch.randn(DISTANCE_CHUNK, 2, generator=generator, dtype=torch.float64)
    second = 100 + torch.randn(2500 - DISTANCE_CHUNK, 2, generator=generator, dtype=torch.float64)
    generated = torch.cat([first, second])
    radii = torch.cdist(real, real).kthvalue(4, dim=1).values  # k = 3, the point itself excluded
    inside = torch.cdist(generated, real) < radii
    result = density_coverage(generated, real, nearest_k=3)
    assert result["coverage"] == pytest.approx(float(inside.any(dim=0).double().mean()))
    assert result["density"] == pytest.approx(float(inside.sum(dim=1).double().mean() / 3))
    assert result["coverage"] > 0.9  # both groups of real points are covered, each by its own chunk
    torch.testing.assert_close(kth_neighbour_distances(real, 3), radii)


def test_kth_neighbour_distances_over_chunks():
    """2,100 points: the second chunk's distance matrix is 52 x 2,100, so each row's k-th neighbour must be taken
    along the row (the point itself, at distance 0, excluded)."""
    points = torch.randn(DISTANCE_CHUNK + 52, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = torch.cdist(points, points).sort(dim=1).values[:, 2]  # k = 2: index 0 is the point itself
    torch.testing.assert_close(kth_neighbour_distances(points, 2), expected)


def test_density_and_coverage_known_values():
    """Real points 0, 1, 3 on a line, k = 1: radii 1, 1, 2. Balls are open (strict inequality)."""
    real = torch.tensor([[0.0], [1.0], [3.0]]).double()
    generated = torch.tensor([[0.5], [1.5], [5.0], [2.0]]).double()
    result = density_coverage(generated, real, nearest_k=1)
    # balls containing each generated point: 0.5 -> {0, 1}; 1.5 -> {1, 3}; 5 -> {}; 2 -> {3} (|2 - 1| = 1 is not < 1)
    assert result["density"] == pytest.approx((2 + 2 + 0 + 1) / 4)
    assert result["coverage"] == 1.0
    assert density_coverage(torch.tensor([[5.0]]).double(), real, 1)["coverage"] == 0.0


# -- FID_inf -------------------------------------------------------------------------------------------------------
def test_fid_infinity_schedule_and_intercept(monkeypatch):
    """50 generated samples, 15 points: sizes round(linspace(10, 50, 15)). The value is the least-squares intercept
    of FID against 1/N: with an FID that is exactly 3 + 20 / N, the fit returns intercept 3 and slope 20."""
    monkeypatch.setattr(fidelity, "frechet_distance", lambda subset, statistics: 3.0 + 20.0 / len(subset))
    result = fid_infinity(torch.zeros(50, 2).double(), {}, seed=0)
    assert result["sample_sizes"] == [10, 13, 16, 19, 21, 24, 27, 30, 33, 36, 39, 41, 44, 47, 50]
    assert result["value"] == pytest.approx(3.0) and result["slope"] == pytest.approx(20.0)
    assert result["fid_values"][-1] == pytest.approx(3.4)
    assert fid_infinity(torch.zeros(12, 2).double(), {}, seed=0, points=3)["sample_sizes"] == [2, 7, 12]


def test_fid_infinity_subsets_are_seeded_draws_without_replacement(monkeypatch):
    seen = []
    monkeypatch.setattr(fidelity, "frechet_distance", lambda subset, statistics: seen.append(subset[:, 0].tolist()) or 0.0)
    fid_infinity(torch.arange(20.0).double()[:, None], {}, seed=3, points=3)
    assert [len(values) for values in seen] == [4, 12, 20]
    assert all(len(set(values)) == len(values) and values == sorted(values) for values in seen)
    assert seen[-1] == [float(v) for v in range(20)]
    again = []
    monkeypatch.setattr(fidelity, "frechet_distance", lambda subset, statistics: again.append(subset[:, 0].tolist()) or 0.0)
    fid_infinity(torch.arange(20.0).double()[:, None], {}, seed=3, points=3)
    assert again == seen


def test_fid_infinity_needs_three_sizes():
    from benchmark.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="FID_inf needs at least 3 distinct sample sizes; 2 generated images give 1"):
        fid_infinity(torch.zeros(2, 2).double(), {}, seed=0)


def test_a_ratio_test_on_squared_distances_fails_here(monkeypatch):
    """The deliberately broken variant named above: the ratio test on squared distances passes 3 of 4, not 1."""

    def squared_memorisation(fake, heldout, num_shots, calibration_quantile, ratio_threshold):
        squared = NearestShots(fake.index, fake.first.pow(2), fake.second.pow(2))
        return original(squared, heldout, num_shots, calibration_quantile, ratio_threshold)

    original = diversity.memorisation
    monkeypatch.setitem(globals(), "memorisation", squared_memorisation)
    with pytest.raises(AssertionError):
        test_nn_ratio_test_is_on_euclidean_distances()


# -- encoder-LPIPS embedding ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def embedding(mnist_encoder):
    from benchmark.metrics.perceptual import PerceptualEmbedding

    return PerceptualEmbedding(str(mnist_encoder[0]), torch.device("cpu"))


def test_embedding_is_frozen_and_reads_rgb_as_grey(embedding, digit_sets):
    """The trunk is in eval mode without gradients; an RGB image with three equal channels embeds as its grey image."""
    assert not embedding.layers.training and not any(p.requires_grad for p in embedding.layers.parameters())
    grey = digit_sets[0].shots[:2]
    torch.testing.assert_close(embedding(np.repeat(grey, 3, axis=1)), embedding(grey))
    assert embedding(grey).shape == (2, embedding(grey[:1]).shape[1])


def test_an_rgb_encoder_embeds_rgb_images_as_they_are(tmp_path, digit_sets):
    """Only a grey encoder converts RGB input to grey; an RGB encoder's first layer takes the three channels."""
    from benchmark.encoder import fit_encoder
    from benchmark.metrics.perceptual import PerceptualEmbedding

    sets, spare, labels = digit_sets
    rgb = np.repeat(spare[:200], 3, axis=1)
    rgb[:, 0] //= 2  # channels that differ
    fit_encoder(rgb, labels[:200], [str(c) for c in range(10)], 1, 64, 1e-3, 0, 0.0, tmp_path / "rgb.safetensors", {"test": True})
    embedding = PerceptualEmbedding(str(tmp_path / "rgb.safetensors"), torch.device("cpu"))
    assert embedding.channels == 3
    vectors = embedding(rgb[:3])
    assert vectors.shape[0] == 3 and torch.isfinite(vectors).all()


def test_dead_activations_embed_as_zeros_not_nan(embedding, digit_sets):
    """Where every channel of a layer is 0 (dead ReLUs), the unit-length scaling must give 0, not 0 / 0."""
    import copy

    dead = copy.deepcopy(embedding)
    with torch.no_grad():
        for parameter in dead.layers.parameters():
            parameter.zero_()
    vectors = dead(digit_sets[0].shots[:2])
    assert torch.equal(vectors, torch.zeros_like(vectors))


def test_the_memorisation_threshold_carries_its_own_uncertainty():
    """The threshold is a quantile of the held-out distances, so the share has an interval from resampling them: it
    contains the share, narrows with more held-out images, and collapses to a point when every held-out distance is
    equal. A version that resampled the generated samples instead would not narrow with the held-out count."""
    generator = torch.Generator().manual_seed(1)
    fake = nearest(torch.rand(400, generator=generator).tolist(), [9.0] * 400)
    few = nearest(torch.rand(50, generator=generator).tolist(), [9.0] * 50)
    many = nearest(torch.rand(2000, generator=generator).tolist(), [9.0] * 2000)
    narrow, wide = (memorisation(fake, heldout, 1, 0.1, 0.5)[0] for heldout in (many, few))
    for record in (narrow, wide):
        low, high = record["value_interval_threshold"]
        assert low <= record["value"] <= high and record["threshold_interval"][0] <= record["threshold"] <= record["threshold_interval"][1]
    width = lambda record: record["value_interval_threshold"][1] - record["value_interval_threshold"][0]  # noqa: E731
    assert width(narrow) < width(wide) / 2
    flat = memorisation(fake, nearest([0.5] * 30, [9.0] * 30), 1, 0.1, 0.5)[0]
    assert flat["value_interval_threshold"][0] == flat["value_interval_threshold"][1] == flat["value"]
    assert memorisation(fake, few, 1, 0.1, 0.5)[0] == wide  # seeded: the same inputs give the same interval
