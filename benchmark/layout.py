"""The results layout: every path the pipeline writes under `results/` and `reports/`, built here and nowhere else.

A `PathTemplate` is a path with `{field}`s. As it stands it is the Snakemake pattern of a rule's output (the fields
are wildcards); `fill(...)` makes one concrete path of it. Each stage writes one folder or file per job; the
`*_KEY` templates name a job within its stage, and also name its log and benchmark files. File names inside a
training stage's folder (`checkpoint.pt`, `config.json`, ...) are `StageFolder` attributes, so the training loop,
the evaluation stage and the rules agree on them. Renaming a folder or a file is a one-line change here.

This module imports nothing from the rest of the library: anything may ask it for a path. (`.gitignore` names
the two top folders too.)
"""

from __future__ import annotations

import re
from pathlib import Path


class PathTemplate(str):
    """A path with `{field}`s: as it stands, a Snakemake pattern; `fill` gives one path (extra fields are ignored)."""

    def fill(self, **fields: object) -> str:
        return self.format(**fields)

    def __truediv__(self, name: str) -> PathTemplate:
        return PathTemplate(f"{self}/{name}")

    def glob_pattern(self) -> str:
        """The pattern matching every path of this template (each field becomes `*`), for `Path.glob`."""
        return re.sub(r"\{[^}]+\}", "*", self)


RESULTS = PathTemplate("results")
REPORTS = PathTemplate("reports")

# Job keys: what tells one job of a stage from another.
DATASET_KEY = PathTemplate("{dataset}")
SOURCE_KEY = PathTemplate("{source}")
TASK_KEY = PathTemplate("{task}")
PRETRAIN_KEY = PathTemplate("{source}/seed{seed}")
META_TRAIN_KEY = PathTemplate("{source}/{method}/h{draw}/seed{seed}")  # h: the hyperparameter draw (benchmark.sweep)
RUN_KEY = PathTemplate("{task}/k{shots}/{method}/h{draw}/seed{seed}")
RUN_GROUP_KEY = PathTemplate("{task}/k{shots}/{method}/h{draw}")  # a job of every seed (config `seed_batching`)

# Stage outputs.
DATASET = RESULTS / f"data/{DATASET_KEY}.npz"  # the prepared images; their metadata lies beside them
DATASET_METADATA = RESULTS / f"data/{DATASET_KEY}.json"
SOURCE_SPLIT = RESULTS / f"splits/sources/{SOURCE_KEY}.json"
TASK_SPLIT = RESULTS / f"splits/tasks/{TASK_KEY}.json"
META_SPLIT = RESULTS / f"splits/meta/{SOURCE_KEY}.json"
ENCODER = RESULTS / "encoder/encoder.safetensors"
PRETRAIN = RESULTS / f"pretrain/{PRETRAIN_KEY}"
META_TRAIN = RESULTS / f"metatrain/{META_TRAIN_KEY}"
RUN = RESULTS / f"runs/{RUN_KEY}"
RESULTS_CSV = RESULTS / "results.csv"
TRAINING_CSV = RESULTS / "training.csv"  # every run's training log, tidy
PANELS = RESULTS / "panels.npz"  # a few samples per run with their nearest shots (benchmark.stages.panels)
RESULTS_TABLE = REPORTS / "results.md"
PAPER = REPORTS / "paper"  # tables, statistics and figures (benchmark.paper.render)
MUTATION_REPORT = REPORTS / "mutation.md"  # scripts/mutation_test.py (not part of the pipeline)
SCALE_REPORT = REPORTS / "scale"  # scripts/benchmark_scale.py: throughput and overheads (not part of the pipeline)


def dataset_metadata(dataset_path: str | Path) -> Path:
    """The metadata file that belongs to a prepared dataset's images (same folder and name, `.json`)."""
    return Path(dataset_path).with_suffix(".json")


def log(stage: str, key: str = "") -> PathTemplate:
    """The log file of a stage's job (a stage with a single job has no key)."""
    return RESULTS / f"logs/{stage}{'/' + key if key else ''}.log"


def benchmark(stage: str, key: str) -> PathTemplate:
    """Snakemake's timing and memory record of a stage's job."""
    return RESULTS / f"benchmarks/{stage}/{key}.tsv"


class StageFolder:
    """The files of one training job's folder (pretraining, meta-training or an adaptation run)."""

    CHECKPOINT = "checkpoint.pt"  # the finished job: its presence marks completion
    RESUME = "resume.pt"  # mid-run state; a workflow manager keeps it when it deletes a failed job's outputs
    CONFIG = "config.json"  # the job's identity, settings, outcome and environment
    TRAIN_LOG = "train_log.jsonl"
    META_LOG = "meta_log.jsonl"
    METRICS = "metrics.json"
    SNAPSHOTS = "snapshots"  # generators kept at the evaluation steps, for checkpoint selection

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def resume(self) -> Path:
        return self.path / self.RESUME

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def meta_log(self) -> Path:
        return self.path / self.META_LOG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def snapshots(self) -> Path:
        return self.path / self.SNAPSHOTS

    def snapshot(self, step: int) -> Path:
        return self.snapshots / f"step{step:07d}.pt"

    def own_entries(self) -> list[Path]:
        """The entries of the folder that a training job writes (its files, snapshots, temporary files)."""
        names = {self.CHECKPOINT, self.RESUME, self.CONFIG, self.TRAIN_LOG, self.META_LOG, self.METRICS, self.SNAPSHOTS}
        if not self.path.is_dir():
            return []
        return sorted(entry for entry in self.path.iterdir() if entry.name in names or (entry.name.startswith(".") and entry.name.endswith(".tmp")))


# Artefacts a method can require (`Method.requires`): the file that provides each, with fields a run fills in
# (`source`: its task's source, `seed`: its pretraining seed, `method`: its base method, without variant suffixes,
# `draw`: its hyperparameter draw).
ARTEFACTS: dict[str, PathTemplate] = {
    "source_checkpoint": PRETRAIN / StageFolder.CHECKPOINT,
    "meta_checkpoint": META_TRAIN / StageFolder.CHECKPOINT,
}
# Artefacts a plugin adds (`benchmark.methods.Artefact`), built once per source and pretraining seed.
PLUGIN_ARTEFACT_KEY = PathTemplate("{artefact}/{source}/seed{seed}")
PLUGIN_ARTEFACT = RESULTS / f"artefacts/{PLUGIN_ARTEFACT_KEY}.safetensors"


def artefact_file(name: str, source: str, seed: int, method: str, draw: int = 0) -> str:
    """The file that provides artefact `name` to a run (or a meta-training) of `method`'s hyperparameter draw `draw`
    on `source`'s pretraining seed `seed`: a stage's output for the built-in artefacts, else a plugin artefact's file."""
    if name in ARTEFACTS:
        return ARTEFACTS[name].fill(source=source, seed=seed, method=method, draw=draw)
    return PLUGIN_ARTEFACT.fill(artefact=name, source=source, seed=seed)
