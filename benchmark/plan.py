"""The run plan: which jobs the benchmark runs, where each reads its inputs, and what each is told.

Everything is derived from the validated config. The Snakefile asks a `Plan` for the adaptation runs, for each
job's input paths (from `benchmark.layout`) and for its settings (`benchmark.settings`); the rules add nothing
of their own. Nothing here knows Snakemake.

The i-th seed of `seeds` adapts on split draw i (mod `split_draws`) and starts from pretraining seed i (mod the
number of pretraining seeds), so seeds vary the shots and the source model as well as the training noise.
"""

from __future__ import annotations

import json
from typing import Any

from benchmark import layout
from benchmark.config import dataset_options
from benchmark.errors import BenchmarkError
from benchmark.hashing import canonical_json
from benchmark.methods import get_artefact, get_method, methods, split_variant
from benchmark.settings import (
    AdaptationRun,
    AdaptSettings,
    BuildArtefactSettings,
    EncoderSettings,
    EvaluateSettings,
    MetaTrainSettings,
    PanelSettings,
    PaperSettings,
    PrepareDataSettings,
    PretrainSettings,
    SplitMetaSettings,
    SplitSourceSettings,
    SplitTaskSettings,
)
from benchmark.sweep import draw_hparams
from benchmark.training import TrainSettings


def method_names(config: dict[str, Any]) -> list[str]:
    """The methods (and variants) the config runs; unknown names and bad hyperparameters (of every draw) fail here,
    before any job."""
    names = sorted(methods()) if config["methods"] == "all" else list(config["methods"])
    # A misspelt key would be ignored: its "held" values swept, its settings never used.
    for section, keyed in (("sweep.hold", config["sweep"]["hold"]), ("adapt.method_hparams", config["adapt"]["method_hparams"])):
        for key in keyed:
            try:
                get_method(key)
            except BenchmarkError as error:
                raise BenchmarkError(f"Config key '{section}.{key}' names no method: {error}") from error
    for name in names:
        for draw in draws(config):
            get_method(name)(**method_hparams(config, name, draw))
    return names


def draws(config: dict[str, Any]) -> range:
    """The hyperparameter draws of a sweep: 0 (the defaults) and the random ones."""
    return range(config["sweep"]["n_hparams"] + 1)


def distinct_draws(config: dict[str, Any], method: str) -> list[int]:
    """The draws a method runs: those whose settings no earlier draw had. A method with nothing to sweep (scratch,
    finetune) runs draw 0 only; a small discrete range (freeze_d's 1 or 2 blocks) runs each setting once."""
    seen: set[str] = set()
    kept = []
    for draw in draws(config):
        settings = canonical_json(method_hparams(config, method, draw))
        if settings not in seen:
            seen.add(settings)
            kept.append(draw)
    return kept


def method_hparams(config: dict[str, Any], method: str, draw: int = 0) -> dict[str, Any]:
    """Hyperparameters of draw `draw` of a method or variant (`benchmark.sweep`). The configured ones: "freeze_d+diffaug"
    takes freeze_d's entries, then its own.

    A variant of a meta-learner adapts from its base method's meta-training, so it may not set hyperparameters
    of its own (they would apply to adaptation only, unlike what its record would claim).
    """
    sweep = config["sweep"]
    hold = {*sweep["hold"].get(split_variant(method)[0], []), *sweep["hold"].get(method, [])}
    return draw_hparams(method, configured_hparams(config, method), draw, sweep["seed"], hold)


def configured_hparams(config: dict[str, Any], method: str) -> dict[str, Any]:
    """The hyperparameters the config sets for a method or variant: its draw 0, and the values `sweep.hold` keeps."""
    table = config["adapt"]["method_hparams"]
    base, _ = split_variant(method)
    if method != base and table.get(method) and "meta_checkpoint" in get_method(base).requires:
        raise BenchmarkError(
            f"Config key 'adapt.method_hparams.{method}': a variant of the meta-learner '{base}' shares its "
            f"meta-training, so set these hyperparameters under adapt.method_hparams.{base} instead."
        )
    return {**table.get(base, {}), **table.get(method, {})}


class Plan:
    """The jobs of one validated config, their inputs and their settings."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        for stage in ("pretrain", "adapt"):  # checks across keys (an eval step beyond the budget) fail here, before any job
            try:
                TrainSettings.from_config(config[stage]["train"])
            except BenchmarkError as error:
                raise BenchmarkError(f"Config section '{stage}.train': {error}") from error
        self.methods = method_names(config)
        # Each method's draws, worked out once: `run` is asked for every job (Snakemake's input functions too).
        self.draws = {method: distinct_draws(config, method) for method in self.methods}
        self.runs = [
            self.run(task, shots, method, seed, draw)
            for task in config["tasks"]
            for shots in config["shots"]
            for method in self.methods
            for draw in self.draws[method]
            for seed in config["seeds"]
        ]

    # ---- which jobs ------------------------------------------------------------------------------------------

    def run(self, task: str, shots: int, method: str, seed: int, draw: int = 0) -> AdaptationRun:
        seeds = self.config["seeds"]
        if seed not in seeds:
            raise BenchmarkError(f"Seed {seed} is not in the config's `seeds` {seeds}.")
        if draw not in draws(self.config):
            raise BenchmarkError(f"Hyperparameter draw {draw} is not in the config's sweep (draws 0..{self.config['sweep']['n_hparams']}).")
        method_draws = self.draws[method] if method in self.draws else distinct_draws(self.config, method)
        if draw not in method_draws:
            raise BenchmarkError(f"Hyperparameter draw {draw} of {method} repeats the settings of an earlier draw, so it is not run.")
        index = seeds.index(seed)
        pretrain_seeds = self.config["pretrain"]["seeds"]
        split_draw, pretrain_seed = index % self.config["split_draws"], pretrain_seeds[index % len(pretrain_seeds)]
        return AdaptationRun(task, shots, method, seed, split_draw, pretrain_seed, draw)

    def datasets_used(self) -> list[str]:
        config = self.config
        return sorted({source["dataset"] for source in config["sources"].values()} | {task["target"]["dataset"] for task in config["tasks"].values()})

    # ---- where each job reads its inputs ---------------------------------------------------------------------

    def source_dataset(self, source: str) -> str:
        return layout.DATASET.fill(dataset=self.config["sources"][source]["dataset"])

    def task_dataset(self, task: str) -> str:
        return layout.DATASET.fill(dataset=self.config["tasks"][task]["target"]["dataset"])

    def task_source_split(self, task: str) -> str:
        return layout.SOURCE_SPLIT.fill(source=self.config["tasks"][task]["source"])

    def task_source_dataset(self, task: str) -> str:
        return self.source_dataset(self.config["tasks"][task]["source"])

    def artefacts(self, run: AdaptationRun) -> dict[str, str]:
        """The files that provide the artefacts a run's method requires (`Method.requires`), built-in or a plugin's."""
        source, method = self.config["tasks"][run.task]["source"], split_variant(run.method)[0]
        requires = get_method(run.method).requires
        return {name: layout.artefact_file(name, source, run.pretrain_seed, method, run.draw) for name in requires}

    def meta_artefacts(self, source: str, method: str, seed: int, draw: int) -> dict[str, str]:
        """The files a meta-learner's meta-training reads (`MetaMethod.meta_requires`: the source checkpoint when it
        starts from the source pretraining)."""
        learner = get_method(method)(**method_hparams(self.config, method, draw))
        return {name: layout.artefact_file(name, source, seed, method, draw) for name in learner.meta_requires}

    def plugin_artefact_inputs(self, artefact: str, source: str, seed: int) -> dict[str, str]:
        """The built-in artefacts a plugin artefact is built from, for one source and pretraining seed."""
        return {name: layout.ARTEFACTS[name].fill(source=source, seed=seed) for name in get_artefact(artefact).requires}

    def feature_inputs(self) -> dict[str, str]:
        """The encoder, and the Inception weights file when one is configured (a changed file reruns scoring)."""
        weights = self.config["evaluation"]["inception_weights"]
        return {"encoder": layout.ENCODER, **({"inception_weights": weights} if weights else {})}

    # ---- what each job is told -------------------------------------------------------------------------------

    def prepare_data(self, dataset: str) -> PrepareDataSettings:
        config = self.config
        return PrepareDataSettings(config["datasets"][dataset]["source"], dataset_options(config, dataset), config["image_size"], config["channels"])

    def split_source(self, source: str) -> SplitSourceSettings:
        return SplitSourceSettings(self.config["sources"][source], self.config["split_seed"])

    def split_task(self, task: str) -> SplitTaskSettings:
        config = self.config
        return SplitTaskSettings(config["tasks"][task], config["shots"], config["split_draws"], config["split_seed"])

    def split_meta(self) -> SplitMetaSettings:
        return SplitMetaSettings(self.config["meta"], self.config["split_seed"])

    def train_encoder(self) -> EncoderSettings:
        return EncoderSettings.from_dict(self.config["encoder"])

    def pretrain(self, seed: int) -> PretrainSettings:
        config = self.config
        return PretrainSettings(config["architecture"], config["pretrain"]["train"], seed, config["device"])

    def meta_train(self, method: str, seed: int, draw: int) -> MetaTrainSettings:
        config = self.config
        return MetaTrainSettings(method, method_hparams(config, method, draw), config["architecture"], seed, config["device"])

    def build_artefact(self, artefact: str, seed: int) -> BuildArtefactSettings:
        config = self.config
        return BuildArtefactSettings(artefact, config["architecture"], config["image_size"], config["channels"], seed, config["device"])

    def adapt(self, run: AdaptationRun) -> AdaptSettings:
        config = self.config
        return AdaptSettings(
            run,
            method_hparams(config, run.method, run.draw),
            config["architecture"],
            config["adapt"]["train"],
            config["evaluation"],
            config["device"],
        )

    def group_runs(self, task: str, shots: int, method: str, draw: int) -> list[AdaptationRun]:
        """The runs of one seed group: every seed of a task, K, method and hyperparameter draw."""
        return [self.run(task, shots, method, seed, draw) for seed in self.config["seeds"]]

    def adapt_group_json(self, task: str, shots: int, method: str, draw: int) -> str:
        """`ganbench adapt-seeds --runs`: each seed's settings, artefacts and output folder."""
        runs = self.group_runs(task, shots, method, draw)
        return json.dumps(
            [{"settings": json.loads(self.adapt(run).to_json()), "artefacts": self.artefacts(run), "output_dir": run.run_dir} for run in runs]
        )

    def gpus_per_job(self) -> int:
        """GPUs a training job asks the scheduler for: 1 where `device` is cuda, or auto where this process sees a
        GPU (a cluster's login node may see none: set `device: cuda` there), else 0."""
        device = self.config["device"]
        if device == "auto":
            import torch  # only here: planning needs no torch otherwise

            return int(torch.cuda.is_available())
        return int(device == "cuda")

    def evaluate(self) -> EvaluateSettings:
        return EvaluateSettings(self.config["evaluation"], self.config["device"], oracle_draws=self.config["sweep"]["oracle"])

    def panel_runs(self) -> list[AdaptationRun]:
        """The runs whose samples the paper's figures show: every run (the sample grids show the first seed's; the
        nearest-shot panels the closest of all scored samples over every seed)."""
        return list(self.runs)

    def panel_inputs(self) -> dict[str, dict[str, str]]:
        """Per task, its split manifest and the target dataset it indexes (`manifest`, `dataset`)."""
        return {task: {"manifest": layout.TASK_SPLIT.fill(task=task), "dataset": self.task_dataset(task)} for task in self.config["tasks"]}

    def panels(self) -> PanelSettings:
        return PanelSettings(
            self.config["paper"]["samples"], self.config["evaluation"]["seed"], self.config["device"], self.config["evaluation"]["num_generated"]
        )

    def paper(self) -> PaperSettings:
        return PaperSettings.from_dict(self.config["paper"])
