"""One table of defaults (the config schema), stage settings that survive the JSON trip, and the run plan."""

from __future__ import annotations

import dataclasses
import importlib
import json
import pkgutil
from typing import ClassVar

import pytest
import yaml

import benchmark
import benchmark.settings as settings_module
from benchmark import layout
from benchmark.config import SECTIONS, _schema, complete, validate_config
from benchmark.errors import BenchmarkError
from benchmark.plan import Plan
from benchmark.settings import RUN_FIELDS, AdaptationRun, AdaptSettings, EvaluateSettings, SplitMetaSettings
from benchmark.training import LOSSES, TrainSettings
from conftest import REPO


def schema_section(name: str) -> dict:
    schema = _schema()
    for part in SECTIONS[name]:
        schema = schema[part]
    return schema["properties"]


def config_backed_dataclasses() -> list[type]:
    """Every dataclass of the library that is built from a config section (it declares `config_section`)."""
    found = []
    for module_info in pkgutil.walk_packages(benchmark.__path__, "benchmark."):
        module = importlib.import_module(module_info.name)
        for value in vars(module).values():
            if dataclasses.is_dataclass(value) and isinstance(value, type) and value.__module__ == module.__name__:
                if getattr(value, "config_section", None):
                    found.append(value)
    return found


def defaults_written_twice(cls: type) -> list[str]:
    """Fields of a config-backed dataclass that carry a default of their own, or that its section does not know.

    The schema is the one table of defaults: a dataclass default either repeats it (and can drift from it) or
    contradicts it, and both are reported, with the schema's value beside the dataclass's."""
    section = schema_section(cls.config_section)
    top_level = _schema()["properties"]
    problems = []
    for field in dataclasses.fields(cls):
        schema_entry = section.get(field.name, top_level.get(field.name) if cls.config_section == "architecture" else None)
        if schema_entry is None:
            problems.append(f"{cls.__name__}.{field.name}: not a key of the schema's '{cls.config_section}' section")
        own = field.default if field.default is not dataclasses.MISSING else field.default_factory
        if own is not dataclasses.MISSING:
            problems.append(f"{cls.__name__}.{field.name}: default {own!r} here, {(schema_entry or {}).get('default')!r} in the schema")
    return problems


def test_the_schema_is_the_one_table_of_defaults():
    classes = config_backed_dataclasses()
    assert {cls.__name__ for cls in classes} >= {"TrainSettings", "Architecture", "MetricSettings", "EncoderSettings"}
    assert [problem for cls in classes for problem in defaults_written_twice(cls)] == []
    assert tuple(_schema()["definitions"]["train"]["properties"]["loss"]["enum"]) == LOSSES

    # A settings class that writes a default of its own is caught, whether it agrees with the schema or not.
    @dataclasses.dataclass(frozen=True)
    class Drifted:
        config_section: ClassVar[str] = "train"
        steps: int
        batch_size: int = 32  # the schema says 64
        lr_g: float = 0.0002  # the same as the schema, still a second copy

    assert defaults_written_twice(Drifted) == [
        "Drifted.batch_size: default 32 here, 64 in the schema",
        "Drifted.lr_g: default 0.0002 here, 0.0002 in the schema",
    ]


def own_defaults(cls: type) -> list[str]:
    return [
        f"{cls.__name__}.{field.name}"
        for field in dataclasses.fields(cls)
        if field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING
    ]


def test_no_stage_settings_carry_defaults_of_their_own():
    """What a stage is told comes whole from the plan (or a hand-written JSON completed from the schema)."""
    classes = [value for value in vars(settings_module).values() if isinstance(value, type) and dataclasses.is_dataclass(value)]
    assert {cls.__name__ for cls in classes} >= {"AdaptationRun", "AdaptSettings", "PretrainSettings", "EvaluateSettings"}
    assert [name for cls in classes for name in own_defaults(cls)] == []

    @dataclasses.dataclass(frozen=True)
    class WithDefault(settings_module.StageSettings):
        device: str = "cpu"

    assert own_defaults(WithDefault) == ["WithDefault.device"]


def test_a_partial_section_is_completed_from_the_schema_and_a_bad_value_named():
    train = TrainSettings.from_config({"steps": 7, "lr_d": 1.0e-3})
    assert train.steps == 7 and train.lr_d == 1.0e-3
    assert train.batch_size == schema_section("train")["batch_size"]["default"]
    assert train.loss == schema_section("train")["loss"]["default"]
    with pytest.raises(BenchmarkError, match=r"'train\.lr_g'.*not of type 'number'.*1\.0e-4"):
        complete("train", {"steps": 1, "lr_g": "1e-4"})
    with pytest.raises(BenchmarkError, match=r"'evaluation'.*'num_samples' was unexpected"):
        complete("evaluation", {"num_samples": 10})
    values = {"steps": 3}
    complete("train", values)
    assert values == {"steps": 3}, "the caller's dict is left as it was"
    # Built by hand, a settings object still obeys the schema: a misspelt loss would otherwise train silently.
    with pytest.raises(BenchmarkError, match=r"'train\.loss': 'hinj' is not one of \['nonsaturating', 'hinge'\]"):
        dataclasses.replace(train, loss="hinj")


@pytest.fixture(scope="module")
def plan() -> Plan:
    config = validate_config(yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text()))
    return Plan(config)


def test_stage_settings_survive_the_json_trip(plan):
    run = plan.run("digits_5to9", 5, "freeze_d+diffaug", 1)
    for settings in (plan.adapt(run), plan.evaluate(), plan.split_meta(), plan.pretrain(0), plan.train_encoder(), plan.meta_train("reptile", 0, 0)):
        again = type(settings).from_json(settings.to_json())
        assert again == settings and again.to_json() == settings.to_json()
    assert AdaptSettings.from_json(plan.adapt(run).to_json()).run == run


def test_stage_settings_refuse_unknown_and_missing_keys_by_name(plan):
    value = json.loads(plan.evaluate().to_json())
    with pytest.raises(
        BenchmarkError, match=r"unknown key\(s\) devices; missing key\(s\) device\. The settings take: evaluation, device, oracle_draws"
    ):
        EvaluateSettings.from_dict({"evaluation": value["evaluation"], "devices": "cpu", "oracle_draws": False})
    value = json.loads(plan.adapt(plan.runs[0]).to_json())
    del value["run"]["split_draw"]
    with pytest.raises(BenchmarkError, match="'run' must be an object with exactly the keys task, shots, method"):
        AdaptSettings.from_dict(value)
    with pytest.raises(BenchmarkError, match=r"'meta\.count'"):
        SplitMetaSettings.from_dict({"meta": {"count": "many"}, "split_seed": 0})
    with pytest.raises(BenchmarkError, match="not valid JSON"):
        EvaluateSettings.from_json("{device: cpu}")


def test_seeds_cycle_through_split_draws_and_pretraining_seeds(plan):
    config = dict(plan.config, seeds=[4, 7, 9], split_draws=2, pretrain=dict(plan.config["pretrain"], seeds=[0, 1]))
    wide = Plan(config)
    assert [(run.seed, run.split_draw, run.pretrain_seed) for run in wide.runs[:3]] == [(4, 0, 0), (7, 1, 1), (9, 0, 0)]
    assert len(wide.runs) == len(config["tasks"]) * len(config["shots"]) * len(wide.methods) * 3
    with pytest.raises(BenchmarkError, match=r"Seed 5 is not in the config's `seeds` \[4, 7, 9\]"):
        wide.run("digits_5to9", 5, "finetune", 5)


def test_a_run_reads_its_artefacts_from_the_stages_that_write_them(plan):
    variant = plan.run("digits_to_mnist", 5, "maml_gan+diffaug", 1)
    source = plan.config["tasks"]["digits_to_mnist"]["source"]
    pretrain_seed = variant.pretrain_seed
    # A variant adapts from its base method's meta-training; the files are the stages' declared outputs.
    assert plan.artefacts(variant) == {"meta_checkpoint": f"results/metatrain/{source}/maml_gan/h0/seed{pretrain_seed}/checkpoint.pt"}
    meta_output = layout.META_TRAIN / layout.StageFolder.CHECKPOINT
    assert plan.artefacts(variant)["meta_checkpoint"] == meta_output.fill(source=source, method="maml_gan", seed=pretrain_seed, draw=0)
    finetune = plan.run("digits_to_mnist", 5, "finetune", 0)
    assert plan.artefacts(finetune) == {"source_checkpoint": f"results/pretrain/{source}/seed0/checkpoint.pt"}
    assert plan.artefacts(plan.run("digits_to_mnist", 5, "scratch", 0)) == {}
    assert finetune.run_dir == "results/runs/digits_to_mnist/k5/finetune/h0/seed0"


def test_record_fields_are_the_run_coordinates_and_the_task_kind():
    assert RUN_FIELDS == ("task", "task_kind", "shots", "method", "seed", "split_draw", "pretrain_seed", "draw")
    assert set(RUN_FIELDS) == {field.name for field in dataclasses.fields(AdaptationRun)} | {"task_kind"}


def test_numerics_switches_that_are_off_leave_a_job_s_settings_as_they_were(monkeypatch):
    """Snakemake reruns a job whose params (its settings JSON) changed: switches added to the schema must not change
    the settings of a job that leaves them off, or every existing run would retrain. On, they are passed. Without
    the filter (`train_section` as the identity, below) the off switches appear and the check fails."""
    config = validate_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))

    def switches(plan: Plan) -> list[set[str]]:
        run = plan.runs[0]
        return [set(json.loads(settings.to_json())["train"]) & {"autocast_bf16", "compile"} for settings in (plan.adapt(run), plan.pretrain(0))]

    assert switches(Plan(config)) == [set(), set()]
    monkeypatch.setattr(settings_module, "train_section", lambda train: train)
    assert switches(Plan(config)) == [{"autocast_bf16", "compile"}] * 2  # the broken variant is caught
    monkeypatch.undo()
    config["adapt"]["train"]["autocast_bf16"] = True
    assert switches(Plan(config))[0] == {"autocast_bf16"}


def test_seed_batching_modes_are_the_schema_s():
    from benchmark.config import SEED_BATCHING

    assert tuple(_schema()["properties"]["seed_batching"]["enum"]) == SEED_BATCHING
