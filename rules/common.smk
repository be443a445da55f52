# Config validation, the run plan, and the input functions the rules share. What runs, where each job reads
# and writes, and what each job is told all come from the library (`benchmark.plan`, `benchmark.layout`).
import os
import shlex
import shutil
import sys

from benchmark import layout
from benchmark.config import read_config_file, validate_config
from benchmark.errors import BenchmarkError
from benchmark.plan import Plan

try:
    for path in dict.fromkeys([*workflow.overwrite_configfiles, *workflow.configfiles]):
        read_config_file(path)  # Snakemake's own reading keeps the last of a key written twice: refuse it
    validate_config(config)
    PLAN = Plan(config)  # also resolves the method names: unknown ones fail here, listing the available ones
except BenchmarkError as error:
    raise WorkflowError(f"configuration error: {error}") from None

# One job per run, or one per seed group (`seed_batching`); GPUs each training job asks the scheduler for: one where
# the config's device is a GPU (`auto`: where Snakemake starts sees one), else none. Locally `--resources gpu=N`
# then runs at most N GPU jobs at once and each job claims its own GPU (benchmark/devices.py); under SLURM it
# becomes `--gpus=1`.
SEED_BATCHING = config["seed_batching"]
GPUS_PER_JOB = PLAN.gpus_per_job()

# Jobs run the `ganbench` command of the environment that runs Snakemake (its bin folder goes first on PATH), also
# when Snakemake was started as `.venv/bin/snakemake` without activating the environment. The prefix replaces
# Snakemake's default one, so it repeats its strict mode.
ENVIRONMENT_BIN = os.path.dirname(sys.executable)
if shutil.which("ganbench", path=ENVIRONMENT_BIN) is None:
    raise WorkflowError(
        f"The `ganbench` command is not installed in {ENVIRONMENT_BIN}, the environment that runs Snakemake. "
        "Run `make setup` (or `pip install -e .` in that environment) and start Snakemake from it."
    )
shell.prefix(f'set -euo pipefail; export PATH={shlex.quote(ENVIRONMENT_BIN)}:"$PATH"; ')


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    source=r"[A-Za-z0-9_\-]+",
    task=r"[A-Za-z0-9_\-]+",
    method=r"[A-Za-z0-9_+\-]+",
    artefact=r"[A-Za-z0-9_\-]+",
    shots=r"\d+",
    seed=r"\d+",
    draw=r"\d+",


def as_arg(settings):
    """A stage's settings as one shell-quoted JSON argument (also what params compare to trigger reruns)."""
    return shlex.quote(settings.to_json())


def run_of(wildcards):
    return PLAN.run(wildcards.task, int(wildcards.shots), wildcards.method, int(wildcards.seed), int(wildcards.draw))


def task_inputs(task):
    """What every adaptation or scoring job of a task reads: its split manifest, its target dataset, the encoder."""
    return {"manifest": layout.TASK_SPLIT.fill(task=task), "dataset": PLAN.task_dataset(task), **PLAN.feature_inputs()}


def adapt_inputs(wildcards):
    run = run_of(wildcards)
    return {**task_inputs(run.task), **PLAN.artefacts(run)}


def adapt_group_inputs(wildcards):
    """What a seed group's job reads: the task's files and every seed's artefacts."""
    runs = PLAN.group_runs(wildcards.task, int(wildcards.shots), wildcards.method, int(wildcards.draw))
    artefacts = {f"{name}_seed{run.seed}": path for run in runs for name, path in PLAN.artefacts(run).items()}
    return {**task_inputs(wildcards.task), **artefacts}


def meta_train_inputs(wildcards):
    return {
        "manifest": layout.META_SPLIT.fill(source=wildcards.source),
        "dataset": PLAN.source_dataset(wildcards.source),
        **PLAN.meta_artefacts(wildcards.source, wildcards.method, int(wildcards.seed), int(wildcards.draw)),
    }


def plugin_artefact_inputs(wildcards):
    return PLAN.plugin_artefact_inputs(wildcards.artefact, wildcards.source, int(wildcards.seed))


def evaluate_inputs(wildcards):
    return task_inputs(wildcards.task)
