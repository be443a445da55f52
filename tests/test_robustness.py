"""Inputs a hostile user tried (issue 10), one test per case: each gave a wrong result without an error, a traceback
instead of one clear error, or an error found too late. Every test here fails on the code before the fixes
(commit bab4ffc, run with import shims for the names these fixes added); `settings_without_a_key` was fixed
earlier, by the stage settings objects of issue 9."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import benchmark.io
from benchmark import layout
from benchmark.checkpoint import save_checkpoint
from benchmark.config import read_config_file, validate_config
from benchmark.data import PreparedDataset, get_data_source, prepare_dataset
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_json
from benchmark.io import atomic_write_text
from benchmark.models import Architecture
from benchmark.plan import Plan
from benchmark.splits import build_meta_manifest, build_source_manifest, build_task_manifest, read_manifest, write_manifest
from conftest import REPO, TINY_ARCH, adapt_cli, adapt_settings, assert_one_clear_error, run_cli, save_prepared, write_source_checkpoint

SMOKE = REPO / "tests" / "smoke_config.yaml"
TINY = Architecture.from_config(TINY_ARCH, image_size=28, channels=1)


def smoke_config(**changes) -> dict:
    config = yaml.safe_load(SMOKE.read_text())
    config.update(changes)
    return config


def refused(config: dict, *phrases: str) -> None:
    with pytest.raises(BenchmarkError) as info:
        validate_config(config)
    for phrase in phrases:
        assert phrase in str(info.value), (phrase, str(info.value))


# ---- 1. a config file given by the user is the whole config ------------------------------------------------------


def test_a_config_file_given_by_the_user_is_the_whole_config(tmp_path):
    """With the preset in the workdir's config/ (where Snakemake looked for it), a --configfile was merged into it
    key by key: 64 adaptation jobs instead of 32, and pretraining with the preset's beta1 of 0.0."""
    work = tmp_path / "work"
    (work / "config").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(work), "--configfile", str(SMOKE)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    assert int(counts["adapt"]) == len(Plan(validate_config(smoke_config())).runs) == 32
    pretrain = re.findall(r"ganbench --threads \d+ pretrain --settings '(\{.*?\})'", result.stdout)
    # The smoke config leaves beta1, lr_d and ema_decay to the schema (0.5, 2e-4, 0); the preset sets 0.0, 4e-4, 0.999.
    trains = [json.loads(settings)["train"] for settings in pretrain]
    assert trains and all((train["beta1"], train["lr_d"], train["ema_decay"]) == (0.5, 0.0002, 0.0) for train in trains)


# ---- 2. non-finite BatchNorm statistics -----------------------------------------------------------------------------

NAN_BUFFERS = '''
from benchmark.methods import Method


class NanBuffers(Method):
    """Test stand-in for a BatchNorm whose running statistics turned NaN (the losses stay finite in train mode)."""

    name = "nan_buffers"
    paper = "test only"

    def trainable_parameters(self, generator, discriminator):
        generator.blocks[0][2].running_mean.fill_(float("nan"))  # stays NaN: each update mixes it with the batch's
        return super().trainable_parameters(generator, discriminator)
'''


def test_non_finite_batchnorm_statistics_are_a_divergence_not_black_images(tmp_path, task_files):
    """NaN pixels cast to uint8 are black images, whose validation KID even looked better than a healthy run's."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "nan_buffers.py").write_text(NAN_BUFFERS)
    run_dir = tmp_path / "during_training"
    train = {"steps": 6, "batch_size": 8, "eval_every": 3}
    result = adapt_cli(task_files, run_dir, method="nan_buffers", train=train, env={"GANBENCH_METHODS_PATH": str(plugins)})
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "diverged" and config["diverged_at_step"] == 3 and config["divergence_reason"] == "non-finite generated images"

    # A finished run whose checkpoint holds a NaN statistic is recorded as diverged by the evaluation, not scored.
    run_dir = tmp_path / "in_the_checkpoint"
    assert adapt_cli(task_files, run_dir, method="scratch", train={"steps": 4, "batch_size": 8}).returncode == 0
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["generator"]["blocks.1.1.running_var"][0] = float("nan")
    save_checkpoint(run_dir / "checkpoint.pt", {key: value for key, value in state.items() if key != "format_version"})
    settings = {"evaluation": {"num_generated": 60, "kid_subset_size": 10, "kid_subsets": 2}, "device": "cpu", "oracle_draws": False}
    result = run_cli(
        "evaluate", "--settings", json.dumps(settings), "--run-dir", str(run_dir), "--manifest", str(task_files["manifest"]),
        "--dataset", str(task_files["data"]), "--encoder", str(task_files["encoder"]), "--output", str(run_dir / "metrics.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = json.loads((run_dir / "metrics.json").read_text())["records"]
    assert {record["status"] for record in records} == {"diverged"} and all(record["value"] is None for record in records)
    assert "blocks.1.1.running_var" in records[0]["divergence_reason"]


# ---- 3. duplicate seeds or methods ----------------------------------------------------------------------------------


def test_duplicate_seeds_methods_or_shots_are_refused():
    """`seeds: [0, 0]` counted one run twice ("+/- 0, n = 2")."""
    refused(smoke_config(seeds=[0, 0]), "'seeds'", "non-unique")
    refused(smoke_config(methods=["finetune", "finetune"]), "'methods'", "non-unique")
    refused(smoke_config(shots=[5, 5]), "'shots'", "non-unique")


# ---- 4. leakage between two dataset names over the same images ------------------------------------------------------


def test_target_images_that_are_source_images_under_another_dataset_name_are_refused(digits):
    same_pixels = PreparedDataset(digits.images, digits.labels, {**digits.metadata, "name": "digits_again"})
    source = build_source_manifest("all", {"dataset": "digits"}, digits, 0)
    spec = {
        "kind": "few-shot",
        "source": "all",
        "target": {"dataset": "digits_again", "classes": [5, 6]},
        "validation_size": 20,
        "shot_pool_size": 10,
    }
    with pytest.raises(
        BenchmarkError,
        match=r"363 target images are also source training images \(the same pixels, whatever the dataset names; e\.g\. image 5 of 'digits_again' is image 5 of 'digits'\)",
    ):
        build_task_manifest("t", spec, source, digits, same_pixels, [5], 1, 0)


# ---- 5. alpha channels and 16-bit grey levels -----------------------------------------------------------------------


def test_transparent_and_16_bit_images_keep_their_content(tmp_path):
    """RGBA turned all black (alpha dropped) and 16-bit grey levels were clipped at 255."""
    folder = tmp_path / "images" / "shapes"
    folder.mkdir(parents=True)
    rgba = np.zeros((12, 12, 4), dtype=np.uint8)  # transparent everywhere ...
    rgba[4:8, 4:8] = (0, 0, 0, 255)  # ... but an opaque black square
    Image.fromarray(rgba, "RGBA").save(folder / "transparent.png")
    wide = np.full((12, 12), 32768, dtype=np.uint16)
    wide[:, :6] = 65535
    Image.fromarray(wide).save(folder / "sixteen_bit.png")
    dataset = prepare_dataset("shapes", "image_folder", {"root": str(tmp_path / "images")}, image_size=12, channels=1)
    sixteen_bit, transparent = dataset.images[0, 0], dataset.images[1, 0]  # files in name order
    assert transparent[0, 0] == 255 and transparent[5, 5] == 0, "background composited onto white, the square kept"
    assert sixteen_bit[0, 0] == 255 and sixteen_bit[0, 11] == 128, "65535 -> 255, 32768 -> 128, not clipped to 255"
    assert dataset.metadata["conversions"] == {"alpha_composited": 1, "rescaled_from_16_bit": 1, "alpha_background": 255}
    black = prepare_dataset("shapes", "image_folder", {"root": str(tmp_path / "images"), "alpha_background": 0}, image_size=12, channels=1)
    assert black.images[1, 0, 0, 0] == 0


# ---- 6. a diverged encoder or meta-training -------------------------------------------------------------------------


DIVERGING_META = '''
from benchmark.meta_learning import MetaMethod


class DivergingMeta(MetaMethod):
    """Test stand-in for a meta-loss that explodes at the 30th outer update."""

    name = "diverging_meta"
    paper = "test only"

    def meta_step(self, models, tasks, rng):
        self.steps = getattr(self, "steps", 0) + 1
        return {"query_loss_d": float("nan") if self.steps >= 30 else 1.0}
'''


def test_a_diverging_encoder_or_meta_training_is_one_clear_error_and_writes_nothing(tmp_path, task_files, digits):
    """The encoder logged `loss nan`, exited 0 and wrote itself; every evaluation then crashed with LinAlgError."""
    output = tmp_path / "encoder.safetensors"
    settings = json.dumps({"epochs": 1, "learning_rate": 1.0e9, "max_images_per_dataset": 500})
    result = run_cli(
        "train-encoder",
        "--settings",
        settings,
        "--manifests",
        str(task_files["manifest"]),
        "--dataset",
        f"digits={task_files['data']}",
        "--output",
        str(output),
    )
    assert_one_clear_error(result, "domain encoder's training diverged", "Lower encoder.learning_rate")
    assert not output.exists()

    data = save_prepared(digits, tmp_path, "digits")
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    write_manifest(tmp_path / "meta.json", build_meta_manifest(source, digits, "class", 10, 5, 5, 0))
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "diverging_meta.py").write_text(DIVERGING_META)
    hparams = {"meta_iterations": 60, "meta_batch_size": 1}
    meta = json.dumps({"method": "diverging_meta", "method_hparams": hparams, "architecture": TINY_ARCH, "seed": 0, "device": "cpu"})
    output_dir = tmp_path / "meta"
    files = ["--manifest", str(tmp_path / "meta.json"), "--dataset", str(data), "--output-dir", str(output_dir)]
    result = run_cli("meta-train", "--settings", meta, *files, env={"GANBENCH_METHODS_PATH": str(tmp_path / "plugins")})
    assert_one_clear_error(
        result,
        "Meta-training of 'diverging_meta'",
        "diverged at iteration 30 (non-finite query_loss_d)",
        "Lower its learning rates (adapt.method_hparams.diverging_meta)",
    )
    assert not output_dir.exists(), "nor the mid-run checkpoint of iteration 25"


def test_a_diverging_pretraining_is_one_clear_error_and_writes_nothing(tmp_path, digits, monkeypatch):
    """Every adaptation of the source would start from it: it stops with the fix, and leaves no folder."""
    import benchmark.stages.pretrain as stage
    from benchmark.settings import PretrainSettings
    from benchmark.training import TrainingDiverged

    def diverging(models, images, settings, seed, run_dir, hooks, identity, evaluate=None):
        atomic_write_text(layout.StageFolder(run_dir).train_log, '{"step": 7, "diverged": "non-finite loss_d"}\n')  # as train_gan does
        raise TrainingDiverged(7, "non-finite loss_d")

    monkeypatch.setattr(stage, "train_gan", diverging)
    data = save_prepared(digits, tmp_path, "digits")
    write_manifest(tmp_path / "source.json", build_source_manifest("low", {"dataset": "digits", "classes": [0, 1]}, digits, 0))
    settings = PretrainSettings.from_dict({"architecture": TINY_ARCH, "train": {"steps": 4, "batch_size": 8}, "seed": 0, "device": "cpu"})
    with pytest.raises(
        BenchmarkError, match=r"Pretraining on source 'low' \(seed 0\) diverged at step 7 \(non-finite loss_d\).*Lower pretrain\.train\.lr_g"
    ):
        stage.pretrain(settings, manifest=tmp_path / "source.json", dataset=data, output_dir=tmp_path / "pretrain")
    assert not (tmp_path / "pretrain").exists()


# ---- 7, 8. numbers: floats where integers are meant, NaN and infinity --------------------------------------------


def test_a_float_where_an_integer_is_meant_is_refused():
    """`steps: 10.0` crashed in range(), `shots: [5.0]` made k5.0 folders that no rule builds."""
    config = smoke_config()
    config["adapt"]["train"]["steps"] = 10.0
    refused(config, "'adapt.train.steps'", "10.0 is not an integer", "without a decimal point: 10")
    refused(smoke_config(shots=[5.0]), "'shots.0'", "5.0 is not an integer")


def test_non_finite_numbers_are_refused():
    """NaN passed every minimum and maximum check: NDB, class coverage and NN-ratio turned silently into 0.0."""
    for key in ("ndb_alpha", "class_min_share_ratio", "nn_ratio_threshold"):
        config = smoke_config()
        config["evaluation"][key] = float("nan")
        refused(config, f"'evaluation.{key}'", "nan is not a finite number")
    config = smoke_config()
    config["adapt"]["train"]["lr_g"] = float("inf")
    refused(config, "'adapt.train.lr_g'", "inf is not a finite number")


# ---- 9. edited manifests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "phrase"),
    [
        ("negative", "holds an index that is not a non-negative integer"),
        ("shot_into_reference", "draw 0 of K = 5 is not 5 distinct images of the shot pool"),
        ("indices_without_hash", "the reference block's indices no longer match its count and hash"),
        ("blocks_overlap", "reference set, validation split and shot pool overlap"),
    ],
)
def test_an_edited_manifest_is_refused(tmp_path, task_files, edit, phrase):
    manifest = json.loads(Path(task_files["manifest"]).read_text())
    target = manifest["target"]
    reference = target["reference"]
    if edit == "negative":
        reference["indices"][0] = -1
    elif edit == "shot_into_reference":
        target["shots"]["5"][0][0] = reference["indices"][0]
    elif edit == "indices_without_hash":
        reference["indices"] = reference["indices"][1:]
    elif edit == "blocks_overlap":
        reference["indices"].append(target["validation"]["indices"][0])
    if edit != "indices_without_hash":
        reference.update(count=len(reference["indices"]), sha256=sha256_json(reference["indices"]))
    path = tmp_path / "task.json"
    write_manifest(path, manifest)
    with pytest.raises(BenchmarkError, match=re.escape(phrase)):
        read_manifest(path, "task")


# ---- 10. file modes -------------------------------------------------------------------------------------------------


def test_outputs_get_the_mode_the_umask_asks_for(tmp_path):
    """Outputs were 0600 (the temporary file's mode survived the rename): unreadable to colleagues."""
    previous = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "shared.txt", "result")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "result")
    finally:
        os.umask(previous)
    assert (tmp_path / "shared.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


# ---- 11. one clear error instead of a traceback ---------------------------------------------------------------------

BROKEN_PLUGIN = "from benchmark.methods import Method\n\nclass Broken(Method:\n    name = 'broken'\n"


def _bomb_png(path: Path) -> Path:
    """A valid PNG whose header declares 100,000 x 100,000 pixels (the image data is one pixel's worth)."""
    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return path


def _finished_run(files: dict[str, Path], run_dir: Path) -> Path:
    assert adapt_cli(files, run_dir, method="scratch", train={"steps": 2, "batch_size": 8}).returncode == 0
    return run_dir


def _evaluate(files: dict[str, Path], run_dir: Path) -> subprocess.CompletedProcess:
    settings = {"evaluation": {"num_generated": 60, "kid_subset_size": 10, "kid_subsets": 2}, "device": "cpu", "oracle_draws": False}
    return run_cli(
        "evaluate", "--settings", json.dumps(settings), "--run-dir", str(run_dir), "--manifest", str(files["manifest"]),
        "--dataset", str(files["data"]), "--encoder", str(files["encoder"]), "--output", str(run_dir / "metrics.json"),
    )  # fmt: skip


def _source_without(tmp_path: Path, part: str, replacement=None) -> Path:
    path = write_source_checkpoint(tmp_path / "source.pt", TINY)
    state = torch.load(path, weights_only=True)
    state.pop("format_version")
    if replacement is None:
        del state[part]
    else:
        state[part] = replacement(state[part])
    save_checkpoint(path, state)
    return path


def _case(name: str, tmp_path: Path, files: dict[str, Path]) -> tuple[subprocess.CompletedProcess, tuple[str, ...]]:
    """Run one bad-input case through the real CLI; returns the result and the phrases its error must hold."""
    if name == "output_folder_is_a_file":
        (tmp_path / "taken").write_text("a file, not a folder")
        settings = {"source": "sklearn_digits", "options": {}, "image_size": 28, "channels": 1}
        result = run_cli("prepare-data", "--name", "d", "--settings", json.dumps(settings), "--output", str(tmp_path / "taken" / "d.npz"))
        return result, (str(tmp_path / "taken"), "Check that this path exists and can be read and written")
    if name == "decompression_bomb":
        folder = tmp_path / "images" / "a"
        folder.mkdir(parents=True)
        bomb = _bomb_png(folder / "bomb.png")
        settings = {"source": "image_folder", "options": {"root": str(tmp_path / "images")}, "image_size": 28, "channels": 1}
        result = run_cli("prepare-data", "--name", "d", "--settings", json.dumps(settings), "--output", str(tmp_path / "out" / "d.npz"))
        return result, (str(bomb), "decompression bomb", "Downscale or remove the file")
    if name == "checkpoint_without_discriminator":
        source = _source_without(tmp_path, "discriminator")
        return adapt_cli(files, tmp_path / "run", artefacts={"source_checkpoint": source}), (str(source), "holds no 'discriminator' weights")
    if name == "checkpoint_tensor_of_another_shape":
        source = _source_without(tmp_path, "generator", lambda state: {**state, "blocks.0.0.bias": torch.zeros(3)})
        return adapt_cli(files, tmp_path / "run", artefacts={"source_checkpoint": source}), (str(source), "does not fit the Generator")
    if name == "encoder_with_an_extra_tensor":
        encoder = tmp_path / "encoder.safetensors"
        with safe_open(str(files["encoder"]), framework="pt") as handle:
            metadata = handle.metadata()
        save_file({**load_file(str(files["encoder"])), "extra": torch.zeros(2)}, str(encoder), metadata=metadata)
        return adapt_cli({**files, "encoder": encoder}, tmp_path / "run", method="scratch"), (
            str(encoder),
            "does not match the architecture it declares",
        )
    if name == "encoder_with_a_missing_tensor":
        encoder = tmp_path / "encoder.safetensors"
        with safe_open(str(files["encoder"]), framework="pt") as handle:
            metadata = handle.metadata()
        tensors = load_file(str(files["encoder"]))
        tensors.pop("classifier.bias")
        save_file(tensors, str(encoder), metadata=metadata)
        return adapt_cli({**files, "encoder": encoder}, tmp_path / "run", method="scratch"), (str(encoder), "classifier.bias")
    if name == "manifest_index_out_of_range":
        manifest = json.loads(Path(files["manifest"]).read_text())
        reference = manifest["target"]["reference"]
        reference["indices"][-1] = 10**6
        reference.update(sha256=sha256_json(reference["indices"]))
        write_manifest(tmp_path / "task.json", manifest)
        return adapt_cli({**files, "manifest": tmp_path / "task.json"}, tmp_path / "run", method="scratch"), (
            "indexes image 1000000",
            "has 1797 images",
        )
    if name == "manifest_without_a_key":
        manifest = json.loads(Path(files["manifest"]).read_text())
        del manifest["target"]["validation"]
        write_manifest(tmp_path / "task.json", manifest)
        return adapt_cli({**files, "manifest": tmp_path / "task.json"}, tmp_path / "run", method="scratch"), ("structure is damaged", "'validation'")
    if name == "empty_shot_list":
        manifest = json.loads(Path(files["manifest"]).read_text())
        manifest["target"]["shots"]["5"][0] = []
        write_manifest(tmp_path / "task.json", manifest)
        return adapt_cli({**files, "manifest": tmp_path / "task.json"}, tmp_path / "run", method="scratch"), ("draw 0 of K = 5",)
    if name == "corrupt_run_config":
        run_dir = _finished_run(files, tmp_path / "run")
        (run_dir / "config.json").write_text('{"status": "completed", "architect')
        return _evaluate(files, run_dir), (str(run_dir / "config.json"), "is damaged", "rerun its adaptation")
    if name == "corrupt_train_log":
        run_dir = _finished_run(files, tmp_path / "run")
        (run_dir / "train_log.jsonl").write_text('{"step": 1, "eval": \n')
        return _evaluate(files, run_dir), (str(run_dir / "train_log.jsonl"), "is damaged")
    if name == "task_spec_without_a_key":
        settings = json.dumps(
            {"spec": {"kind": "few-shot", "source": "low", "target": {"dataset": "digits"}}, "shots": [5], "split_draws": 1, "split_seed": 0}
        )
        files_ = ["--source-manifest", str(tmp_path / "source.json"), "--source-dataset", str(files["data"]), "--dataset", str(files["data"])]
        result = run_cli("split-task", "--name", "t", "--settings", settings, *files_, "--output", str(tmp_path / "task.json"))
        return result, ("'task'", "'validation_size' is a required property", "Add it")
    if name == "settings_without_a_key":
        settings = json.dumps({key: value for key, value in adapt_settings(method="scratch").items() if key != "train"})
        result = run_cli(
            "adapt",
            "--settings",
            settings,
            "--manifest",
            str(files["manifest"]),
            "--dataset",
            str(files["data"]),
            "--encoder",
            str(files["encoder"]),
            "--output-dir",
            str(tmp_path / "run"),
        )
        return result, ("missing key(s) train",)
    if name == "seed_of_2_to_the_64":
        run = {"task": "digits_high", "shots": 5, "method": "scratch", "seed": 2**64, "split_draw": 0, "pretrain_seed": 0, "draw": 0}
        return adapt_cli(files, tmp_path / "run", method="scratch", run=run), (
            "AdaptationRun.seed = 18446744073709551616 should be an integer from 0 to 4294967295",
        )
    if name == "plugin_with_a_syntax_error":
        (tmp_path / "plugins").mkdir()
        (tmp_path / "plugins" / "broken.py").write_text(BROKEN_PLUGIN)
        result = run_cli("methods", env={"GANBENCH_METHODS_PATH": str(tmp_path / "plugins")})
        return result, (str(tmp_path / "plugins" / "broken.py"), "fails to import (SyntaxError")
    if name == "entry_point_of_a_missing_module":
        info = tmp_path / "site" / "ghost_method-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: ghost-method\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text("[ganbench.methods]\nghost = ghost_method_module:Ghost\n")
        result = run_cli("methods", env={"PYTHONPATH": str(tmp_path / "site")})
        return result, ("ghost_method_module:Ghost", "declared by ghost-method", "Reinstall or uninstall ghost-method")
    if name == "adapt_again_into_a_diverged_run":
        plugins = tmp_path / "plugins"
        plugins.mkdir()
        (plugins / "nan_buffers.py").write_text(NAN_BUFFERS)
        env = {"GANBENCH_METHODS_PATH": str(plugins)}
        train = {"steps": 4, "batch_size": 8, "eval_every": 2}
        assert adapt_cli(files, tmp_path / "run", method="nan_buffers", train=train, env=env).returncode == 0
        return adapt_cli(files, tmp_path / "run", method="nan_buffers", train=train, env=env), (
            "records a run that diverged at step 2",
            "Delete the run folder",
        )
    raise AssertionError(name)


@pytest.mark.parametrize(
    "case",
    [
        "output_folder_is_a_file", "decompression_bomb", "checkpoint_without_discriminator", "checkpoint_tensor_of_another_shape",
        "encoder_with_an_extra_tensor", "encoder_with_a_missing_tensor", "manifest_index_out_of_range", "manifest_without_a_key", "empty_shot_list",
        "corrupt_run_config", "corrupt_train_log", "task_spec_without_a_key", "settings_without_a_key", "seed_of_2_to_the_64", "plugin_with_a_syntax_error",
        "entry_point_of_a_missing_module", "adapt_again_into_a_diverged_run",
    ],
)  # fmt: skip
def test_one_clear_error_instead_of_a_traceback(tmp_path, task_files, case):
    result, phrases = _case(case, tmp_path, task_files)
    assert_one_clear_error(result, *phrases)


# ---- 12. found at DAG time (or before training), not late -----------------------------------------------------------


def test_settings_that_failed_late_are_refused_before_any_work(tmp_path, task_files, digits):
    refused(smoke_config(image_size=30), "'image_size'", "30 is not a multiple of 4")
    config = smoke_config()
    config["tasks"]["digits to mnist"] = config["tasks"].pop("digits_to_mnist")
    refused(config, "'tasks'", "'digits to mnist' does not match", "becomes a folder and a Snakemake wildcard")
    config = smoke_config()
    config["evaluation"] = {**config["evaluation"], "nearest_k": 300}
    refused(config, "'tasks.digits_to_mnist.reference_size' (300) is too small", "nearest_k = 300 needs at least 301")

    # Without a reference_size the reference set's size is known at the split: adaptation checks it before training.
    evaluation = {"num_generated": 60, "validation_num_generated": 20, "kid_subset_size": 10, "kid_subsets": 2, "class_neighbours": 5000}
    result = adapt_cli(task_files, tmp_path / "run", method="scratch", evaluation=evaluation)
    assert_one_clear_error(result, "evaluation.class_neighbours = 5000", "Use a larger reference set")
    assert not (tmp_path / "run").exists()

    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    spec = {
        "kind": "few-shot",
        "source": "low",
        "target": {"dataset": "digits", "classes": [5, 6]},
        "validation_size": 20,
        "shot_pool_size": 10,
        "reference_size": 10_000,
    }
    with pytest.raises(BenchmarkError, match=r"reference_size is 10000, but only \d+ target images remain"):
        build_task_manifest("t", spec, source, digits, digits, [5], 1, 0)


# ---- 13. hints, duplicate keys, unknown options, broken links -------------------------------------------------------


def test_hints_name_the_right_fix_and_silent_leniency_is_gone(tmp_path):
    config = smoke_config()
    config["adapt"]["train"]["steps"] = "1e3"
    refused(config, "write it as an integer: 1000")
    config = smoke_config()
    config["adapt"]["train"]["lr_g"] = "1e3"
    refused(config, "write 1.0e+3")  # PyYAML reads 1.0e3 as text too: the exponent needs its sign

    duplicated = tmp_path / "config.yaml"
    duplicated.write_text(SMOKE.read_text() + "seeds: [7]\n")
    with pytest.raises(BenchmarkError, match=r"the key 'seeds' is written twice, on lines \d+ and \d+"):
        read_config_file(duplicated)

    config = smoke_config()
    config["datasets"]["digits"]["options"] = {"partiton": "train"}
    refused(config, "'datasets.digits.options'", "has no option(s) partiton", "Fix the spelling")
    with pytest.raises(BenchmarkError, match="has no option"):
        get_data_source("mnist_idx")(root="/x", prefx="t10k")

    images = tmp_path / "images"
    (images / "cats").mkdir(parents=True)
    Image.new("L", (8, 8)).save(images / "cats" / "one.png")
    (images / "cats" / ".#one.png").symlink_to("user@host.1234")  # an editor's lock file: hidden, skipped
    assert prepare_dataset("pets", "image_folder", {"root": str(images)}, image_size=8, channels=1).metadata["num_images"] == 1
    for link, target in (("cats/gone.png", "nowhere.png"), ("cats/loop.png", "loop.png"), ("dogs", "no_such_folder")):
        (images / link).symlink_to(target)
        with pytest.raises(BenchmarkError, match=f"{Path(link).name} is a broken or looping symbolic link"):
            prepare_dataset("pets", "image_folder", {"root": str(images)}, image_size=8, channels=1)
        (images / link).unlink()


# ---- 14. partial output ---------------------------------------------------------------------------------------------

FAILING_METHOD = '''
from benchmark.errors import BenchmarkError
from benchmark.methods import Method


class FailsAtStepTwo(Method):
    """Test stand-in for a method that fails once training has written something (step 1's log and snapshot)."""

    name = "fails_at_step_two"
    paper = "test only"

    def generator_penalty(self, generator):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 2:
            raise BenchmarkError("this method fails on purpose")
        return None
'''


def test_no_partial_output_is_left_behind(tmp_path, task_files, digits, monkeypatch):
    """prepare-data left the .npz without its .json on a full disk; a failed adapt left an empty run folder."""
    real_replace = os.replace

    def replace_failing_for_metadata(source, target):
        if str(target).endswith(".json"):
            raise OSError(28, "No space left on device", str(target))
        real_replace(source, target)

    monkeypatch.setattr(benchmark.io.os, "replace", replace_failing_for_metadata)
    with pytest.raises(OSError):
        digits.save(tmp_path / "data" / "digits.npz")
    assert sorted(path.name for path in (tmp_path / "data").iterdir()) == [], "neither file, nor a temporary"
    monkeypatch.undo()

    events = []
    monkeypatch.setattr(benchmark.io.os, "fsync", lambda descriptor: events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}"))))
    monkeypatch.setattr(benchmark.io.os, "replace", lambda source, target: (events.append(("replace", str(target))), real_replace(source, target)))
    atomic_write_text(tmp_path / "durable.txt", "x")
    monkeypatch.undo()
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"], "the file before its rename, the folder after"
    assert events[0][1].startswith(str(tmp_path / ".durable.txt.")) and events[2][1] == str(tmp_path)

    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "fails_at_step_two.py").write_text(FAILING_METHOD)
    env, train = {"GANBENCH_METHODS_PATH": str(plugins)}, {"steps": 4, "batch_size": 8, "eval_every": 1}
    result = adapt_cli(task_files, tmp_path / "run", method="fails_at_step_two", train=train, env=env)
    assert_one_clear_error(result, "this method fails on purpose")
    assert not (tmp_path / "run").exists()
    # A folder made before the job (as Snakemake makes one) loses what the job wrote, and nothing else.
    (tmp_path / "made_before").mkdir()
    (tmp_path / "made_before" / "notes.txt").write_text("the user's")
    adapt_cli(task_files, tmp_path / "made_before", method="fails_at_step_two", train=train, env=env)
    assert [path.name for path in (tmp_path / "made_before").iterdir()] == ["notes.txt"]
    (tmp_path / "made_empty").mkdir()
    adapt_cli(task_files, tmp_path / "made_empty", method="fails_at_step_two", train=train, env=env)
    assert not (tmp_path / "made_empty").exists(), "an empty folder left by a failed job is removed too"


# ---- 15. identical runs, identical checkpoint files ------------------------------------------------------------------


def test_identical_runs_write_identical_checkpoint_files(tmp_path, task_files):
    """The global RNG state in checkpoint.pt differed between identical runs (torch seeds it at random)."""
    source = write_source_checkpoint(tmp_path / "source.pt", TINY)
    digests = []
    for name in ("first", "second"):
        result = adapt_cli(task_files, tmp_path / name, artefacts={"source_checkpoint": source})
        assert result.returncode == 0, result.stderr[-2000:]
        digests.append(hashlib.sha256((tmp_path / name / "checkpoint.pt").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
