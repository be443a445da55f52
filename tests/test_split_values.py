"""Split manifests pinned down to their values: a stored expected manifest for the seeding, each seed's own shots,
sampling without replacement, the boundaries of every size check, and the selection filters.

`tests/fixtures/split_expected.json` holds the block hashes and shot draws that the current seeding writes for a
fixed config. A change of seeding (or of the manifest format) changes every split of every published result: it
must fail here, and the fixture is regenerated only on purpose (see `test_seeding_matches_the_stored_manifest`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.data import PreparedDataset
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_arrays, sha256_json
from benchmark.splits import (
    build_meta_manifest,
    build_source_manifest,
    build_task_manifest,
    load_split,
    read_manifest,
    select_indices,
    shots_for,
    write_manifest,
)
from conftest import save_prepared

EXPECTED = Path(__file__).parent / "fixtures" / "split_expected.json"
SOURCE_SPEC = {"dataset": "digits", "classes": [0, 1, 2, 3, 4], "max_images": 400}
TASK = {
    "kind": "few-shot",
    "source": "low",
    "target": {"dataset": "digits", "classes": [5, 6, 7, 8, 9]},
    "validation_size": 50,
    "shot_pool_size": 20,
    "reference_size": 300,
}


def summary(digits: PreparedDataset) -> dict:
    """What the stored fixture pins down: every block's count and hash, every draw's shots, the meta-tasks."""
    source = build_source_manifest("low", SOURCE_SPEC, digits, 7)
    task = build_task_manifest("digits_high", TASK, source, digits, digits, [1, 5], 3, 7)
    meta = build_meta_manifest(source, digits, "class", 4, 3, 2, 7)
    blocks = {"source train": source["train"], **{name: task["target"][name] for name in ("reference", "validation", "shot_pool")}}
    return {
        "blocks": {name: [block["count"], block["sha256"]] for name, block in blocks.items()},
        "shots": task["target"]["shots"],
        "meta_tasks": meta["tasks"],
        "manifest_version": task["manifest_version"],
    }


def test_seeding_matches_the_stored_manifest(digits):
    """Regenerate after a deliberate change only, from `tests/`: `../.venv/bin/python -c "import test_split_values as t; t.regenerate()"`."""
    assert summary(digits) == json.loads(EXPECTED.read_text())


def regenerate() -> None:  # pragma: no cover - run by hand
    from benchmark.data import prepare_dataset

    digits = prepare_dataset("digits", "sklearn_digits", {}, image_size=28, channels=1)
    EXPECTED.write_text(json.dumps(summary(digits), indent=1, sort_keys=True) + "\n")


def test_each_seed_gets_its_own_draw_of_shots(digits):
    source = build_source_manifest("low", SOURCE_SPEC, digits, 7)
    task = build_task_manifest("digits_high", TASK, source, digits, digits, [5], 3, 7)
    draws = task["target"]["shots"]["5"]
    assert [shots_for(task, 5, draw) for draw in range(3)] == draws
    assert len({tuple(draw) for draw in draws}) == 3
    assert shots_for(task, 5, 4) == draws[1]  # more seeds than draws: the draws repeat in turn
    with pytest.raises(BenchmarkError, match=r"has no split for K = 10 \(has \['5'\]\)"):
        shots_for(task, 10, 0)


def test_max_images_samples_without_replacement_and_only_when_needed(digits):
    selected = int(np.isin(digits.labels, [0, 1, 2, 3, 4]).sum())
    sampled = build_source_manifest("low", SOURCE_SPEC, digits, 7)["train"]["indices"]
    assert len(sampled) == len(set(sampled)) == 400 and sampled == sorted(sampled)
    everything = build_source_manifest("low", {**SOURCE_SPEC, "max_images": selected}, digits, 7)["train"]["indices"]
    assert everything == list(np.flatnonzero(np.isin(digits.labels, [0, 1, 2, 3, 4])))
    assert set(sampled) < set(everything)


def toy_dataset(sizes: list[int], name: str = "toy") -> PreparedDataset:
    """Classes of the given sizes, every image distinct (its index written into two pixels)."""
    labels = np.repeat(np.arange(len(sizes)), sizes)
    images = np.zeros((len(labels), 1, 4, 4), dtype=np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(len(labels)) % 256, np.arange(len(labels)) // 256
    images[:, 0, 0, 2] = len(name)  # datasets of different names hold different images
    metadata = {
        "name": name,
        "class_names": [f"c{index}" for index in range(len(sizes))],
        "class_attributes": {"group": ["odd" if index % 2 else "even" for index in range(len(sizes))]},
        "content_sha256": sha256_arrays(images, labels),
    }
    partition = np.where(np.arange(len(labels)) % 3 == 0, "test", "train")
    return PreparedDataset(images, labels, metadata, {"partition": partition, "parity": np.where(np.arange(len(labels)) % 2 == 0, "even", "odd")})


def test_selection_by_id_name_class_attribute_and_image_attribute():
    toy = toy_dataset([4, 4, 4, 4])
    assert select_indices(toy, {"classes": [3, "c1"]}, "t")[0].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert select_indices(toy, {"classes": [3, "c1"]}, "t")[1] == [1, 3]
    assert select_indices(toy, {"where": {"group": "odd"}}, "t")[0].tolist() == [4, 5, 6, 7, 12, 13, 14, 15]
    assert select_indices(toy, {"where": {"group": ["odd", "even"]}}, "t")[1] == [0, 1, 2, 3]
    assert select_indices(toy, {"where": {"partition": "test"}, "classes": [0, 1]}, "t")[0].tolist() == [0, 3, 6]
    assert select_indices(toy, {"where": {"partition": "test", "parity": "odd"}}, "t")[0].tolist() == [3, 9, 15]  # both filters
    assert select_indices(toy, {}, "t")[0].tolist() == list(range(16))


@pytest.mark.parametrize("entry", [4, -1, "c9", 1.0])
def test_a_class_outside_the_dataset_is_refused(entry):
    with pytest.raises(BenchmarkError, match=f"class {entry!r} is not in dataset 'toy'"):
        select_indices(toy_dataset([4, 4, 4, 4]), {"classes": [entry]}, "t")


def test_empty_and_unknown_selections_are_refused():
    toy = toy_dataset([4, 4])
    with pytest.raises(BenchmarkError, match=r"no class has group = \['blue'\]"):
        select_indices(toy, {"where": {"group": ["odd", "blue"]}}, "t")
    with pytest.raises(BenchmarkError, match="matches no image"):
        select_indices(toy, {"where": {"partition": "validation"}}, "t")


def task_spec(validation: int, pool: int, reference: int | None = None) -> dict:
    return {"kind": "few-shot", "target": {"classes": [1]}, "validation_size": validation, "shot_pool_size": pool, "reference_size": reference}


def test_size_checks_accept_their_boundaries_and_refuse_one_beyond():
    toy = toy_dataset([10, 30])
    source = build_source_manifest("s", {"classes": [0]}, toy, 0)
    # 30 target images = validation 18 + pool 10 + the two reference images FID/KID need: accepted.
    task = build_task_manifest("t", task_spec(18, 10), source, toy, toy, [10], 1, 0)
    assert task["target"]["reference"]["count"] == 2
    with pytest.raises(BenchmarkError, match="has 30 images, fewer than validation_size"):
        build_task_manifest("t", task_spec(19, 10), source, toy, toy, [10], 1, 0)
    with pytest.raises(BenchmarkError, match="K = 11 shots exceed its shot_pool_size 10"):
        build_task_manifest("t", task_spec(18, 10), source, toy, toy, [5, 11], 1, 0)
    # reference_size: all that remains is allowed, one more is refused.
    assert build_task_manifest("t", task_spec(10, 10, 10), source, toy, toy, [5], 1, 0)["target"]["reference"]["count"] == 10
    assert build_task_manifest("t", task_spec(10, 10, 4), source, toy, toy, [5], 1, 0)["target"]["reference"]["count"] == 4
    with pytest.raises(BenchmarkError, match="reference_size is 11, but only 10 target images remain"):
        build_task_manifest("t", task_spec(10, 10, 11), source, toy, toy, [5], 1, 0)


def test_leaked_images_are_named_by_their_first_pair():
    toy = toy_dataset([10, 30])
    copy = PreparedDataset(toy.images.copy(), toy.labels.copy(), {**toy.metadata, "name": "copy"}, toy.image_attributes)
    copy.images[[12, 15]] = toy.images[[3, 7]]  # two target images that are source images under another name
    source = build_source_manifest("s", {"classes": [0]}, toy, 0)
    with pytest.raises(BenchmarkError, match="2 target images are also source training images .* image 12 of 'copy' is image 3 of 'toy'"):
        build_task_manifest("t", task_spec(10, 10), source, toy, copy, [5], 1, 0)


def test_the_source_manifest_must_match_the_source_data():
    toy = toy_dataset([10, 30])
    source = build_source_manifest("s", {"classes": [0]}, toy, 0)
    changed = toy_dataset([10, 30], name="toy2")
    with pytest.raises(BenchmarkError, match=f"written for dataset 'toy' with content {toy.content_sha256[:12]}"):
        build_task_manifest("t", task_spec(10, 10), source, changed, toy, [5], 1, 0)


def test_the_split_is_the_seeded_order_cut_in_blocks():
    """Validation first, then the shot pool, then the reference set, all from one seeded permutation; the
    blocks cover the selection exactly."""
    toy = toy_dataset([10, 30])
    source = build_source_manifest("s", {"classes": [0]}, toy, 0)
    target = build_task_manifest("t", task_spec(8, 6), source, toy, toy, [2], 2, 0)["target"]
    blocks = [target[name]["indices"] for name in ("validation", "shot_pool", "reference")]
    assert [len(block) for block in blocks] == [8, 6, 16]
    assert sorted(sum(blocks, [])) == list(range(10, 40))
    assert target["validation"]["indices"] == sorted(target["validation"]["indices"])


@pytest.fixture
def written(tmp_path, digits):
    data = save_prepared(digits, tmp_path, "digits")
    source = build_source_manifest("low", SOURCE_SPEC, digits, 7)
    path = tmp_path / "task.json"
    write_manifest(path, build_task_manifest("digits_high", TASK, source, digits, digits, [1, 5], 3, 7))
    return path, data


def test_a_manifest_of_another_kind_or_version_is_refused(tmp_path, digits):
    source = build_source_manifest("low", SOURCE_SPEC, digits, 7)
    write_manifest(tmp_path / "source.json", source)
    with pytest.raises(BenchmarkError, match="is not a version-1 task manifest"):
        read_manifest(tmp_path / "source.json", "task")
    write_manifest(tmp_path / "old.json", {**source, "manifest_version": 0})
    with pytest.raises(BenchmarkError, match="is not a version-1 source manifest"):
        read_manifest(tmp_path / "old.json", "source")
    write_manifest(tmp_path / "list.json", [source])
    with pytest.raises(BenchmarkError, match="is not a version-1 source manifest"):
        read_manifest(tmp_path / "list.json", "source")
    assert read_manifest(tmp_path / "source.json", "source") == json.loads(json.dumps(source))


def test_manifest_files_are_canonical_json(tmp_path):
    """The same manifest gives the same bytes whatever the order its keys were inserted in."""
    write_manifest(tmp_path / "a.json", {"kind": "task", "b": [2, 1], "a": {"y": 1, "x": 2}})
    write_manifest(tmp_path / "b.json", {"a": {"x": 2, "y": 1}, "b": [2, 1], "kind": "task"})
    assert (tmp_path / "a.json").read_text() == '{"a":{"x":2,"y":1},"b":[2,1],"kind":"task"}\n' == (tmp_path / "b.json").read_text()


def edit(path: Path, change) -> None:
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m["target"]["shots"]["5"][1].__setitem__(0, m["target"]["reference"]["indices"][0]), "draw 1 of K = 5 is not 5 distinct"),
        (lambda m: m["target"]["shots"]["5"][2].pop(), "draw 2 of K = 5 is not 5 distinct"),
        (lambda m: m["target"]["shots"]["5"][0].__setitem__(1, m["target"]["shots"]["5"][0][0]), "draw 0 of K = 5 is not 5 distinct"),
        (lambda m: m["target"]["validation"].update(count=49), "the validation block's indices no longer match"),
        (lambda m: m["source"]["train"]["indices"].__setitem__(0, -3), "the source train block holds an index that is not a non-negative"),
        (lambda m: m["target"]["reference"]["indices"].__setitem__(0, True), "the reference block holds an index that is not a non-negative"),
    ],
)
def test_a_changed_manifest_is_refused_with_its_problem(written, change, problem):
    path, _ = written
    edit(path, change)
    with pytest.raises(BenchmarkError, match=f"was changed after the split stage wrote it: {problem}"):
        read_manifest(path, "task")


@pytest.mark.parametrize(("changed", "other"), [("validation", "reference"), ("shot_pool", "reference"), ("shot_pool", "validation")])
def test_blocks_that_overlap_are_refused_even_with_matching_hashes(written, changed, other):
    path, _ = written

    def overlap(manifest: dict) -> None:
        block = manifest["target"][changed]
        block["indices"][-1] = manifest["target"][other]["indices"][0]
        block["sha256"] = sha256_json(block["indices"])

    edit(path, overlap)
    with pytest.raises(BenchmarkError, match="reference set, validation split and shot pool overlap"):
        read_manifest(path, "task")


def test_a_draw_of_the_whole_shot_pool_is_valid(tmp_path):
    toy = toy_dataset([10, 30])
    source = build_source_manifest("s", {"classes": [0]}, toy, 0)
    write_manifest(tmp_path / "task.json", build_task_manifest("t", task_spec(10, 10), source, toy, toy, [10], 2, 0))
    manifest = read_manifest(tmp_path / "task.json", "task")
    assert sorted(manifest["target"]["shots"]["10"][1]) == manifest["target"]["shot_pool"]["indices"]


def test_load_split_checks_the_data_and_the_index_range(written, digits, tmp_path):
    path, data = written
    manifest, dataset = load_split(path, "task", data)
    assert manifest == read_manifest(path, "task") and len(dataset.labels) == len(digits.labels)

    def beyond(manifest: dict) -> None:
        block = manifest["target"]["reference"]
        block["indices"][-1] = len(digits.labels)  # one past the last image, with the hash made to match
        block["sha256"] = sha256_json(block["indices"])

    other = save_prepared(toy_dataset([10, 10]), tmp_path, "other")
    with pytest.raises(BenchmarkError, match="was written for dataset 'digits' with content .* but the prepared data now hashes to"):
        load_split(path, "task", other)
    edit(path, beyond)
    with pytest.raises(BenchmarkError, match=f"indexes image {len(digits.labels)}, but dataset 'digits' has {len(digits.labels)} images"):
        load_split(path, "task", data)


def test_a_task_source_may_index_beyond_the_target_dataset(tmp_path):
    """The source block indexes the source's dataset: only the target blocks are checked against the target's size."""
    big, small = toy_dataset([90, 10], name="big"), toy_dataset([4, 36], name="small")
    source = build_source_manifest("s", {"classes": [0]}, big, 0)
    assert max(source["train"]["indices"]) >= len(small.labels)
    write_manifest(tmp_path / "task.json", build_task_manifest("t", task_spec(10, 10), source, big, small, [5], 1, 0))
    manifest, dataset = load_split(tmp_path / "task.json", "task", save_prepared(small, tmp_path, "small"))
    assert dataset.metadata["name"] == "small" and manifest["target"]["reference"]["count"] == 16


@pytest.fixture
def meta_written(tmp_path):
    toy = toy_dataset([6, 6])
    source = build_source_manifest("s", {}, toy, 0)
    path = tmp_path / "meta.json"
    write_manifest(path, build_meta_manifest(source, toy, "class", 3, 3, 2, 0))
    return path, save_prepared(toy, tmp_path, "toy")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda task: task.update(query=[]), "meta-task 1 has an empty or overlapping support and query"),
        (lambda task: task.update(support=[]), "meta-task 1 has an empty or overlapping support and query"),
        (lambda task: task["query"].__setitem__(0, task["support"][0]), "meta-task 1 has an empty or overlapping support and query"),
        (lambda task: task["query"].__setitem__(0, 1.5), "meta-task 1 holds an index that is not an integer"),
        (lambda task: task["support"].__setitem__(0, False), "meta-task 1 holds an index that is not an integer"),
    ],
)
def test_a_changed_meta_manifest_is_refused(meta_written, change, problem):
    path, _ = meta_written
    edit(path, lambda manifest: change(manifest["tasks"][1]))
    with pytest.raises(BenchmarkError, match=problem):
        read_manifest(path, "meta")


def test_meta_manifest_indices_are_checked_against_the_dataset(meta_written):
    path, data = meta_written
    manifest, _ = load_split(path, "meta", data)
    assert len(manifest["tasks"]) == 3
    edit(path, lambda manifest: manifest["tasks"][2]["query"].__setitem__(1, 12))
    with pytest.raises(BenchmarkError, match="indexes image 12, but dataset 'toy' has 12 images"):
        load_split(path, "meta", data)


def test_meta_tasks_are_drawn_from_units_with_enough_images():
    toy = toy_dataset([6, 4, 6, 5])
    source = build_source_manifest("s", {}, toy, 0)
    meta = build_meta_manifest(source, toy, "class", 40, 3, 2, 0)
    assert meta["num_units"] == 3  # class c1 has 4 images, fewer than 3 + 2
    assert {task["unit"] for task in meta["tasks"]} == {"c0", "c2", "c3"}
    for task in meta["tasks"]:
        assert len(task["support"]) == 3 and len(task["query"]) == 2 and len(set(task["support"] + task["query"])) == 5
    by_group = build_meta_manifest(source, toy, "group", 10, 3, 2, 0)
    assert {task["unit"] for task in by_group["tasks"]} == {"even", "odd"} and by_group["num_units"] == 2
    with pytest.raises(BenchmarkError, match="No class of source 's' has 7 images"):
        build_meta_manifest(source, toy, "class", 3, 4, 3, 0)
