"""Inputs tried in issue 27 ("Robustness of the new surfaces"), one test per case. Each failed on the code before its
fix (commit b35c4a2) for the reason its docstring gives: a silent wrong result or lost data there, one clear error
or the right result here."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from test_medmnist import write_npz
from test_sweep import constructed_results

from benchmark import devices
from benchmark.config import validate_config
from benchmark.data import prepare_dataset
from benchmark.errors import BenchmarkError
from benchmark.hparam_selection import select_draws
from benchmark.io import FOLDER_MANIFEST
from benchmark.paper.render import render_paper
from benchmark.plan import Plan
from benchmark.selection import FINAL
from benchmark.settings import PaperSettings
from benchmark.splits import build_source_manifest, build_task_manifest
from conftest import REPO, assert_one_clear_error, run_cli

PAPER_FIXTURE = REPO / "tests" / "fixtures" / "paper"  # a slice of real results the paper tests render
SMALL_RESULTS = REPO / "tests" / "fixtures" / "results_small.csv"
SETTINGS = json.dumps({"bootstrap_resamples": 200})


@pytest.fixture
def results_folder(tmp_path) -> Path:
    """A results folder as a run leaves it: the CSV beside a checkpoint that must survive whatever `paper` does."""
    folder = tmp_path / "results"
    (folder / "runs" / "r").mkdir(parents=True)
    shutil.copy(PAPER_FIXTURE / "results.csv", folder / "results.csv")
    (folder / "runs" / "r" / "checkpoint.pt").write_bytes(b"weights")
    return folder


@pytest.mark.parametrize("output", [".", "..", "paper"], ids=["is the input", "contains the input", "lies inside the input"])
def test_paper_refuses_an_output_folder_that_is_holds_or_lies_inside_its_input(results_folder, output):
    """Before: `ganbench paper --input-dir results --output-dir results` exited 0 after deleting the whole folder
    (render.py rmtree'd the output before renaming its staging folder into place): the checkpoint was gone."""
    target = results_folder / output
    result = run_cli("paper", "--settings", SETTINGS, "--input-dir", str(results_folder), "--output-dir", str(target))
    assert_one_clear_error(result, "--output-dir", "the input", "Name a separate --output-dir")
    assert (results_folder / "runs" / "r" / "checkpoint.pt").read_bytes() == b"weights"
    assert not (results_folder / "paper").exists()
    reference = run_cli(
        "paper", "--settings", SETTINGS, "--input-dir", str(PAPER_FIXTURE), "--output-dir", str(results_folder), "--reference", str(results_folder)
    )
    assert_one_clear_error(reference, "(--reference)")


def test_paper_replaces_only_the_files_it_wrote(tmp_path):
    """Before: an output folder was replaced whole, whatever it held (a user's notes, another command's files).
    Now a folder without the paper's manifest is refused if it holds anything; one the paper wrote keeps the files
    others put beside, loses the files the new rendering no longer writes, and renders the same as a fresh folder."""
    output = tmp_path / "paper"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(BenchmarkError, match=r"holds 1 files that no earlier run of this command wrote.*Name a new or empty folder"):
        render_paper(PAPER_FIXTURE, output, PaperSettings.from_json(SETTINGS))
    assert sorted(path.name for path in output.iterdir()) == ["notes.txt"]  # refused before writing anything there
    (output / "notes.txt").unlink()
    first = render_paper(PAPER_FIXTURE, output, PaperSettings.from_json(SETTINGS))
    listed = json.loads((output / FOLDER_MANIFEST).read_text())
    assert sorted(str(path.relative_to(output)) for path in first) == listed and (output / "paper.md").is_file()
    (output / "notes.txt").write_text("mine")
    (output / "figures" / "stale.png").write_bytes(b"old")  # as if an earlier rendering had written it
    (output / FOLDER_MANIFEST).write_text(json.dumps([*listed, "figures/stale.png"]))
    render_paper(PAPER_FIXTURE, output, PaperSettings.from_json(SETTINGS))
    assert (output / "notes.txt").read_text() == "mine" and not (output / "figures" / "stale.png").exists()
    fresh = tmp_path / "fresh"
    render_paper(PAPER_FIXTURE, fresh, PaperSettings.from_json(SETTINGS))
    assert (output / "paper.md").read_text() == (fresh / "paper.md").read_text()
    assert json.loads((output / FOLDER_MANIFEST).read_text()) == json.loads((fresh / FOLDER_MANIFEST).read_text()) == listed
    assert not list(tmp_path.glob(".paper.*")) and not list(tmp_path.glob(".fresh.*"))  # no staging folder left


def test_table_refuses_to_write_over_its_input(tmp_path):
    """Before: `ganbench table --input x.csv --output x.csv` replaced the results CSV with Markdown."""
    results = tmp_path / "results.csv"
    shutil.copy(SMALL_RESULTS, results)
    result = run_cli("table", "--input", str(results), "--output", str(results))
    assert_one_clear_error(result, "--output", "is the input", "(--input)")
    assert results.read_bytes() == SMALL_RESULTS.read_bytes()


def test_a_metrics_file_named_twice_is_refused(tmp_path):
    """Before: `ganbench collect m.json m.json` gave n = 2, +/- 0 from one run."""
    metrics = tmp_path / "run" / "metrics.json"
    metrics.parent.mkdir()
    record = {"task": "t", "task_kind": "few-shot", "shots": 5, "method": "finetune", "seed": 0, "split_draw": 0, "pretrain_seed": 0,
              "draw": 0, "checkpoint": "final", "checkpoint_step": 10, "metric": "kid", "value": 0.1,
              "environment": {"code_version": "x"}, "run_config": {"method_hparams": {}}}  # fmt: skip
    metrics.write_text(json.dumps({"records": [record]}))
    output = tmp_path / "results.csv"
    result = run_cli("collect", str(metrics), str(tmp_path / "run" / ".." / "run" / "metrics.json"), "--output", str(output))
    assert_one_clear_error(result, "is named more than once", "Name each file once")
    assert not output.exists()
    copy = tmp_path / "copy" / "metrics.json"  # the same run's records in two files: refused with both folders named
    copy.parent.mkdir()
    shutil.copy(metrics, copy)
    result = run_cli("collect", str(metrics), str(copy), "--output", str(output))
    assert_one_clear_error(result, "1 run(s) appear more than once", "method finetune", "seed 0", f"from {copy.parent} and {metrics.parent}")
    assert not output.exists()
    assert run_cli("collect", str(metrics), "--output", str(output)).returncode == 0 and len(pd.read_csv(output)) == 1


def test_duplicated_rows_in_a_results_csv_are_refused_by_table_and_paper(tmp_path):
    """Before: a results.csv holding one of finetune's seeds twice gave finetune n = 3 from 2 seeds in `table` and
    moved the bold best to it in `paper`. Now both name the run and refuse."""
    frame = pd.read_csv(PAPER_FIXTURE / "results.csv")
    run = frame[frame["method"].eq("finetune")].iloc[0]
    one_run = frame[frame[["task", "shots", "method", "seed"]].eq(run[["task", "shots", "method", "seed"]]).all(axis=1)]
    folder = tmp_path / "doubled"
    folder.mkdir()
    pd.concat([frame, one_run], ignore_index=True).to_csv(folder / "results.csv", index=False)
    table = run_cli("table", "--input", str(folder / "results.csv"), "--output", str(tmp_path / "results.md"))
    assert_one_clear_error(table, "run(s) appear more than once", f"task {run['task']}", "method finetune", f"seed {run['seed']}")
    paper = run_cli("paper", "--settings", SETTINGS, "--input-dir", str(folder), "--output-dir", str(tmp_path / "paper"))
    assert_one_clear_error(paper, "run(s) appear more than once", "method finetune")
    assert not (tmp_path / "results.md").exists() and not (tmp_path / "paper").exists()


@pytest.mark.parametrize("section", ["hold", "method_hparams"])
def test_a_misspelt_method_under_sweep_hold_or_method_hparams_is_refused_at_plan_time(section):
    """Before: `sweep.hold: {l2s: [lambda_g, mu_d]}` was ignored, so l2sp's "held" values were swept; a misspelt
    `adapt.method_hparams` key was ignored too, and the method ran at its defaults."""
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    config["sweep"] = {"n_hparams": 2, "hold": {"l2s": ["lambda_g", "mu_d"]} if section == "hold" else {}}
    if section == "method_hparams":
        config["adapt"]["method_hparams"] = {"l2s": {"lambda_g": 0.5}}
    key = "sweep.hold.l2s" if section == "hold" else "adapt.method_hparams.l2s"
    with pytest.raises(BenchmarkError, match=rf"Config key '{re.escape(key)}' names no method: Unknown method 'l2s'. Available: .*l2sp"):
        Plan(validate_config(config))


def test_the_gpu_slot_lock_never_truncates_or_follows_a_planted_file(tmp_path, monkeypatch):
    """Before: the slot file was opened with open(..., "wb") in a predictable folder under the shared /tmp, owner
    unchecked: another user's `gpu0.lock` symlink made a job with GANBENCH_GPUS=2 truncate its target to 0 bytes.
    Now a symlinked slot file is refused (O_NOFOLLOW), nothing is truncated, and a folder others can write is
    refused before any file in it is opened."""
    victim = tmp_path / "results.csv"
    victim.write_text("precious")
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    (locks / "gpu0.lock").symlink_to(victim)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("GANBENCH_GPUS", "2")
    monkeypatch.setattr(devices, "_held", [])
    with pytest.raises(BenchmarkError, match="Cannot open the GPU slot file .*gpu0.lock .*a symlink is refused"):
        devices.claim_gpu_slot("auto", lock_dir=locks)
    assert victim.read_text() == "precious"
    (locks / "gpu0.lock").unlink()
    (locks / "gpu0.lock").write_text("someone's bytes")  # an existing slot file is locked as it is, not emptied
    assert devices.claim_gpu_slot("auto", lock_dir=locks) == 0 and (locks / "gpu0.lock").read_text() == "someone's bytes"
    os.close(devices._held.pop())
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    locks.chmod(0o777)
    with pytest.raises(BenchmarkError, match=r"can be written by other users \(mode 777\).*GANBENCH_GPU_LOCKS"):
        devices.claim_gpu_slot("auto", lock_dir=locks)
    linked = tmp_path / "linked"
    linked.symlink_to(locks)
    with pytest.raises(BenchmarkError, match="is a symlink"):
        devices.claim_gpu_slot("auto", lock_dir=linked)
    fresh = tmp_path / "fresh" / "slots"
    assert devices.claim_gpu_slot("auto", lock_dir=fresh) == 0 and stat.S_IMODE(fresh.stat().st_mode) == 0o700
    os.close(devices._held.pop())


def test_the_encoder_is_the_same_whatever_threads_the_scheduler_grants(tmp_path, task_files):
    """Before: `train_encoder` trained on the threads Snakemake granted (`--cores 1` lowers the rule's 2 to 1), the
    encoder's bytes differed, and so did every metric, with nothing recorded to say why. Now it trains on
    `encoder.threads` whatever `--threads` says. Shown to matter: with encoder.threads following the command line
    (1 vs 2), the two files differ."""

    def train(cli_threads: int, encoder_threads: int) -> bytes:
        output = tmp_path / f"encoder_{cli_threads}_{encoder_threads}.safetensors"
        settings = json.dumps({"epochs": 1, "max_images_per_dataset": 400, "threads": encoder_threads})
        result = run_cli(
            "--threads", str(cli_threads), "train-encoder", "--settings", settings, "--manifests", str(task_files["manifest"]),
            "--dataset", f"digits={task_files['data']}", "--output", str(output),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return output.read_bytes()

    two_threads = train(2, 2)
    assert train(1, 2) == two_threads
    assert train(1, 1) != two_threads  # the thread count does change the weights: fixing it is what keeps them equal


def test_a_target_whose_splits_hold_out_every_image_is_refused_at_the_split(digits):
    """Before: a target whose splits held out all of its dataset (a 780-image BreastMNIST target with
    `reference_size: null`) passed the split and stopped at `train_encoder`, after pretraining and meta-training had
    run. Now the split says so, with the largest reference_size that leaves the encoder an image."""
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    inverted = replace(digits, images=255 - digits.images, metadata={**digits.metadata, "name": "inverted"})  # another domain
    spec = {"kind": "cross-domain", "source": "low", "target": {"dataset": "inverted"}, "validation_size": 60, "shot_pool_size": 20}
    with pytest.raises(BenchmarkError, match=rf"hold out every one of the {len(digits.labels)} images of 'inverted'.*Set reference_size to at most"):
        build_task_manifest("inverted_digits", {**spec, "reference_size": None}, source, digits, inverted, [5], 1, 0)
    kept = build_task_manifest("inverted_digits", {**spec, "reference_size": 500}, source, digits, inverted, [5], 1, 0)
    assert len(kept["target"]["reference"]["indices"]) == 500


@pytest.mark.parametrize(
    ("labels", "phrase"),
    [
        (np.array([[0], [1], [-1]]), r"val_labels hold -1; class ids are 0, 1, \.\.\."),
        (np.array([[0.0], [0.7], [1.0]]), r"val_labels are float64; MedMNIST labels are integer class ids"),
        (np.zeros((3, 1, 14), dtype=np.uint8), r"val_labels has shape \(3, 1, 14\); MedMNIST labels are N x 1 \(or N\) class ids"),
    ],
    ids=["negative", "fractional", "three-dims"],
)
def test_medmnist_labels_that_are_not_class_ids_are_refused(tmp_path, labels, phrase):
    """Before: label -1 was accepted and trained the domain encoder as another dataset's class (`digits/9`), 0.7 was
    truncated to 0, and N x 1 x 14 labels gave a message naming neither the file nor the fix."""
    path = write_npz(tmp_path, "odd")
    arrays = dict(np.load(path))
    arrays["val_labels"] = labels
    np.savez(path, **arrays)
    with pytest.raises(BenchmarkError, match=rf"odd\.npz: {phrase}"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "odd"}, 28, 1)


def test_a_medmnist_file_without_images_is_one_clear_error(tmp_path):
    """Before: empty arrays ended in a traceback (max of an empty array)."""
    path = write_npz(tmp_path, "empty")
    np.savez(path, **{key: value[:0] for key, value in np.load(path).items()})
    with pytest.raises(BenchmarkError, match=r"empty\.npz holds no images"):
        prepare_dataset("x", "medmnist", {"root": str(tmp_path), "flag": "empty"}, 28, 1)


def test_results_with_a_missing_run_are_refused_where_they_are_read(tmp_path):
    """Before: a sweep draw whose seed was missing from results.csv was still selected (the selection module's
    docstring said it never is), the paper showed it at n = 1 and a best-method line changed. Now the table, the
    paper and the selection name the missing run and refuse."""
    frame = pd.read_csv(PAPER_FIXTURE / "results.csv")
    task = sorted(set(frame["task"]))[0]
    folder = tmp_path / "gap"
    folder.mkdir()
    frame[~(frame["task"].eq(task) & frame["method"].eq("l2sp") & frame["seed"].eq(2))].to_csv(folder / "results.csv", index=False)
    table = run_cli("table", "--input", str(folder / "results.csv"), "--output", str(tmp_path / "results.md"))
    assert_one_clear_error(table, f"{task}, K = 10: l2sp (draw 0) has no results for seed(s) 2", "Evaluate the missing run(s) and collect again")
    paper = run_cli("paper", "--settings", SETTINGS, "--input-dir", str(folder), "--output-dir", str(tmp_path / "paper"))
    assert_one_clear_error(paper, f"{task}, K = 10: l2sp has no results for seed(s) 2")  # a CSV from before sweeps: no draw
    sweep = constructed_results()
    sweep = sweep[~(sweep["task"].eq("A") & sweep["draw"].eq(1) & sweep["seed"].eq(1))]  # draw 1 of A ran seed 0 only
    with pytest.raises(BenchmarkError, match=r"A, K = 5: m \(draw 1\) has no results for seed\(s\) 1"):
        select_draws(sweep, FINAL, "kid")
