"""Core library of the few-shot / cross-domain GAN adaptation benchmark.

The library never imports Snakemake: the workflow calls the `ganbench` CLI, which calls one function here.
"""

__version__ = "0.1.0"
