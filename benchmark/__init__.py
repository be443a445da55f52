"""Core library of the few-shot / cross-domain GAN adaptation benchmark.

`benchmark/stages/` holds the pipeline, one module per stage; each workflow rule calls one `ganbench`
subcommand (`benchmark.cli`), which makes one call into its stage. Everything else here is the library the
stages are built from, and it never imports a stage, nor Snakemake. `layout` says where every result lives,
`plan` which jobs run and what each is told, the config schema every default.
"""

__version__ = "0.1.0"
