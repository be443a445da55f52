# The benchmark workflow: data -> splits -> encoder -> source pretraining / meta-training -> adaptation ->
# evaluation -> tables -> paper outputs (tables, statistics, figures; `snakemake --report report.html` gathers
# them). Each rule calls one `ganbench` subcommand, which makes one call into its stage (benchmark/stages/). Paths come from benchmark/layout.py, the runs and each job's settings from
# benchmark/plan.py; every setting a rule uses is in its params (changes rerun it).
# `snakemake --lint` asks for a conda environment or container per rule (15 rules): left out on purpose. Every rule
# runs in the one pinned environment of scripts/setup_env.sh (requirements.txt plus learn2learn built from its sdist,
# which a per-rule spec could not build), so every stage's numbers come from one set of package versions;
# scripts/lint_workflow.py keeps that lint, with this reason, and fails on any other (docs/testing.md).
import os

from snakemake.utils import min_version

min_version("9.0")


# The default preset, unless config files are named with --configfile: then those are the whole config, and what
# they leave out takes the schema's defaults (a `configfile:` directive would merge them into the preset key by
# key, and the records would not show what ran). --config KEY=VALUE edits whichever config is in use.
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/paper.smk"


report: "rules/report/workflow.rst"


# Jobs of seconds that read and write small files run where Snakemake runs, never through a cluster's queue (whose
# wait and per-job start-up would dwarf them): data preparation (which may fetch files: a cluster's login node has
# the network), splits, gathering results, tables and paper outputs. Training and scoring jobs go to the executor.
localrules:
    all,
    data,
    prepare_data,
    split_source,
    split_meta,
    split_task,
    collect,
    collect_training,
    table,
    paper,


rule all:
    input:
        rules.table.output[0],
        rules.paper.output[0],
    default_target: True


# Every dataset the config reads, prepared, its files fetched first where missing (README, Quickstart: Data). On a
# cluster whose compute nodes have no network, run `snakemake --cores 1 data` on the login node first.
rule data:
    input:
        [layout.DATASET.fill(dataset=dataset) for dataset in PLAN.datasets_used()],
