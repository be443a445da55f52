"""Configuration: validated against one JSON Schema (defaults filled in), and the run plan derived from it.

The Snakefile and the tests both call `validate_config`, so a bad value gives the same message everywhere:
the key's path, what was found and what is expected.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from benchmark.errors import BenchmarkError
from benchmark.plugins import REPO_ROOT

SCHEMA_PATH = Path(__file__).parent / "schemas" / "config.schema.yaml"


@cache
def _schema() -> dict[str, Any]:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": fill_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate in place, fill defaults and check cross-references; returns the same dict."""
    errors = sorted(_Validator(_schema()).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        hint = ""
        if isinstance(error.instance, str) and _looks_numeric(error.instance):
            hint = f" YAML reads a number such as 1e-4 without a dot as a string: write {error.instance.replace('e', '.0e', 1)}."
        raise BenchmarkError(f"Config key '{key}': {error.message}.{hint}")
    _check_references(config)
    return config


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _check_references(config: dict[str, Any]) -> None:
    from benchmark.data import get_data_source  # deferred: it discovers the dataset plugins

    for name, dataset in config["datasets"].items():
        try:
            get_data_source(dataset["source"])
        except BenchmarkError as error:
            raise BenchmarkError(f"Config key 'datasets.{name}.source': {error}") from error
    for name, source in config["sources"].items():
        if source["dataset"] not in config["datasets"]:
            raise BenchmarkError(f"Config key 'sources.{name}.dataset': '{source['dataset']}' is not a key of `datasets` ({sorted(config['datasets'])}).")
    for name, task in config["tasks"].items():
        if task["source"] not in config["sources"]:
            raise BenchmarkError(f"Config key 'tasks.{name}.source': '{task['source']}' is not a key of `sources` ({sorted(config['sources'])}).")
        if task["target"]["dataset"] not in config["datasets"]:
            raise BenchmarkError(
                f"Config key 'tasks.{name}.target.dataset': '{task['target']['dataset']}' is not a key of `datasets` "
                f"({sorted(config['datasets'])}). Define it there or fix the name."
            )
        if max(config["shots"]) > task["shot_pool_size"]:
            raise BenchmarkError(
                f"Config key 'tasks.{name}.shot_pool_size' ({task['shot_pool_size']}) is smaller than the largest K in "
                f"`shots` ({max(config['shots'])}). Raise it or lower K."
            )


def load_config(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except OSError as error:
        raise BenchmarkError(f"Cannot read config file {path}: {error}.") from error
    if not isinstance(config, dict):
        raise BenchmarkError(f"Config file {path} does not hold a mapping of keys.")
    return validate_config(config)


def data_root(config: dict[str, Any]) -> Path:
    """Where shared data lives: config `data_root`, else $GANBENCH_DATA_ROOT, else ../shared/data beside the checkout."""
    value = config.get("data_root") or os.environ.get("GANBENCH_DATA_ROOT")
    return Path(value).expanduser() if value else REPO_ROOT.parent / "shared" / "data"


def dataset_options(config: dict[str, Any], dataset: str) -> dict[str, Any]:
    """A dataset's adapter options with `{data_root}` substituted."""
    root = str(data_root(config))

    def substitute(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{data_root}", root)
        if isinstance(value, list):
            return [substitute(item) for item in value]
        if isinstance(value, dict):
            return {key: substitute(item) for key, item in value.items()}
        return value

    return substitute(config["datasets"][dataset].get("options", {}))


def method_names(config: dict[str, Any]) -> list[str]:
    from benchmark.methods import get_method, methods

    names = sorted(methods()) if config["methods"] == "all" else list(config["methods"])
    for name in names:  # unknown names and bad hyperparameters fail here, before any job runs
        get_method(name)(**method_hparams(config, name))
    return names


def method_hparams(config: dict[str, Any], method: str) -> dict[str, Any]:
    """Hyperparameters of a method or variant: "freeze_d+diffaug" takes freeze_d's, then its own entries.

    A variant of a meta-learner adapts from its base method's meta-training, so it may not set hyperparameters
    of its own (they would apply to adaptation only, unlike what its record would claim).
    """
    from benchmark.methods import get_method

    table = config["adapt"]["method_hparams"]
    base = method.split("+")[0]
    if method != base and table.get(method) and "meta_checkpoint" in get_method(base).requires:
        raise BenchmarkError(
            f"Config key 'adapt.method_hparams.{method}': a variant of the meta-learner '{base}' shares its "
            f"meta-training, so set these hyperparameters under adapt.method_hparams.{base} instead."
        )
    return {**table.get(base, {}), **table.get(method, {})}


@dataclass(frozen=True)
class AdaptationRun:
    task: str
    shots: int
    method: str
    seed: int
    split_draw: int
    pretrain_seed: int

    @property
    def run_dir(self) -> str:
        return f"results/runs/{self.task}/k{self.shots}/{self.method}/seed{self.seed}"


def run_for(config: dict[str, Any], task: str, shots: int, method: str, seed: int) -> AdaptationRun:
    """The i-th seed uses split draw i (mod draws) and pretraining seed i (mod pretraining seeds)."""
    if seed not in config["seeds"]:
        raise BenchmarkError(f"Seed {seed} is not in the config's `seeds` {config['seeds']}.")
    index = config["seeds"].index(seed)
    pretrain_seeds = config["pretrain"]["seeds"]
    return AdaptationRun(task, shots, method, seed, index % config["split_draws"], pretrain_seeds[index % len(pretrain_seeds)])


def run_plan(config: dict[str, Any]) -> list[AdaptationRun]:
    return [
        run_for(config, task, shots, method, seed)
        for task in config["tasks"]
        for shots in config["shots"]
        for method in method_names(config)
        for seed in config["seeds"]
    ]
