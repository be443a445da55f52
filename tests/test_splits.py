"""Split manifests: deterministic to the byte, disjoint, nested across K, and seeded apart."""

from __future__ import annotations

import json

import pytest

from benchmark.errors import BenchmarkError
from benchmark.splits import build_source_manifest, build_task_manifest, read_manifest, write_manifest
from conftest import SHARED, needs_omniglot, run_cli, save_prepared

TASK = {
    "kind": "few-shot",
    "source": "low",
    "target": {"dataset": "digits", "classes": [5, 6, 7, 8, 9]},
    "validation_size": 100,
    "shot_pool_size": 60,
    "reference_size": None,
}


def _manifests(digits, split_seed=0, shots=(1, 5, 10), draws=3):
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, split_seed)
    return source, build_task_manifest("digits_high", TASK, source, digits, digits, list(shots), draws, split_seed)


def test_blocks_are_disjoint_and_shots_nested(digits):
    source, task = _manifests(digits)
    target = task["target"]
    reference, validation, pool = (set(target[b]["indices"]) for b in ("reference", "validation", "shot_pool"))
    train = set(source["train"]["indices"])
    assert not (reference & validation) and not (reference & pool) and not (validation & pool)
    assert not (train & (reference | validation | pool))
    assert len(reference | validation | pool) == int((digits.labels >= 5).sum())
    for draw in range(3):
        one, five, ten = (target["shots"][k][draw] for k in ("1", "5", "10"))
        assert set(ten) <= pool and len(set(ten)) == 10
        assert ten[:5] == five and five[:1] == one  # nested: the 5 shots of a draw are the first 5 of its 10
    assert target["shots"]["10"][0] != target["shots"]["10"][1], "split draws must differ"
    assert {int(digits.labels[i]) for i in reference} == {5, 6, 7, 8, 9}


def test_same_config_gives_byte_identical_files(tmp_path, digits):
    for run in ("a", "b"):
        source, task = _manifests(digits)
        write_manifest(tmp_path / run / "task.json", task)
    assert (tmp_path / "a" / "task.json").read_bytes() == (tmp_path / "b" / "task.json").read_bytes()
    other_seed = _manifests(digits, split_seed=1)[1]
    assert other_seed["target"]["reference"]["sha256"] != task["target"]["reference"]["sha256"]


def test_cli_writes_identical_manifests_twice(tmp_path, digits):
    data = save_prepared(digits, tmp_path, "digits")
    settings = json.dumps({"spec": {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, "split_seed": 3})
    task_settings = json.dumps({"spec": TASK, "shots": [5], "split_draws": 2, "split_seed": 3})
    outputs = []
    for run in ("a", "b"):
        source_path, task_path = tmp_path / run / "source.json", tmp_path / run / "task.json"
        assert run_cli("split-source", "--name", "low", "--settings", settings, "--dataset", str(data), "--output", str(source_path)).returncode == 0
        files = ["--source-manifest", str(source_path), "--source-dataset", str(data), "--dataset", str(data), "--output", str(task_path)]
        result = run_cli("split-task", "--name", "digits_high", "--settings", task_settings, *files)
        assert result.returncode == 0, result.stderr
        outputs.append(task_path.read_bytes())
    assert outputs[0] == outputs[1]
    assert read_manifest(tmp_path / "a" / "task.json", "task")["target"]["dataset"]["content_sha256"] == digits.content_sha256


def test_k_larger_than_available_is_one_clear_error(digits):
    source = build_source_manifest("low", {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, digits, 0)
    with pytest.raises(BenchmarkError, match="exceed its shot_pool_size"):
        build_task_manifest("t", TASK, source, digits, digits, [61], 1, 0)
    too_big = {**TASK, "validation_size": 900}
    with pytest.raises(BenchmarkError, match="fewer than validation_size"):
        build_task_manifest("t", too_big, source, digits, digits, [5], 1, 0)


def test_overlapping_source_and_target_is_refused(digits):
    source = build_source_manifest("all", {"dataset": "digits"}, digits, 0)
    with pytest.raises(BenchmarkError, match="also source training images"):
        build_task_manifest("t", TASK, source, digits, digits, [5], 1, 0)


def test_unknown_class_and_attribute_are_named(digits):
    with pytest.raises(BenchmarkError, match="class 'zebra'"):
        build_source_manifest("s", {"dataset": "digits", "classes": ["zebra"]}, digits, 0)
    with pytest.raises(BenchmarkError, match="no attribute 'alphabet'"):
        build_source_manifest("s", {"dataset": "digits", "where": {"alphabet": "Latin"}}, digits, 0)


def test_empty_or_garbled_manifest_is_refused(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("")
    with pytest.raises(BenchmarkError, match="empty or unreadable"):
        read_manifest(empty, "task")


@needs_omniglot
@pytest.mark.slow
def test_omniglot_alphabet_task_on_real_data():
    from benchmark.data import prepare_dataset

    omniglot = prepare_dataset("omniglot", "omniglot", {"root": str(SHARED / "omniglot")}, 28, 1)
    source = build_source_manifest("background", {"dataset": "omniglot", "where": {"subset": "background"}}, omniglot, 0)
    spec = {**TASK, "target": {"dataset": "omniglot", "where": {"alphabet": "Malayalam"}}, "shot_pool_size": 100}
    task = build_task_manifest("malayalam", spec, source, omniglot, omniglot, [10], 3, 0)
    assert source["train"]["count"] == 964 * 20
    assert task["target"]["reference"]["count"] == 47 * 20 - 100 - 100
    alphabets = omniglot.class_attributes["alphabet"]
    assert {alphabets[omniglot.labels[i]] for i in task["target"]["shots"]["10"][0]} == {"Malayalam"}
