# The benchmark workflow: data -> splits -> encoder -> source pretraining -> adaptation -> evaluation -> tables.
# Each rule calls one `ganbench` subcommand; every setting a rule uses is in its params (changes rerun it).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        "reports/results.md",
    default_target: True
