# The benchmark workflow: data -> splits -> encoder -> source pretraining / meta-training -> adaptation ->
# evaluation -> tables. Each rule calls one `ganbench` subcommand, which makes one call into its stage
# (benchmark/stages/). Paths come from benchmark/layout.py, the runs and each job's settings from
# benchmark/plan.py; every setting a rule uses is in its params (changes rerun it).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        rules.table.output[0],
    default_target: True
