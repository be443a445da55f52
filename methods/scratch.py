from benchmark.methods import Method


class Scratch(Method):
    """Baseline: random initialisation, G and D trained on the K target shots only."""

    name = "scratch"
    paper = "baseline (no transfer)"
