"""Seed-batched training (`benchmark.batched`, `ganbench adapt-seeds`): the runs of one method on one task that
differ only in seed train together as one vectorised model and give each run the records its separate run gives,
up to floating-point rounding; methods that cannot be batched train their seeds one after another, exactly as
separate runs.

Stated tolerance (20 steps of the tiny backbone, one thread): every validation KID and FID of the adaptation curve
within 1e-3 relative (measured: at most 6e-6), every logged loss within 1e-2 relative (measured: 4e-5 absolute, except
EWC's G loss, 5e-3 relative: its penalty of weight 2e3 sums rounding differences of 1e-6 in the weights over every
parameter), final weights within 10% of the distance between two seeds' separate runs (measured: at most 2.6%; by the
largest element, up to 2e-3 apart: Adam divides by the root of the squared gradients, so a parameter whose
gradient is near zero moves by a full step either way on a rounding difference); a batch that swaps its runs' weights (a wrong
`write_back` index) fails the comparison (last test of the first block)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from benchmark import batched
from benchmark.batched import batching_problem
from benchmark.methods import get_method
from benchmark.settings import AdaptSettings
from benchmark.stages.adapt import adapt, adapt_seeds
from conftest import TINY_DIGIT_ARCH, adapt_settings, write_source_checkpoint

TRAIN = {"steps": 20, "batch_size": 8, "eval_steps": [0, 2], "eval_every": 10, "checkpoint_every": 5, "log_every": 2, "ema_decay": 0.9}
SEEDS = (0, 1, 2)
RELATIVE = 1e-3
RELATIVE_LOSS = 1e-2
WEIGHTS = 0.1


def seed_runs(method: str, train: dict | None = None) -> list[AdaptSettings]:
    runs = []
    for seed in SEEDS:
        settings = adapt_settings(method, train=train or TRAIN)
        settings["run"]["seed"] = seed
        runs.append(AdaptSettings.from_dict(settings))
    return runs


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory) -> dict[str, Path]:
    source = write_source_checkpoint(tmp_path_factory.mktemp("source") / "source.pt", TINY_DIGIT_ARCH)
    return {"source_checkpoint": source, "meta_checkpoint": source}


def train_separately(runs, files, artefacts, folder: Path) -> None:
    for settings in runs:
        adapt(settings, files["manifest"], files["data"], files["encoder"], artefacts, folder / str(settings.run.seed))


def train_together(runs, files, artefacts, folder: Path, batching: str = "vectorised") -> None:
    adapt_seeds([(s, artefacts, folder / str(s.run.seed)) for s in runs], files["manifest"], files["data"], files["encoder"], batching)


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "train_log.jsonl").read_text().splitlines()]


def close(a: float, b: float, relative: float = RELATIVE) -> bool:
    return math.isclose(a, b, rel_tol=relative, abs_tol=1e-6)


def differences(separate: Path, together: Path, other: Path | None = None) -> list[str]:
    """What differs beyond the stated tolerance between two runs' logs and, given `other` (another seed's separate
    run), their final weights."""
    found = []
    lines_a, lines_b = log_lines(separate), log_lines(together)
    if [line["step"] for line in lines_a] != [line["step"] for line in lines_b]:
        return ["log steps differ"]
    for a, b in zip(lines_a, lines_b):
        for key, value in a.items():
            if key == "eval":
                found += [f"step {a['step']} {m}" for m in ("kid_validation", "fid_validation") if not close(value[m], b[key][m])]
            elif key not in ("steps_per_s", "step") and isinstance(value, float) and not close(value, b[key], RELATIVE_LOSS):
                found.append(f"step {a['step']} {key}: {value} vs {b[key]}")
    if other is not None:
        gap, yardstick = weight_distance(separate, together), weight_distance(separate, other)
        print(f"weights: {gap:.2e} from the separate run, {yardstick:.2e} between two seeds' separate runs")
        if not gap <= WEIGHTS * yardstick:
            found.append(f"final weights {gap:.3g} apart, more than {WEIGHTS} x {yardstick:.3g} (another seed's run)")
    return found


def weight_distance(a: Path, b: Path) -> float:
    """Euclidean distance between two runs' final G, EMA G and D weights (every floating-point tensor)."""
    weights_a, weights_b = (torch.load(folder / "checkpoint.pt", weights_only=True) for folder in (a, b))
    total = 0.0
    for part in ("generator", "generator_ema", "discriminator"):
        for name, tensor in (weights_a.get(part) or {}).items():
            if tensor.is_floating_point():
                total += (tensor.double() - weights_b[part][name].double()).pow(2).sum().item()
    return math.sqrt(total)


BATCHABLE = ("scratch", "finetune", "freeze_d", "l2sp", "ewc", "maml_gan", "reptile", "adafm", "finetune+diffaug")


@pytest.mark.parametrize("method", BATCHABLE)
def test_a_vectorised_batch_gives_each_seed_its_separate_runs_records(method, task_files, artefacts, tmp_path, one_thread):
    assert batching_problem(get_method(method)) is None
    runs = seed_runs(method)
    train_separately(runs, task_files, artefacts, tmp_path / "separate")
    train_together(runs, task_files, artefacts, tmp_path / "together")
    for seed in SEEDS:
        other = tmp_path / "separate" / str((seed + 1) % len(SEEDS))
        assert differences(tmp_path / "separate" / str(seed), tmp_path / "together" / str(seed), other) == []
        record = json.loads((tmp_path / "together" / str(seed) / "config.json").read_text())
        assert record["trained_in_batch_of"] == len(SEEDS) and record["seed"] == seed and record["status"] == "completed"


def test_a_batch_that_swaps_its_runs_weights_fails_the_comparison(task_files, artefacts, tmp_path, monkeypatch, one_thread):
    runs = seed_runs("finetune")
    train_separately(runs, task_files, artefacts, tmp_path / "separate")

    @torch.no_grad()
    def swapped(self, index):  # run index's module gets the next run's weights
        for name, tensor in self.modules[index].named_parameters():
            tensor.copy_(self.params[name][(index + 1) % len(SEEDS)])

    monkeypatch.setattr(batched.StackedModule, "write_back", swapped)
    train_together(runs, task_files, artefacts, tmp_path / "together")
    assert differences(tmp_path / "separate" / "0", tmp_path / "together" / "0", tmp_path / "separate" / "2") != []


@pytest.mark.parametrize("method", ["cdc", "minegan"])
def test_methods_that_cannot_be_batched_say_so_and_train_their_seeds_exactly_as_separate_runs(
    method, task_files, artefacts, tmp_path, caplog, one_thread
):
    assert "overrides" in batching_problem(get_method(method))
    runs = seed_runs(method, {**TRAIN, "steps": 6})
    train_separately(runs, task_files, artefacts, tmp_path / "separate")
    train_together(runs, task_files, artefacts, tmp_path / "together")
    assert "cannot train its seeds as one batch" in caplog.text
    for seed in SEEDS:
        assert log_lines(tmp_path / "separate" / str(seed))[-1] == log_lines(tmp_path / "together" / str(seed))[-1]
        assert "trained_in_batch_of" not in json.loads((tmp_path / "together" / str(seed) / "config.json").read_text())


def test_sequential_seeds_in_one_job_are_bit_identical_to_separate_jobs(task_files, artefacts, tmp_path, one_thread):
    runs = seed_runs("l2sp", {**TRAIN, "steps": 6})
    train_separately(runs, task_files, artefacts, tmp_path / "separate")
    train_together(runs, task_files, artefacts, tmp_path / "together", "sequential")
    for seed in SEEDS:
        a, b = tmp_path / "separate" / str(seed), tmp_path / "together" / str(seed)
        assert [{k: v for k, v in line.items() if k != "steps_per_s"} for line in log_lines(a)] == [
            {k: v for k, v in line.items() if k != "steps_per_s"} for line in log_lines(b)
        ]
        weights_a, weights_b = torch.load(a / "checkpoint.pt", weights_only=True), torch.load(b / "checkpoint.pt", weights_only=True)
        assert all(torch.equal(t, weights_b["generator"][n]) for n, t in weights_a["generator"].items())


def test_one_diverged_seed_does_not_stop_its_batch_mates(task_files, artefacts, tmp_path, monkeypatch, one_thread):
    """Seed 1's run draws a non-finite loss at step 4 (its shots made NaN from then on): it is recorded as diverged
    at that step, and seeds 0 and 2 end with the records their separate runs give."""
    runs = seed_runs("finetune")
    train_separately([runs[0], runs[2]], task_files, artefacts, tmp_path / "separate")
    original = batched.RunRecorder.record_step

    def poisoned(self, step, values, real_logits, fake_logits):
        if self.seed == 1 and step >= 4:
            values = {**values, "loss_d": float("nan")}
        return original(self, step, values, real_logits, fake_logits)

    monkeypatch.setattr(batched.RunRecorder, "record_step", poisoned)
    train_together(runs, task_files, artefacts, tmp_path / "together")
    diverged = json.loads((tmp_path / "together" / "1" / "config.json").read_text())
    assert diverged["status"] == "diverged" and diverged["diverged_at_step"] == 4 and "loss_d" in diverged["divergence_reason"]
    for seed in (0, 2):
        assert json.loads((tmp_path / "together" / str(seed) / "config.json").read_text())["status"] == "completed"
        assert differences(tmp_path / "separate" / str(seed), tmp_path / "together" / str(seed)) == []


def test_a_killed_batch_resumes_each_seed_where_its_checkpoint_left_it(task_files, artefacts, tmp_path, monkeypatch, one_thread):
    """The batch is killed after step 12 (checkpoints at 5 and 10); the rerun resumes every seed from step 10 and
    ends with the records of an uninterrupted batch, to the same tolerance."""
    runs = seed_runs("freeze_d")
    train_together(runs, task_files, artefacts, tmp_path / "uninterrupted")
    original = batched.RunRecorder.record_step

    def killed(self, step, *args):
        if step == 12:
            raise KeyboardInterrupt
        return original(self, step, *args)

    monkeypatch.setattr(batched.RunRecorder, "record_step", killed)
    with pytest.raises(KeyboardInterrupt):
        train_together(runs, task_files, artefacts, tmp_path / "resumed")
    assert all((tmp_path / "resumed" / str(seed) / "resume.pt").exists() for seed in SEEDS)
    monkeypatch.setattr(batched.RunRecorder, "record_step", original)
    train_together(runs, task_files, artefacts, tmp_path / "resumed")
    for seed in SEEDS:
        assert differences(tmp_path / "uninterrupted" / str(seed), tmp_path / "resumed" / str(seed)) == []
        assert not (tmp_path / "resumed" / str(seed) / "resume.pt").exists()


def test_a_method_may_opt_out_of_batching(monkeypatch):
    finetune = get_method("finetune")
    assert batching_problem(finetune) is None
    monkeypatch.setattr(finetune, "batchable", False)
    assert batching_problem(finetune) == "the method declares batchable = False"


def test_bad_runs_for_adapt_seeds_give_one_clear_error(task_files, tmp_path):
    from conftest import assert_one_clear_error, run_cli

    files = ("--manifest", str(task_files["manifest"]), "--dataset", str(task_files["data"]), "--encoder", str(task_files["encoder"]))
    no_folder = json.dumps([{"settings": adapt_settings(), "artefacts": {}}])
    assert_one_clear_error(
        run_cli("adapt-seeds", "--batching", "vectorised", "--runs", no_folder, *files), "--runs must be a JSON list", "output_dir"
    )
    assert_one_clear_error(run_cli("adapt-seeds", "--batching", "vectorised", "--runs", "[{", *files), "--runs must be a JSON list")
    assert not any(tmp_path.iterdir())


def test_models_the_batch_cannot_stack_fall_back_to_seeds_one_after_another(task_files, artefacts, tmp_path, monkeypatch, caplog, one_thread):
    """A plugin's model the stacking refuses (here: every model, as if its spectral norm ran over another dimension)
    is found before any step; the seeds then train exactly as separate runs, and the log says why."""

    def refuse(self, modules, trainable, compile=False):
        raise batched.NotBatchable("spectral norm over dimension 1 of blocks.0 is not batched")

    runs = seed_runs("finetune", {**TRAIN, "steps": 6})
    train_separately(runs, task_files, artefacts, tmp_path / "separate")
    monkeypatch.setattr(batched.StackedModule, "__init__", refuse)
    train_together(runs, task_files, artefacts, tmp_path / "together")
    assert "spectral norm over dimension 1" in caplog.text and "training them one after another" in caplog.text
    for seed in SEEDS:
        assert log_lines(tmp_path / "separate" / str(seed))[-1] == log_lines(tmp_path / "together" / str(seed))[-1]
