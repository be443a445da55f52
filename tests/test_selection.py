"""Checkpoint selection: snapshots of every evaluated generator, the validation-selected step, stale files."""

from __future__ import annotations

import json

import pytest
import torch

from benchmark.checkpoint import generator_from_snapshot
from benchmark.errors import BenchmarkError
from benchmark.layout import StageFolder
from benchmark.models import Architecture, GANModels
from benchmark.selection import best_step, validation_scores
from benchmark.training import TrainingHooks, TrainSettings, as_training_tensor, train_gan

ARCH = Architecture.from_config({"width": 8}, image_size=28, channels=1)
CPU = torch.device("cpu")


def _kid_falls_then_rises(generator, step):
    return {"kid_validation": {5: 0.3, 10: 0.1, 15: 0.1, 20: 0.4}[step], "fid_validation": 1.0}


def _train(run_dir, digits, identity):
    settings = TrainSettings.from_config({"steps": 20, "batch_size": 16, "ema_decay": 0.9, "eval_every": 5, "log_every": 5})
    real = as_training_tensor(digits.images[:128], CPU)
    return train_gan(GANModels.fresh(ARCH, 0), real, settings, 0, run_dir, TrainingHooks(), identity, _kid_falls_then_rises)


def test_every_evaluated_generator_but_the_last_is_kept_and_the_best_validation_step_is_found(tmp_path, digits):
    models = _train(tmp_path, digits, {"toy": "selection"})
    assert sorted(path.name for path in (tmp_path / "snapshots").iterdir()) == ["step0000005.pt", "step0000010.pt", "step0000015.pt"]
    scores = validation_scores(tmp_path)
    assert sorted(scores) == [5, 10, 15, 20]
    assert best_step({step: values["kid_validation"] for step, values in scores.items()}) == 10  # tie with 15: earliest

    identity_json = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["identity_json"]
    early = generator_from_snapshot(StageFolder(tmp_path).snapshot(10), identity_json, ARCH, CPU)
    later = generator_from_snapshot(StageFolder(tmp_path).snapshot(15), identity_json, ARCH, CPU)
    assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(), later.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(later.state_dict().values(), models.generator.state_dict().values()))


def test_snapshot_of_another_run_is_refused(tmp_path, digits):
    _train(tmp_path, digits, {"toy": "selection"})
    other_identity = json.dumps({"toy": "another run"}, sort_keys=True)
    with pytest.raises(BenchmarkError, match="belongs to another run"):
        generator_from_snapshot(StageFolder(tmp_path).snapshot(5), other_identity, ARCH, CPU)


def test_fresh_start_clears_snapshots_left_by_another_run(tmp_path, digits):
    stale = StageFolder(tmp_path).snapshot(99)
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    _train(tmp_path, digits, {"toy": "selection"})
    assert not stale.exists() and StageFolder(tmp_path).snapshot(5).exists()


def test_a_run_without_evaluations_has_no_validation_scores(tmp_path):
    assert validation_scores(tmp_path) == {}
