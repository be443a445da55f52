"""What each stage is told: one settings object per stage, and the coordinates of an adaptation run.

The run plan (`benchmark.plan`) builds each job's settings from the validated config. The workflow passes them
to the job as one JSON argument, which is also the rule's rerun trigger (a changed setting reruns exactly the
jobs that use it), and the CLI reads them back with `from_json` and hands them to the stage. Config sections
(`train`, `evaluation`, `architecture`, ...) travel whole; `from_json` completes a partial section from the
schema's defaults, so a hand-written `--settings` needs only what differs from them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Self

from benchmark.config import complete, max_seed, train_section
from benchmark.errors import BenchmarkError
from benchmark.layout import RUN

if TYPE_CHECKING:  # the engine pulls in scipy, which the workflow's planning never needs
    from benchmark.comparison import ComparisonSettings


@dataclass(frozen=True)
class AdaptationRun:
    """One cell of the benchmark grid: what tells one adaptation job from another."""

    task: str
    shots: int
    method: str  # a registered method or a variant ("freeze_d+diffaug")
    seed: int
    split_draw: int  # which draw of K shots from the task's shot pool
    pretrain_seed: int  # which source pretraining (or meta-training) it starts from
    draw: int  # which hyperparameter draw of its method (benchmark.sweep; 0: the defaults)

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name in ("task", "method"):
                if not isinstance(value, str):
                    raise BenchmarkError(f"AdaptationRun: '{name}' = {value!r} should be a name (text).")
            else:
                _check_count(f"AdaptationRun.{name}", value)

    @property
    def run_dir(self) -> str:
        return RUN.fill(**asdict(self))


def _check_count(what: str, value: Any) -> None:
    """A seed, K or draw: an integer from 0 to the largest seed every random generator accepts."""
    if not (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= max_seed()):
        raise BenchmarkError(f"{what} = {value!r} should be an integer from 0 to {max_seed()}.")


# A run's fields in every result record and CSV row: its coordinates, and the kind of its task.
RUN_FIELDS = ("task", "task_kind", *(field.name for field in fields(AdaptationRun) if field.name != "task"))


@dataclass(frozen=True)
class StageSettings:
    """Base of the settings objects: JSON round trip, unknown and missing keys refused by name."""

    # Fields that hold a whole config section, completed from the schema's defaults: field -> section name.
    sections: ClassVar[dict[str, str]] = {}
    # A settings object that is itself one config section (its fields are the section's keys).
    config_section: ClassVar[str | None] = None

    def __post_init__(self) -> None:
        # A `train` section carries the numerics switches only when on (`config.train_section`), however the object
        # was built: a job's settings JSON stays as it was before the switches existed.
        for name, section in self.sections.items():
            if section == "train":
                object.__setattr__(self, name, train_section(getattr(self, name)))

    @classmethod
    def from_json(cls, text: str) -> Self:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise BenchmarkError(f"--settings is not valid JSON ({error}).") from error
        if not isinstance(value, dict):
            raise BenchmarkError("--settings must be a JSON object.")
        return cls.from_dict(value)

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Self:
        if cls.config_section is not None:
            value = complete(cls.config_section, value)
        names = [field.name for field in fields(cls)]
        unknown, missing = sorted(set(value) - set(names)), [name for name in names if name not in value]
        if unknown or missing:
            problems = [f"{what} key(s) {', '.join(keys)}" for what, keys in (("unknown", unknown), ("missing", missing)) if keys]
            raise BenchmarkError(f"{cls.__name__}: {'; '.join(problems)}. The settings take: {', '.join(names)}.")
        value = {**value, **{name: complete(section, value[name]) for name, section in cls.sections.items()}}
        for name in names:
            if name.endswith("seed"):
                _check_count(f"{cls.__name__}.{name}", value[name])
        return cls(**cls._parse(value))

    @classmethod
    def _parse(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Turn nested JSON objects into the dataclasses they stand for."""
        return value

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class PrepareDataSettings(StageSettings):
    source: str  # a dataset source adapter
    options: dict[str, Any]  # its options, `{data_root}` already substituted
    image_size: int
    channels: int


@dataclass(frozen=True)
class SplitSourceSettings(StageSettings):
    spec: dict[str, Any]  # the `sources.<name>` entry
    split_seed: int

    sections = {"spec": "source"}


@dataclass(frozen=True)
class SplitTaskSettings(StageSettings):
    spec: dict[str, Any]  # the `tasks.<name>` entry
    shots: list[int]
    split_draws: int
    split_seed: int

    sections = {"spec": "task"}


@dataclass(frozen=True)
class SplitMetaSettings(StageSettings):
    meta: dict[str, Any]  # the `meta` section: which meta-training tasks to draw
    split_seed: int

    sections = {"meta": "meta"}


@dataclass(frozen=True)
class EncoderSettings(StageSettings):
    """The `encoder` section."""

    config_section = "encoder"

    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    max_images_per_dataset: int
    holdout_fraction: float
    threads: int  # fixed here, not by the scheduler: the encoder's weights depend on it


@dataclass(frozen=True)
class PretrainSettings(StageSettings):
    architecture: dict[str, Any]
    train: dict[str, Any]
    seed: int  # the pretraining seed
    device: str

    sections = {"architecture": "architecture", "train": "train"}


@dataclass(frozen=True)
class MetaTrainSettings(StageSettings):
    method: str
    method_hparams: dict[str, Any]
    architecture: dict[str, Any]
    seed: int  # the pretraining seed
    device: str

    sections = {"architecture": "architecture"}


@dataclass(frozen=True)
class BuildArtefactSettings(StageSettings):
    artefact: str  # a plugin artefact (`benchmark.methods.Artefact`)
    architecture: dict[str, Any]
    image_size: int
    channels: int
    seed: int  # the pretraining seed
    device: str

    sections = {"architecture": "architecture"}


@dataclass(frozen=True)
class AdaptSettings(StageSettings):
    run: AdaptationRun
    method_hparams: dict[str, Any]  # as set in the config; the method fills in its own defaults
    architecture: dict[str, Any]
    train: dict[str, Any]
    evaluation: dict[str, Any]  # for the validation scores of the evaluation schedule
    device: str

    sections = {"architecture": "architecture", "train": "train", "evaluation": "evaluation"}

    @classmethod
    def _parse(cls, value: dict[str, Any]) -> dict[str, Any]:
        run = value["run"]
        names = [field.name for field in fields(AdaptationRun)]
        if not isinstance(run, dict) or sorted(run) != sorted(names):
            raise BenchmarkError(f"AdaptSettings: 'run' must be an object with exactly the keys {', '.join(names)}.")
        return {**value, "run": AdaptationRun(**run)}


@dataclass(frozen=True)
class EvaluateSettings(StageSettings):
    evaluation: dict[str, Any]
    device: str
    # `sweep.oracle`: hyperparameter draws are also chosen on the reference set, so every reported checkpoint is
    # also scored on the reference set's two halves (`benchmark.selection.reference_halves`).
    oracle_draws: bool

    sections = {"evaluation": "evaluation"}


@dataclass(frozen=True)
class PanelSettings(StageSettings):
    samples: int  # generated images per run for the sample grids (`paper.samples`)
    noise_seed: int  # the latent codes' seed: the evaluation's, so panels show the first images that were scored
    device: str
    scored: int  # images the evaluation scores per run (`evaluation.num_generated`): the nearest-shot panels' candidates


@dataclass(frozen=True)
class PaperSettings(StageSettings):
    """The `paper` section: how the paper outputs are computed (`benchmark.paper`)."""

    config_section = "paper"

    samples: int
    intervals: bool
    effect: float
    alpha: float
    power: float
    bootstrap_resamples: int
    bootstrap_seed: int
    planned_seeds: int
    equivalence_margin: float

    def comparison(self) -> ComparisonSettings:
        """What the comparison engine needs: the level and the equivalence margin."""
        from benchmark.comparison import ComparisonSettings

        return ComparisonSettings(self.alpha, self.equivalence_margin)
