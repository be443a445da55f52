"""The metric suite on real MNIST digits through real torch-fidelity: records, determinism, feature spaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch_fidelity.registry

from benchmark.encoder import EXTRACTOR_NAME, DomainEncoderExtractor, register_extractor
from benchmark.errors import BenchmarkError
from benchmark.metrics import DistanceScorer, EvaluationSets, FeatureExtractor, MetricSettings, MetricSuite, feature_space
from conftest import blur

CPU = torch.device("cpu")


def test_records_carry_sample_sizes_and_feature_space(mnist_encoder, digit_sets):
    path, _ = mnist_encoder
    sets, spare, _ = digit_sets
    settings = MetricSettings.from_config({"kid_subset_size": 500, "kid_subsets": 20, "fid_infinity": True})
    records = {record["metric"]: record for record in MetricSuite(sets, feature_space(path), str(path), settings, CPU).score(spare[:600])}
    assert set(records) == {
        "kid", "fid", "fid_inf", "precision", "recall", "density", "coverage", "ndb_fraction", "ndb_jsd",
        "classes_covered", "class_kl", "intra_cluster_lpips", "memorisation_share", "nn_ratio_share",
    }  # fmt: skip
    for name in ("kid", "fid", "precision", "coverage", "ndb_fraction", "class_kl"):
        record = records[name]
        assert (record["n_real"], record["n_fake"]) == (1000, 600), name
        assert record["feature_space"].startswith("domain encoder ") and record["feature_extractor"] == EXTRACTOR_NAME
        assert len(record["feature_weights_sha256"]) == 64
    for name in ("intra_cluster_lpips", "memorisation_share", "nn_ratio_share"):
        assert records[name]["n_real"] == 10 and records[name]["feature_space"].startswith("encoder-LPIPS (domain encoder ")
    assert records["memorisation_share"]["n_heldout"] == 300 and records["kid"]["kid_subset_size"] == 500
    assert records["ndb_fraction"]["bins"] == 50 and records["classes_covered"]["num_classes"] == 10
    assert records["classes_covered"]["classifier_heldout_accuracy"] > 0.8
    # FID_inf is the intercept of the line fitted through FID at its stored sample sizes; the largest is all of them.
    inf = records["fid_inf"]
    assert inf["sample_sizes"][-1] == 600 and inf["fid_values"][-1] == pytest.approx(records["fid"]["value"], rel=1e-12)
    assert inf["value"] == pytest.approx(np.polyfit(1.0 / np.array(inf["sample_sizes"]), inf["fid_values"], 1)[1], rel=1e-9)


def test_suite_is_deterministic_and_accepts_rgb_input(mnist_encoder, digit_sets):
    path, _ = mnist_encoder
    sets, spare, _ = digit_sets
    suite = MetricSuite(sets, feature_space(path), str(path), MetricSettings.from_config({"kid_subset_size": 200, "kid_subsets": 10}), CPU)
    first, second = suite.score(spare[:300]), suite.score(spare[:300])
    assert [r["value"] for r in first] == [r["value"] for r in second]
    rgb = {r["metric"]: r["value"] for r in suite.score(np.repeat(spare[:300], 3, axis=1))}  # folder PNGs arrive as RGB
    for record in first:
        assert rgb[record["metric"]] == pytest.approx(record["value"], rel=1e-4, abs=1e-9), record["metric"]


def test_validation_scorer_orders_real_blurred_noise(mnist_encoder, digit_sets):
    path, _ = mnist_encoder
    sets, spare, _ = digit_sets
    scorer = DistanceScorer(sets.reference, feature_space(path), kid_subset_size=500, kid_subsets=50, seed=0, device=CPU)
    noise = np.random.default_rng(1).integers(0, 256, spare.shape, dtype=np.uint8)
    real, blurred, noisy = (scorer(images) for images in (spare, blur(spare, 1.0), noise))
    for metric in ("fid", "kid"):
        assert real[metric] * 10 < blurred[metric] and blurred[metric] * 1.3 < noisy[metric], metric


def test_feature_extractor_is_in_eval_mode(mnist_encoder):
    extractor = FeatureExtractor(feature_space(mnist_encoder[0]), CPU)
    assert not extractor.extractor.training and not any(module.training for module in extractor.extractor.modules())


def test_registering_twice_is_harmless():
    register_extractor()
    register_extractor()  # torch-fidelity raises on a second registration of the same name; this must not
    assert torch_fidelity.registry.FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME] is DomainEncoderExtractor


def test_missing_inception_weights_is_one_clear_error(mnist_encoder):
    with pytest.raises(BenchmarkError, match="inception_weights names .* does not exist"):
        feature_space(mnist_encoder[0], inception_weights="/nonexistent/weights-inception-2015-12-05.pth")


def test_configured_inception_file_selects_the_standard_extractor(tmp_path, mnist_encoder):
    weights = tmp_path / "weights-inception-2015-12-05.pth"
    weights.write_bytes(b"stand-in: only the selection is checked here, no Inception forward pass")
    space = feature_space(mnist_encoder[0], inception_weights=weights)
    assert space.extractor == "inception-v3-compat" and space.name.startswith("Inception-v3 ") and space.rgb_input and space.layer == "2048"


def test_reference_smaller_than_the_neighbourhood_is_one_clear_error(mnist_encoder, digit_sets):
    path, _ = mnist_encoder
    sets, _, _ = digit_sets
    tiny = EvaluationSets(sets.reference[:4], sets.reference_labels[:4], sets.heldout, sets.heldout_labels, sets.shots)
    with pytest.raises(BenchmarkError, match="reference set has 4 images.*nearest_k = 5"):
        MetricSuite(tiny, feature_space(path), str(path), MetricSettings.from_config({}), CPU)
