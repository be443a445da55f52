"""Configuration: validated against one JSON Schema, which is also the one table of defaults.

The Snakefile and the tests both call `validate_config`, so a bad value gives the same message everywhere:
the key's path, what was found and what is expected. Settings objects (`TrainSettings`, `Architecture`,
`MetricSettings`, each stage's settings) take their values from a validated section (`complete`), never from
defaults of their own. What runs, and with which settings, is derived from the config in `benchmark.plan`.
"""

from __future__ import annotations

import copy
import math
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


def _is_integer(checker: Any, instance: Any) -> bool:
    """An int, never a float: JSON Schema counts 10.0 as an integer, but `range(10.0)` and a `k5.0` folder fail."""
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker: Any, instance: Any) -> bool:
    """A finite int or float: NaN passes every minimum and maximum check, and infinity is no setting either."""
    return isinstance(instance, (int, float)) and not isinstance(instance, bool) and math.isfinite(instance)


def _with_defaults(validator_class: type) -> type:
    validate_properties = validator_class.VALIDATORS["properties"]

    def fill_defaults(validator: Any, properties: dict[str, Any], instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        if isinstance(instance, dict):
            for key, subschema in properties.items():
                if "default" in subschema:
                    instance.setdefault(key, copy.deepcopy(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    type_checker = validator_class.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    return jsonschema.validators.extend(validator_class, {"properties": fill_defaults}, type_checker=type_checker)


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate in place, fill defaults and check cross-references; returns the same dict."""
    _raise_first_error(_schema(), config, prefix=[])
    _check_references(config)
    return config


def max_seed() -> int:
    """The largest seed the schema admits: what every random generator the stages seed accepts."""
    return _schema()["definitions"]["seed"]["maximum"]


# Config sections that settings objects are built from, and where the schema describes each.
SECTIONS: dict[str, tuple[str, ...]] = {
    "train": ("definitions", "train"),  # pretrain.train and adapt.train
    "architecture": ("properties", "architecture"),
    "evaluation": ("properties", "evaluation"),
    "encoder": ("properties", "encoder"),
    "meta": ("properties", "meta"),
    "paper": ("properties", "paper"),
    "source": ("properties", "sources", "additionalProperties"),  # one entry of `sources`
    "task": ("properties", "tasks", "additionalProperties"),  # one entry of `tasks`
}


def complete(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """A copy of one section's values, validated, with every key the schema gives a default filled in.

    Settings objects call this instead of carrying defaults of their own, so a hand-written `--settings` (or a
    test) needs only the keys that differ from the schema's defaults."""
    subschema = _schema()
    for part in SECTIONS[section]:
        subschema = subschema[part]
    values = copy.deepcopy(values)
    # The section's references (#/definitions/...) resolve against the whole schema's definitions.
    _raise_first_error({**subschema, "definitions": _schema()["definitions"]}, values, prefix=[section])
    return values


def _raise_first_error(schema: dict[str, Any], instance: Any, prefix: list[str]) -> None:
    errors = sorted(_Validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        error = errors[0]
        expected = f" Expected: {error.schema['description']}." if error.context and error.schema.get("description") else ""
        if error.context:  # "not valid under any of the given schemas": say why under the closest one
            error = max(error.context, key=lambda sub: (sub.instance is error.instance and sub.validator != "const", len(sub.absolute_path)))
        key = ".".join(str(part) for part in [*prefix, *error.absolute_path]) or "(top level)"
        raise BenchmarkError(f"Config key '{key}': {_message(error)}{expected}")


def _message(error: jsonschema.ValidationError) -> str:
    """The validator's message, with the fix for the two ways YAML turns a number into something else."""
    value, expected = error.instance, error.validator_value if error.validator == "type" else None
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value} is not a finite number. Write a finite value."
    if isinstance(value, float) and expected == "integer":
        return f"{value} is not an integer. Write it without a decimal point{f': {int(value)}' if value.is_integer() else ''}."
    if isinstance(value, str) and expected in ("integer", "number") and _looks_numeric(value):
        # PyYAML reads a float only with a dot in the mantissa and a sign in the exponent: 1.0e-4, 1.0e+3.
        number = float(value)
        if expected == "integer":
            fix = f"write it as an integer: {int(number)}" if number.is_integer() else "it must be a whole number"
        else:
            mantissa, _, exponent = value.lower().partition("e")
            mantissa = mantissa if "." in mantissa else f"{mantissa}.0"
            exponent = exponent if not exponent or exponent[0] in "+-" else f"+{exponent}"
            fix = f"write {mantissa}e{exponent}" if exponent else f"write {mantissa}"
        return f"{error.message}. YAML read {value!r} as text, not as a number: {fix}."
    fixes = {
        "uniqueItems": "List each value once.",
        "pattern": f"Use letters, digits, _ and - only ({error.schema.get('description', '')}).",
        "multipleOf": f"Use a multiple of {error.validator_value} ({error.schema.get('description', '')}).",
        "minimum": "Raise it.",
        "exclusiveMinimum": "Raise it.",
        "maximum": "Lower it.",
        "exclusiveMaximum": "Lower it.",
        "enum": "Use one of the values listed.",
        "additionalProperties": "Remove it or fix its spelling.",
        "required": "Add it.",
    }
    return f"{error.message}. {fixes.get(error.validator, '')}".rstrip()


def _looks_numeric(text: str) -> bool:
    """Text that float() reads as a finite number (YAML leaves "1e3" as text; "nan" and "1e400" are no settings)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _check_references(config: dict[str, Any]) -> None:
    from benchmark.data import get_data_source  # deferred: it discovers the dataset plugins

    for name, dataset in config["datasets"].items():
        try:
            source = get_data_source(dataset["source"])
        except BenchmarkError as error:
            raise BenchmarkError(f"Config key 'datasets.{name}.source': {error}") from error
        try:
            source.check_options(dataset["options"])
        except BenchmarkError as error:
            raise BenchmarkError(f"Config key 'datasets.{name}.options': {error}") from error
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
        # (class_neighbours matters only for targets of two classes or more: checked before adaptation, by then known)
        nearest_k = config["evaluation"]["nearest_k"]
        if task["reference_size"] is not None and task["reference_size"] <= nearest_k:
            raise BenchmarkError(
                f"Config key 'tasks.{name}.reference_size' ({task['reference_size']}) is too small for the k-NN metrics: "
                f"evaluation.nearest_k = {nearest_k} needs at least {nearest_k + 1} reference images. Raise it or lower nearest_k."
            )
        if max(config["shots"]) > task["shot_pool_size"]:
            raise BenchmarkError(
                f"Config key 'tasks.{name}.shot_pool_size' ({task['shot_pool_size']}) is smaller than the largest K in "
                f"`shots` ({max(config['shots'])}). Raise it or lower K."
            )


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (plain YAML keeps the last, silently)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    lines: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in lines:
            raise BenchmarkError(
                f"{key_node.start_mark.name}: the key '{key}' is written twice, on lines {lines[key]} and {key_node.start_mark.line + 1}; "
                "YAML would keep the last one silently. Keep one of them."
            )
        lines[key] = key_node.start_mark.line + 1
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's mapping, unvalidated; a key written twice is refused."""
    path = Path(path)
    try:
        with open(path) as handle:
            config = yaml.load(handle, Loader=_StrictLoader)
    except OSError as error:
        raise BenchmarkError(f"Cannot read config file {path}: {error}.") from error
    except yaml.YAMLError as error:
        raise BenchmarkError(f"Config file {path} is not valid YAML ({error}). Fix the line it names.") from error
    if not isinstance(config, dict):
        raise BenchmarkError(f"Config file {path} does not hold a mapping of keys.")
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    return validate_config(read_config_file(path))


SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # the shared data folder beside the checkout, where one exists
FETCHED_DATA = REPO_ROOT / "data"  # where official files are fetched to when no data folder is given (git-ignored)


def data_root(config: dict[str, Any]) -> Path:
    """Where the datasets' files live: config `data_root`, else $GANBENCH_DATA_ROOT, else ../shared/data beside the
    checkout when that folder exists, else `data/` in the checkout, which the sources fill from the official hosts."""
    value = config.get("data_root") or os.environ.get("GANBENCH_DATA_ROOT")
    if value:
        return Path(value).expanduser()
    return SHARED_DATA if SHARED_DATA.is_dir() else FETCHED_DATA


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


# How the seeds of one task, K, method and draw run (config `seed_batching`; the schema's enum): a job per run, or one
# job per seed group that trains them one after another or as one vectorised model.
SEED_BATCHING = ("separate", "sequential", "vectorised")

# `train` keys that change only how the arithmetic is done (bf16 autocast, torch.compile), off by default.
NUMERICS_SWITCHES = ("autocast_bf16", "compile")


def train_section(train: dict[str, Any]) -> dict[str, Any]:
    """A completed `train` section as a job's settings carry it: the numerics switches only when on, so that a job's
    settings (and so Snakemake's params trigger and a run's record) stay as they were before the switches existed;
    `TrainSettings.from_config` fills them back in."""
    return {key: value for key, value in train.items() if key not in NUMERICS_SWITCHES or value}
