"""Metrics of generated images: fidelity and coverage, diversity, mode collapse and memorisation.

`features` (feature spaces and extraction) -> `fidelity`, `modes` (on features), `perceptual` -> `diversity`
(on encoder-LPIPS embeddings) -> `suite` (everything for one run).
"""

from benchmark.metrics.features import FeatureExtractor, FeatureSpace, feature_space
from benchmark.metrics.suite import SUITE_METRICS, DistanceScorer, EvaluationSets, MetricSettings, MetricSuite, check_reference_size

__all__ = [
    "SUITE_METRICS",
    "DistanceScorer",
    "EvaluationSets",
    "FeatureExtractor",
    "FeatureSpace",
    "MetricSettings",
    "MetricSuite",
    "check_reference_size",
    "feature_space",
]
