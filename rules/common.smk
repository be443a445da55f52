# Config validation and the helpers the rules share. Logic lives in the `benchmark` library, not here.
import json
import shlex
import sys

from benchmark.config import dataset_options, method_hparams, run_for, run_plan, validate_config
from benchmark.errors import BenchmarkError
from benchmark.methods import get_method

try:
    validate_config(config)
    RUNS = run_plan(config)  # also resolves the method names: unknown ones fail here, listing the available ones
except BenchmarkError as error:
    raise WorkflowError(f"configuration error: {error}") from None

GANBENCH = f"{shlex.quote(sys.executable)} -m benchmark.cli"
DATASETS_USED = sorted(
    {source["dataset"] for source in config["sources"].values()}
    | {task["target"]["dataset"] for task in config["tasks"].values()}
)


wildcard_constraints:
    dataset=r"[A-Za-z0-9_\-]+",
    source=r"[A-Za-z0-9_\-]+",
    task=r"[A-Za-z0-9_\-]+",
    method=r"[A-Za-z0-9_+\-]+",
    shots=r"\d+",
    seed=r"\d+",


def as_arg(values):
    """A settings dict as one shell-quoted JSON argument (also what params compare to trigger reruns)."""
    return shlex.quote(json.dumps(values, sort_keys=True))


def dataset_file(name):
    return f"results/data/{name}.npz"


def task_source(task):
    return config["tasks"][task]["source"]


def source_checkpoint(run):
    return f"results/pretrain/{task_source(run.task)}/seed{run.pretrain_seed}/checkpoint.pt"


def meta_checkpoint(run):
    # Variants ("maml_gan+diffaug") adapt from their base method's meta-training.
    base = run.method.split("+")[0]
    return f"results/metatrain/{task_source(run.task)}/{base}/seed{run.pretrain_seed}/checkpoint.pt"


# Artefacts a method may declare in `requires`, and the files that provide them.
ARTEFACT_FILES = {"source_checkpoint": source_checkpoint, "meta_checkpoint": meta_checkpoint}


def run_of(wildcards):
    return run_for(config, wildcards.task, int(wildcards.shots), wildcards.method, int(wildcards.seed))


def method_artefacts(wildcards):
    run = run_of(wildcards)
    return {name: ARTEFACT_FILES[name](run) for name in get_method(wildcards.method).requires}


def feature_inputs():
    """The encoder, and the Inception weights file when one is configured (a changed file reruns scoring)."""
    weights = config["evaluation"]["inception_weights"]
    return {"encoder": "results/encoder/encoder.safetensors", **({"inception_weights": weights} if weights else {})}


def adapt_inputs(wildcards):
    return {
        "manifest": f"results/splits/tasks/{wildcards.task}.json",
        "dataset": dataset_file(config["tasks"][wildcards.task]["target"]["dataset"]),
        **feature_inputs(),
        **method_artefacts(wildcards),
    }


def adapt_settings(wildcards):
    run = run_of(wildcards)
    return as_arg(
        {
            "method": run.method,
            "method_hparams": method_hparams(config, run.method),
            "shots": run.shots,
            "seed": run.seed,
            "split_draw": run.split_draw,
            "pretrain_seed": run.pretrain_seed,
            "architecture": config["architecture"],
            "train": config["adapt"]["train"],
            "evaluation": config["evaluation"],
            "device": config["device"],
        }
    )
