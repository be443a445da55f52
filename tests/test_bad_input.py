"""Bad input, one test per case, through the real entry points (a `ganbench` subcommand or Snakemake): one clear
error that names the cause and the fix, a non-zero exit, and no partial output."""

from __future__ import annotations

import json
import pickletools
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from benchmark import layout
from benchmark.models import Architecture
from conftest import REPO, adapt_cli, assert_one_clear_error, run_cli, write_source_checkpoint

ARCH = {"z_dim": 16, "width": 8}


def _image_folder(root: Path, classes: int = 2, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for label in range(classes):
        folder = root / f"class{label}"
        folder.mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(folder / f"{index}.png")
    return root


def _prepare(root: Path, output: Path) -> subprocess.CompletedProcess:
    settings = {"source": "image_folder", "options": {"root": str(root)}, "image_size": 28, "channels": 1}
    return run_cli("prepare-data", "--name", "mine", "--settings", json.dumps(settings), "--output", str(output))


def test_corrupt_image_file_is_named(tmp_path):
    root = _image_folder(tmp_path / "images")
    broken = root / "class1" / "1.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a PNG cut short
    result = _prepare(root, tmp_path / "out" / "mine.npz")
    assert_one_clear_error(result, str(broken), "not a readable image", "Replace or remove the file")
    assert not (tmp_path / "out").exists()


def test_non_image_file_in_an_image_folder_is_named(tmp_path):
    root = _image_folder(tmp_path / "images")
    (root / "class0" / "notes.txt").write_text("not an image")
    result = _prepare(root, tmp_path / "out" / "mine.npz")
    assert_one_clear_error(result, "notes.txt", "is not an image file", "Remove it from the dataset folder")
    assert not (tmp_path / "out").exists()


def test_empty_class_folder_is_named(tmp_path):
    root = _image_folder(tmp_path / "images")
    (root / "class2").mkdir()
    result = _prepare(root, tmp_path / "out" / "mine.npz")
    assert_one_clear_error(result, str(root / "class2"), "is empty", "Add images to it or remove it")
    assert not (tmp_path / "out").exists()


def test_missing_data_directory_is_named(tmp_path):
    result = _prepare(tmp_path / "nowhere", tmp_path / "out" / "mine.npz")
    assert_one_clear_error(result, str(tmp_path / "nowhere"), "does not exist", "Fix the dataset's `root` option")
    assert not (tmp_path / "out").exists()


def _dry_run(tmp_path: Path, change) -> subprocess.CompletedProcess:
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    change(config)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--cores", "1", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "work"), "--configfile", str(path)],
        capture_output=True, text=True, cwd=REPO,
    )  # fmt: skip


def _assert_config_refused(result: subprocess.CompletedProcess, tmp_path: Path, *phrases: str) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0
    for phrase in phrases:
        assert phrase in output, (phrase, output[-2000:])
    assert not (tmp_path / "work" / layout.RESULTS).exists()


def test_k_larger_than_the_images_available(tmp_path):
    result = _dry_run(tmp_path, lambda config: config.update(shots=[50]))
    _assert_config_refused(result, tmp_path, "shot_pool_size", "smaller than the largest K", "Raise it or lower K")


def test_unknown_method(tmp_path):
    result = _dry_run(tmp_path, lambda config: config.update(methods=["finetune", "fine_tune"]))
    _assert_config_refused(result, tmp_path, "Unknown method 'fine_tune'", "Available:", "finetune")


def test_unknown_dataset_source(tmp_path):
    result = _dry_run(tmp_path, lambda config: config["datasets"]["digits"].update(source="sklearn_digitz"))
    _assert_config_refused(result, tmp_path, "Unknown dataset source 'sklearn_digitz'", "Available:", "sklearn_digits")


def test_task_on_an_undefined_dataset(tmp_path):
    result = _dry_run(tmp_path, lambda config: config["tasks"]["digits_5to9"]["target"].update(dataset="digitz"))
    _assert_config_refused(result, tmp_path, "digitz")


def test_number_written_as_text(tmp_path):
    result = _dry_run(tmp_path, lambda config: config["adapt"]["train"].update(lr_g="1e-4"))
    _assert_config_refused(result, tmp_path, "adapt.train.lr_g", "1.0e-4")


def _adapt_finetune(files: dict[str, Path], source_checkpoint: Path, run_dir: Path) -> subprocess.CompletedProcess:
    return adapt_cli(files, run_dir, method="finetune", artefacts={"source_checkpoint": source_checkpoint})


def test_checkpoint_of_a_different_architecture_names_the_difference(tmp_path, task_files):
    wider = write_source_checkpoint(tmp_path / "source.pt", Architecture.from_config({"z_dim": 16, "width": 16}, image_size=28, channels=1))
    result = _adapt_finetune(task_files, wider, tmp_path / "run")
    assert_one_clear_error(result, str(wider), "different architecture", "width: checkpoint 16 vs config 8", "Use a matching config")
    assert not (tmp_path / "run").exists()


def test_truncated_checkpoint_file(tmp_path, task_files):
    path = write_source_checkpoint(tmp_path / "source.pt", Architecture.from_config(ARCH, image_size=28, channels=1))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    result = _adapt_finetune(task_files, path, tmp_path / "run")
    assert_one_clear_error(result, str(path), "truncated or corrupt", "Delete it and rerun its stage")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("content", ["", '{"kind": "task", "name":', "\x00\x01binary"])
def test_empty_or_unreadable_split_manifest(tmp_path, task_files, content):
    manifest = tmp_path / "task.json"
    manifest.write_text(content)
    files = {**task_files, "manifest": manifest}
    result = _adapt_finetune(files, tmp_path / "unused.pt", tmp_path / "run")
    assert_one_clear_error(result, str(manifest), "empty or unreadable")
    assert not (tmp_path / "run").exists()


class _Payload:
    """Unpickling this runs `Path(marker).touch()`: what a malicious checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_carrying_a_pickle_payload_is_refused_without_running_it(tmp_path, task_files):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"format_version": 1, "architecture": _Payload(marker)}, evil)
    # The payload is really in the file: its pickle stream imports pathlib and calls (REDUCE) Path.touch on the
    # marker. Read without unpickling anything (pickletools only lists the opcodes).
    with zipfile.ZipFile(evil) as archive:
        stream = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    operations = [(op.name, arg) for op, arg, _ in pickletools.genops(stream)]
    imported = {arg for name, arg in operations if name == "GLOBAL"}
    strings = {arg for name, arg in operations if name.endswith("UNICODE")}
    assert "pathlib Path" in imported and {"touch", marker.name} <= strings and ("REDUCE", None) in operations

    result = _adapt_finetune(task_files, evil, tmp_path / "run")
    assert_one_clear_error(result, str(evil), "refused without being executed")
    assert not marker.exists() and not (tmp_path / "run").exists()
