"""Configuration: validated against one JSON Schema, which is also the one table of defaults.

The Snakefile and the tests both call `validate_config`, so a bad value gives the same message everywhere:
the key's path, what was found and what is expected. Settings objects (`TrainSettings`, `Architecture`,
`MetricSettings`, each stage's settings) take their values from a validated section (`complete`), never from
defaults of their own. What runs, and with which settings, is derived from the config in `benchmark.plan`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

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
    _raise_first_error(_schema(), config, prefix=[])
    _check_references(config)
    return config


# Config sections that settings objects are built from, and where the schema describes each.
SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("definitions", "train"),  # pretrain.train and adapt.train
    "architecture": ("properties", "architecture"),
    "evaluation": ("properties", "evaluation"),
    "encoder": ("properties", "encoder"),
    "meta": ("properties", "meta"),
}


def complete(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A copy of one section's values, validated, with every key the schema gives a default filled in.

    Settings objects call this instead of carrying defaults of their own, so a hand-written `--settings` (or a
    test) needs only the keys that differ from the schema's defaults."""
    subschema = _schema()
    for part in SECTIONS[section]:
        subschema = subschema[part]
    values = copy.deepcopy(values)
    _raise_first_error(subschema, values, prefix=[section])
    return values


def _raise_first_error(schema: dict[str, Any], instance: Any, prefix: list[str]) -> None:
    errors = sorted(_Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        key = ".".join(str(part) for part in [*prefix, *error.absolute_path]) or "(top level)"
        hint = ""
        if isinstance(error.instance, str) and _looks_numeric(error.instance):
            hint = f" YAML reads a number such as 1e-4 without a dot as a string: write {error.instance.replace('e', '.0e', 1)}."
        raise BenchmarkError(f"Config key '{key}': {error.message}.{hint}")


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
            raise BenchmarkError(
                f"Config key 'sources.{name}.dataset': '{source['dataset']}' is not a key of `datasets` ({sorted(config['datasets'])})."
            )
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
