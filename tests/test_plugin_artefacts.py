"""A plugin adds an artefact to the pipeline: the registry, the run plan, the real Snakemake DAG (a
`build_artefact` job before the runs that need it), the stage that builds it, and a method that reads it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from benchmark import methods as registry
from benchmark.checkpoint import load_tensors
from benchmark.config import validate_config
from benchmark.errors import BenchmarkError
from benchmark.plan import Plan
from benchmark.settings import BuildArtefactSettings
from benchmark.stages.build_artefact import build_artefact
from conftest import REPO, TINY_ARCH, TINY_DIGIT_ARCH, adapt_cli, run_cli, write_source_checkpoint

PLUGIN = '''
import torch
from benchmark.methods import Artefact, Hyperparameter, Method


def source_mean_image(context):
    """The mean of 64 samples of the source G (seeded by the pretraining seed)."""
    generator = context.source_models().generator.eval()
    z = torch.randn(64, generator.z_dim, generator=torch.Generator().manual_seed(context.seed))
    with torch.no_grad():
        return {"mean_image": generator(z.to(context.device)).mean(0)}


class MeanAnchor(Method):
    """Test-only: fine-tuning with G's batch mean pulled towards the source's mean image (a plugin artefact)."""

    name = "mean_anchor"
    paper = "none (test)"
    requires = ("source_checkpoint", "source_mean_image")
    provides = (Artefact("source_mean_image", source_mean_image, help="mean image of the source G"),)
    hyperparameters = {"weight": Hyperparameter(default=1.0, search=(0.1, 10.0), log_scale=True)}

    def initialise(self, context):
        self.mean_image = context.tensors_from("source_mean_image")["mean_image"]
        return context.source_models()

    def step_losses(self, update, batch, generator, discriminator):
        if update != "g":
            return {}
        return {"mean_anchor": self.hparams["weight"] * (batch.fake.mean(0) - self.mean_image).pow(2).mean()}
'''


def _use_plugins(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("GANBENCH_METHODS_PATH", str(folder))
    registry.methods.cache_clear()
    registry.get_method.cache_clear()


@pytest.fixture
def plugin_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "mean_anchor.py").write_text(PLUGIN)
    _use_plugins(monkeypatch, folder)
    yield folder
    monkeypatch.delenv("GANBENCH_METHODS_PATH")
    registry.methods.cache_clear()
    registry.get_method.cache_clear()


def _config(tmp_path: Path) -> Path:
    config = yaml.safe_load((REPO / "tests" / "reliability_config.yaml").read_text())
    config["methods"] = ["mean_anchor", "scratch"]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_plugin_artefact_is_registered_and_wired_into_the_plan_and_the_dag(plugin_folder, tmp_path):
    assert set(registry.plugin_artefacts()) == {"source_mean_image"}
    config = yaml.safe_load(_config(tmp_path).read_text())
    validate_config(config)  # fills in the schema's defaults, as the Snakefile does
    plan = Plan(config)
    run = plan.run("digits_5to9", 5, "mean_anchor", 0)
    assert plan.artefacts(run) == {
        "source_checkpoint": "results/pretrain/digits_0to4/seed0/checkpoint.pt",
        "source_mean_image": "results/artefacts/source_mean_image/digits_0to4/seed0.safetensors",
    }
    assert plan.plugin_artefact_inputs("source_mean_image", "digits_0to4", 0) == {
        "source_checkpoint": "results/pretrain/digits_0to4/seed0/checkpoint.pt"
    }

    dry = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(_config(tmp_path))],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = {line.split()[0]: int(line.split()[1]) for line in dry.stdout.splitlines() if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert jobs.get("build_artefact") == 1 and jobs.get("adapt") == 2, dry.stdout[-3000:]
    assert "results/artefacts/source_mean_image/digits_0to4/seed0.safetensors" in dry.stdout


def test_the_stage_builds_the_artefact_with_its_provenance_and_a_method_reads_it(plugin_folder, tmp_path, task_files):
    source = write_source_checkpoint(tmp_path / "source.pt", TINY_DIGIT_ARCH)
    settings = BuildArtefactSettings.from_dict(
        {"artefact": "source_mean_image", "architecture": TINY_ARCH, "image_size": 28, "channels": 1, "seed": 0, "device": "cpu"}
    )
    output = tmp_path / "artefacts" / "mean.safetensors"
    built = build_artefact(settings, {"source_checkpoint": source}, output)
    assert torch.equal(load_tensors(output)["mean_image"], built["mean_image"]) and built["mean_image"].shape == (1, 28, 28)
    from safetensors import safe_open

    with safe_open(str(output), "pt") as stored:
        provenance = json.loads(stored.metadata()["metadata_json"])
    assert provenance["artefact"] == "source_mean_image" and set(provenance["inputs_sha256"]) == {"source_checkpoint"}

    env = {"GANBENCH_METHODS_PATH": str(plugin_folder)}
    run = adapt_cli(task_files, tmp_path / "run", {"source_checkpoint": source, "source_mean_image": output}, env=env, method="mean_anchor")
    assert run.returncode == 0, run.stderr[-2000:]
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines() if "g_mean_anchor" in line]
    assert log and all(line["g_mean_anchor"] >= 0 for line in log)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert set(record["artefacts_sha256"]) == {"source_checkpoint", "source_mean_image"}

    cli = run_cli(
        "build-artefact", "--settings", settings.to_json(), "--artefact", f"source_checkpoint={source}", "--output", str(tmp_path / "cli.safetensors"),
        env=env,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert torch.equal(load_tensors(tmp_path / "cli.safetensors")["mean_image"], built["mean_image"])


def test_bad_plugin_artefacts_are_refused_with_one_clear_error(plugin_folder, monkeypatch):
    (plugin_folder / "twice.py").write_text(PLUGIN.replace('name = "mean_anchor"', 'name = "mean_anchor_twice"'))
    _use_plugins(monkeypatch, plugin_folder)
    with pytest.raises(BenchmarkError, match="provides artefact 'source_mean_image', which method 'mean_anchor' provides already"):
        registry.methods()

    (plugin_folder / "twice.py").unlink()
    (plugin_folder / "meta.py").write_text(
        PLUGIN.replace('name = "mean_anchor"', 'name = "from_meta"')
        .replace('Artefact("source_mean_image", source_mean_image,', 'Artefact("meta_mean", source_mean_image, requires=("meta_checkpoint",),')
        .replace('requires = ("source_checkpoint", "source_mean_image")', 'requires = ("meta_mean",)')
    )
    _use_plugins(monkeypatch, plugin_folder)
    with pytest.raises(
        BenchmarkError,
        match=r"'meta_mean' of method 'from_meta' is built from \['meta_checkpoint'\]; a plugin artefact is built from source_checkpoint only",
    ):
        registry.methods()

    (plugin_folder / "meta.py").unlink()
    _use_plugins(monkeypatch, plugin_folder)
    with pytest.raises(BenchmarkError, match="Artefact .*missing.safetensors does not exist"):
        load_tensors(plugin_folder / "missing.safetensors")
