"""Reliability: a SIGKILLed training job resumes to bit-identical results; the same config and seed give
identical result records; a diverging run is recorded as diverged while the rest of the benchmark goes on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from benchmark import layout
from benchmark.checkpoint import model_structure
from benchmark.io import atomic_save, atomic_write_json
from benchmark.methods import get_method, methods
from benchmark.models import Architecture
from benchmark.splits import build_meta_manifest, build_source_manifest, write_manifest
from conftest import REPO, run_cli, save_prepared, write_source_checkpoint

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TRAIN = {"steps": 400, "batch_size": 16, "ema_decay": 0.9, "eval_every": 100, "checkpoint_every": 10, "log_every": 50}
# The rest of the evaluation section takes the schema's defaults.
EVALUATION = {"num_generated": 300, "validation_num_generated": 50, "kid_subset_size": 50, "kid_subsets": 10, "seed": 1}


def _adapt_command(
    files: dict[str, Path], run_dir: Path, train: dict = TRAIN, method: str = "scratch", hparams: dict | None = None, source: Path | None = None
) -> list[str]:
    """`source`: the file given for every artefact the method requires (a source checkpoint serves as a meta one)."""
    run = {"task": "digits_high", "shots": 5, "method": method, "seed": 3, "split_draw": 0, "pretrain_seed": 0, "draw": 0}
    artefacts = [arg for name in get_method(method).requires for arg in ("--artefact", f"{name}={source}")]
    settings = {
        "run": run,
        "method_hparams": hparams or {},
        "architecture": {"z_dim": 16, "width": 8},
        "train": train,
        "evaluation": EVALUATION,
        "device": "cpu",
    }
    return [
        sys.executable, "-m", "benchmark.cli", "--threads", "1", "adapt", "--settings", json.dumps(settings),
        "--manifest", str(files["manifest"]), "--dataset", str(files["data"]), "--encoder", str(files["encoder"]),
        *artefacts, "--output-dir", str(run_dir),
    ]  # fmt: skip


def _evaluate(files: dict[str, Path], run_dir: Path) -> list[dict]:
    result = run_cli(
        "--threads", "1", "evaluate", "--settings", json.dumps({"evaluation": EVALUATION, "device": "cpu", "oracle_draws": False}), "--run-dir", str(run_dir),
        "--manifest", str(files["manifest"]), "--dataset", str(files["data"]), "--encoder", str(files["encoder"]),
        "--output", str(run_dir / "metrics.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text())["records"]


def _scores(records: list[dict]) -> list[tuple]:
    return [(r["checkpoint"], r["checkpoint_step"], r["metric"], r["value"]) for r in records]


def _run_and_kill(command: list[str], resume_path: Path, min_step: int) -> int:
    """Start a training job, SIGKILL it once its mid-run checkpoint has reached `min_step`; returns that step."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    deadline = time.monotonic() + 120
    step = 0
    while step < min_step and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)
        try:  # resume.pt is replaced atomically, so a file that exists is complete
            step = torch.load(resume_path, weights_only=True)["step"]
        except FileNotFoundError:
            continue
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, "the job finished before it could be killed: give it more steps"
    assert step >= min_step
    return step


# Hyperparameters that make a method's schedule cross the kill: MineGAN switches from stage 1 to stage 2 after
# the resume (the kill comes at step 90 or later, checkpoints every 10 steps).
RESUME_HPARAMS = {"minegan": {"miner_steps": 120}}
RESUME_TRAIN = {**TRAIN, "steps": 240, "eval_every": 60}


@pytest.mark.parametrize("method", sorted(methods()))
def test_sigkilled_training_resumes_from_its_checkpoint_to_identical_results(method, tmp_path, task_files):
    """Every registered method (its models, optimisers, own state and schedule), killed mid-run and resumed, ends
    with the weights, validation curve and scores of an uninterrupted run."""
    source = write_source_checkpoint(tmp_path / "source.pt", Architecture.from_config({"z_dim": 16, "width": 8}, 28, 1))
    hparams = RESUME_HPARAMS.get(method, {})
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(
        _adapt_command(task_files, straight, RESUME_TRAIN, method=method, hparams=hparams, source=source), capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr[-2000:]

    step = _run_and_kill(
        _adapt_command(task_files, killed, RESUME_TRAIN, method=method, hparams=hparams, source=source), killed / "resume.pt", min_step=90
    )
    assert step < RESUME_TRAIN["steps"] and not (killed / "checkpoint.pt").exists()
    # Snakemake deletes an incomplete job's declared outputs, the training log among them, before it reruns the job
    # (resume.pt is not declared, so it stays): the resumed run's log must still hold the evaluation of step 60.
    (killed / "train_log.jsonl").unlink()

    resumed = subprocess.run(
        _adapt_command(task_files, killed, RESUME_TRAIN, method=method, hparams=hparams, source=source), capture_output=True, text=True, cwd=REPO
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming" in resumed.stderr and not (killed / "resume.pt").exists()

    final_a, final_b = (torch.load(run / "checkpoint.pt", weights_only=True) for run in (straight, killed))
    for part in ("generator", "generator_ema", "discriminator"):
        for name, tensor in (final_a[part] or {}).items():
            assert torch.equal(tensor, final_b[part][name]), (part, name)
    evaluations = [[line for line in (run / "train_log.jsonl").read_text().splitlines() if '"eval"' in line] for run in (straight, killed)]
    assert evaluations[0] == evaluations[1] and len(evaluations[0]) >= 4  # a meta-learner adds its inner steps
    # Scoring depends on the weights alone; it is compared for the plain backbone once and for every method that
    # builds models of its own structure (evaluation rebuilds them through the method).
    built = get_method(method)(**hparams).build_models(Architecture.from_config({"z_dim": 16, "width": 8}, 28, 1))
    if method == "scratch" or model_structure(built.generator, built.discriminator) is not None:
        assert _scores(_evaluate(task_files, straight)) == _scores(_evaluate(task_files, killed))


def test_sigkilled_meta_training_resumes_to_identical_weights(tmp_path, digits):
    data = save_prepared(digits, tmp_path, "digits")
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    manifest = tmp_path / "meta.json"
    write_manifest(manifest, build_meta_manifest(source, digits, "class", 40, 5, 5, 0))
    hparams = {"meta_iterations": 300, "meta_batch_size": 1, "inner_steps": 1, "inner_batch_size": 8, "first_order": True}
    settings = {"method": "maml_gan", "method_hparams": hparams, "architecture": {"z_dim": 16, "width": 8}, "seed": 0, "device": "cpu"}

    def command(output: Path) -> list[str]:
        return [
            sys.executable, "-m", "benchmark.cli", "--threads", "1", "meta-train", "--settings", json.dumps(settings),
            "--manifest", str(manifest), "--dataset", str(data), "--output-dir", str(output),
        ]  # fmt: skip

    assert subprocess.run(command(tmp_path / "straight"), capture_output=True, cwd=REPO).returncode == 0
    _run_and_kill(command(tmp_path / "killed"), tmp_path / "killed" / "resume.pt", min_step=100)
    resumed = subprocess.run(command(tmp_path / "killed"), capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0 and "resuming meta-training" in resumed.stderr, resumed.stderr[-2000:]
    final_a, final_b = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("straight", "killed"))
    for part in ("generator", "discriminator"):
        for name, tensor in final_a[part].items():
            assert torch.equal(tensor, final_b[part][name]), (part, name)
    assert (tmp_path / "straight" / "meta_log.jsonl").read_text() == (tmp_path / "killed" / "meta_log.jsonl").read_text()


def test_resume_with_changed_hyperparameters_is_refused_and_names_them(tmp_path, task_files):
    run_dir = tmp_path / "run"
    interrupted = {**TRAIN, "steps": 40}
    assert subprocess.run(_adapt_command(task_files, run_dir, interrupted), capture_output=True, cwd=REPO).returncode == 0
    (run_dir / "checkpoint.pt").rename(run_dir / "resume.pt")  # as if killed just before the end
    changed = subprocess.run(_adapt_command(task_files, run_dir, {**interrupted, "batch_size": 32}), capture_output=True, text=True, cwd=REPO)
    assert changed.returncode == 2
    assert "batch_size" in changed.stderr and "other settings" in changed.stderr


DIVERGING_METHOD = '''
import torch

from benchmark.methods import Method


class Diverging(Method):
    """Test stand-in for an exploding loss: from its third generator step on, its penalty is NaN."""

    name = "diverging"
    paper = "test only"

    def generator_penalty(self, generator):
        self.steps = getattr(self, "steps", 0) + 1
        return torch.tensor(float("nan")) if self.steps >= 3 else None
'''


@pytest.fixture(scope="module")
def two_workflow_runs(tmp_path_factory):
    """The reliability config run twice by real Snakemake, in two fresh folders."""
    plugins = tmp_path_factory.mktemp("plugins")
    (plugins / "diverging.py").write_text(DIVERGING_METHOD)
    env = {**os.environ, "GANBENCH_METHODS_PATH": str(plugins)}
    folders = []
    for name in ("first", "second"):
        folder = tmp_path_factory.mktemp(name)
        result = subprocess.run(
            [*SNAKEMAKE, "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(folder), "--configfile", str(REPO / "tests" / "reliability_config.yaml")],
            capture_output=True, text=True, cwd=REPO, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        folders.append(folder)
    return folders


def _records(folder: Path) -> dict[str, list[dict]]:
    files = sorted(folder.glob((layout.RUN / layout.StageFolder.METRICS).glob_pattern()))
    return {str(path.relative_to(folder)): json.loads(path.read_text())["records"] for path in files}


def test_same_config_and_seed_give_identical_result_records(two_workflow_runs):
    first, second = (_records(folder) for folder in two_workflow_runs)
    assert sorted(first) == sorted(second) and len(first) == 3
    assert first == second  # every field: values, sample sizes, hashes, run config, environment
    assert (two_workflow_runs[0] / layout.RESULTS_CSV).read_bytes() == (two_workflow_runs[1] / layout.RESULTS_CSV).read_bytes()


def test_diverged_run_is_recorded_and_shown_while_the_benchmark_goes_on(two_workflow_runs):
    folder = two_workflow_runs[0]
    run_dir = folder / layout.RUN.fill(task="digits_5to9", shots=5, method="diverging", draw=0, seed=0)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["status"] == "diverged" and config["diverged_at_step"] == 3 and "non-finite loss_g" in config["divergence_reason"]
    assert json.loads((run_dir / "train_log.jsonl").read_text().splitlines()[-1]) == {"step": 3, "diverged": "non-finite loss_g"}

    frame = pd.read_csv(folder / layout.RESULTS_CSV)
    diverged = frame[frame["method"] == "diverging"]
    assert set(diverged["status"]) == {"diverged"} and diverged["value"].isna().all()
    others = frame[frame["method"] != "diverging"]
    assert set(others["status"]) == {"completed"} and others["value"].notna().all() and set(others["method"]) == {"scratch", "finetune"}

    table = (folder / layout.RESULTS_TABLE).read_text()
    row = next(line for line in table.splitlines() if line.startswith("| 5 | diverging |"))
    assert row.count("| diverged ") == 6 and row.endswith("| 0 + 1 diverged |")
    assert "Diverged runs (no scores" in table and "K = 5 diverging seed 0 at step 3 (non-finite loss_g)" in table
    assert "Not ranked, because of diverged seeds: diverging." in table and "lowest mean KID" in table


class _Crash(BaseException):
    """Stands in for a process dying in the middle of a write."""


def _crash_mid_write(tmp: str) -> None:
    Path(tmp).write_bytes(b'{"records": [')  # half a file
    raise _Crash


def test_a_write_that_dies_midway_leaves_the_old_file_or_none(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(_Crash):
        atomic_save(target, _crash_mid_write)
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary file
    atomic_write_json(target, {"records": []})
    with pytest.raises(_Crash):
        atomic_save(target, _crash_mid_write)
    assert json.loads(target.read_text()) == {"records": []} and list(tmp_path.iterdir()) == [target]


def test_no_code_path_unpickles_arbitrary_objects():
    """Every torch.load in the code passes weights_only=True; nothing calls pickle's loaders or allows pickles in
    numpy files (checkpoints of other kinds are safetensors)."""
    sources = [path for folder in ("benchmark", "datasets", "methods", "scripts") for path in (REPO / folder).rglob("*.py")]
    loads = 0
    for path in sources:
        text = path.read_text()
        for call in re.findall(r"torch\.load\(([^)]*)\)", text):
            loads += 1
            assert "weights_only=True" in call, (path, call)
        assert not re.search(r"pickle\.loads?\(|allow_pickle=True|weights_only=False", text), path
    assert loads >= 1
