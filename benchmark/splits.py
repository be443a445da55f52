"""Deterministic split manifests, written once; every later stage reads only these files.

Source manifest (one per source domain): the source training indices into the source dataset.
Task manifest (one per task): a copy of its source's indices, then, from the target dataset's selected images,
a reference (evaluation) set and a validation subset that are fixed for the task, and a shot pool from which each
split draw takes its K shots (nested: the 5 shots of a draw are the first 5 of its 10). Reference, validation and
shot pool are disjoint by construction, and every manifest carries the content hash of the data it indexes.

Randomness comes from numpy Generators seeded by (split seed, a stable hash of the name, draw): never from
Python's global `random`, so adding a task or a draw leaves every other split unchanged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.data import PreparedDataset
from benchmark.errors import BenchmarkError
from benchmark.hashing import sha256_json
from benchmark.io import atomic_write_text

MANIFEST_VERSION = 1


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def _rng(split_seed: int, name: str, *extra: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([split_seed, _stable_int(name), *extra]))


def select_indices(dataset: PreparedDataset, selection: dict[str, Any], what: str) -> tuple[np.ndarray, list[int]]:
    """Image indices (sorted) and class ids picked by a selection {classes: [...], where: {attribute: value(s)}}.

    `classes` lists class ids or class names. `where` filters on per-class attributes (Omniglot's `alphabet`,
    `subset`) or per-image attributes (Fashion-MNIST's `partition`).
    """
    names = dataset.class_names
    class_ids = list(range(len(names)))
    if selection.get("classes") is not None:
        class_ids = []
        for entry in selection["classes"]:
            if isinstance(entry, int) and 0 <= entry < len(names):
                class_ids.append(entry)
            elif isinstance(entry, str) and entry in names:
                class_ids.append(names.index(entry))
            else:
                raise BenchmarkError(
                    f"{what}: class {entry!r} is not in dataset '{dataset.metadata['name']}' (ids 0..{len(names) - 1}; names such as {names[:5]})."
                )
    image_mask = np.ones(len(dataset.labels), dtype=bool)
    for attribute, wanted in (selection.get("where") or {}).items():
        wanted_values = set(wanted if isinstance(wanted, list) else [wanted])
        if attribute in dataset.class_attributes:
            values = dataset.class_attributes[attribute]
            missing = wanted_values - set(values)
            if missing:
                raise BenchmarkError(f"{what}: no class has {attribute} = {sorted(missing)}; known: {sorted(set(values))[:10]}...")
            class_ids = [c for c in class_ids if values[c] in wanted_values]
        elif attribute in dataset.image_attributes:
            image_mask &= np.isin(dataset.image_attributes[attribute], list(wanted_values))
        else:
            known = sorted(dataset.class_attributes) + sorted(dataset.image_attributes)
            raise BenchmarkError(f"{what}: dataset '{dataset.metadata['name']}' has no attribute '{attribute}' (known: {known}).")
    image_mask &= np.isin(dataset.labels, class_ids)
    indices = np.flatnonzero(image_mask)
    if len(indices) == 0:
        raise BenchmarkError(f"{what}: the selection {selection} matches no image of dataset '{dataset.metadata['name']}'.")
    return indices, sorted(class_ids)


def _indices_block(indices: np.ndarray) -> dict[str, Any]:
    as_list = [int(i) for i in indices]
    return {"count": len(as_list), "sha256": sha256_json(as_list), "indices": as_list}


def build_source_manifest(name: str, spec: dict[str, Any], dataset: PreparedDataset, split_seed: int) -> dict[str, Any]:
    indices, class_ids = select_indices(dataset, spec, f"source '{name}'")
    max_images = spec.get("max_images")
    if max_images is not None and len(indices) > max_images:
        indices = np.sort(_rng(split_seed, f"source:{name}").choice(indices, size=max_images, replace=False))
    return {
        "manifest_version": MANIFEST_VERSION,
        "kind": "source",
        "name": name,
        "split_seed": split_seed,
        "spec": spec,
        "dataset": {"name": dataset.metadata["name"], "content_sha256": dataset.content_sha256},
        "class_ids": class_ids,
        "train": _indices_block(indices),
    }


def build_task_manifest(
    name: str,
    spec: dict[str, Any],
    source_manifest: dict[str, Any],
    source: PreparedDataset,
    target: PreparedDataset,
    shots: list[int],
    split_draws: int,
    split_seed: int,
) -> dict[str, Any]:
    what = f"task '{name}'"
    pool, class_ids = select_indices(target, spec["target"], what)
    validation_size = spec["validation_size"]
    shot_pool_size = spec["shot_pool_size"]
    if max(shots) > shot_pool_size:
        raise BenchmarkError(f"{what}: K = {max(shots)} shots exceed its shot_pool_size {shot_pool_size}. Raise shot_pool_size or lower K.")
    needed = validation_size + shot_pool_size + 2  # FID/KID need at least two reference images
    if len(pool) < needed:
        raise BenchmarkError(
            f"{what}: the target selection has {len(pool)} images, fewer than validation_size ({validation_size}) "
            f"+ shot_pool_size ({shot_pool_size}) + two reference images. Lower K, the validation size or "
            "the shot pool, or select more target images."
        )
    check_dataset_matches(source_manifest["dataset"], source, f"the manifest of source '{source_manifest['name']}'")
    # By content, not by dataset name: the same files may be declared under two dataset names.
    source_train = source_manifest["train"]["indices"]
    source_images = {hashlib.sha256(source.images[index].tobytes()).digest(): index for index in source_train}
    shared = [
        (int(index), source_images[digest]) for index in pool if (digest := hashlib.sha256(target.images[index].tobytes()).digest()) in source_images
    ]
    if shared:
        target_index, source_index = shared[0]
        raise BenchmarkError(
            f"{what}: {len(shared)} target images are also source training images (the same pixels, whatever the dataset "
            f"names; e.g. image {target_index} of '{target.metadata['name']}' is image {source_index} of "
            f"'{source.metadata['name']}'). Select target images the source does not train on, or remove the duplicates."
        )
    order = _rng(split_seed, f"task:{name}").permutation(pool)
    validation = np.sort(order[:validation_size])
    shot_pool = order[validation_size : validation_size + shot_pool_size]
    reference = order[validation_size + shot_pool_size :]
    if spec.get("reference_size") is not None:
        if spec["reference_size"] > len(reference):
            raise BenchmarkError(
                f"{what}: reference_size is {spec['reference_size']}, but only {len(reference)} target images remain after "
                f"the validation split and the shot pool. Lower reference_size, or set it to null to use all {len(reference)}."
            )
        reference = reference[: spec["reference_size"]]
    if validation_size + shot_pool_size + len(reference) >= len(target.labels):
        # Found here, not after pretraining: the domain encoder trains on the target's images that no split holds.
        raise BenchmarkError(
            f"{what}: its reference set, validation split and shot pool hold out every one of the {len(target.labels)} images of "
            f"'{target.metadata['name']}', which leaves the domain encoder none of them to learn this domain from (the metrics "
            f"would judge it in a feature space that never saw it). Set reference_size to at most {len(reference) - 1} "
            "(or lower validation_size or shot_pool_size)."
        )
    draws = {}
    for k in sorted(shots):
        draws[str(k)] = [[int(i) for i in _rng(split_seed, f"task:{name}", draw).permutation(shot_pool)[:k]] for draw in range(split_draws)]
    return {
        "manifest_version": MANIFEST_VERSION,
        "kind": "task",
        "name": name,
        "task_kind": spec["kind"],
        "split_seed": split_seed,
        "split_draws": split_draws,
        "spec": spec,
        "source": {
            "name": source_manifest["name"],
            "manifest_sha256": sha256_json(source_manifest),
            "dataset": source_manifest["dataset"],
            "train": source_manifest["train"],
        },
        "target": {
            "dataset": {"name": target.metadata["name"], "content_sha256": target.content_sha256},
            "class_ids": class_ids,
            "reference": _indices_block(np.sort(reference)),
            "validation": _indices_block(validation),
            "shot_pool": _indices_block(np.sort(shot_pool)),
            "shots": draws,
        },
    }


def write_manifest(path: str | Path, manifest: dict[str, Any]) -> None:
    # Canonical JSON (sorted keys, fixed separators): the same config gives byte-identical files.
    atomic_write_text(path, json.dumps(manifest, sort_keys=True, separators=(",", ":")) + "\n")


def read_manifest(path: str | Path, kind: str) -> dict[str, Any]:
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise BenchmarkError(f"Split manifest {path} does not exist. Run the split stage first.") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BenchmarkError(f"Split manifest {path} is empty or unreadable ({error}). Delete it and rerun the split stage.") from error
    if not isinstance(manifest, dict) or manifest.get("kind") != kind or manifest.get("manifest_version") != MANIFEST_VERSION:
        raise BenchmarkError(f"{path} is not a version-{MANIFEST_VERSION} {kind} manifest. Delete it and rerun the split stage.")
    try:
        problem = _verification_problem(manifest, kind)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        problem = f"its structure is damaged ({type(error).__name__}: {error})"
    if problem:
        raise BenchmarkError(f"Split manifest {path} was changed after the split stage wrote it: {problem}. Delete it and rerun the split stage.")
    return manifest


def _index_blocks(manifest: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    if kind == "source":
        return {"train": manifest["train"]}
    if kind == "task":
        target = manifest["target"]
        return {"source train": manifest["source"]["train"], **{name: target[name] for name in ("reference", "validation", "shot_pool")}}
    return {}


def _verification_problem(manifest: dict[str, Any], kind: str) -> str | None:
    """What is wrong with a manifest's index blocks and shots, or None: each block's count and hash must match its
    indices, indices are non-negative integers, a task's reference, validation and shot pool are disjoint, every
    draw of K shots is K distinct shot-pool images, and a meta-task's support and query are disjoint."""
    for name, block in _index_blocks(manifest, kind).items():
        indices = block["indices"]
        if not all(isinstance(index, int) and not isinstance(index, bool) and index >= 0 for index in indices):
            return f"the {name} block holds an index that is not a non-negative integer"
        if block["count"] != len(indices) or block["sha256"] != sha256_json(indices):
            return f"the {name} block's indices no longer match its count and hash"
    if kind == "task":
        target = manifest["target"]
        reference, validation, pool = (set(target[name]["indices"]) for name in ("reference", "validation", "shot_pool"))
        if reference & validation or reference & pool or validation & pool:
            return "its reference set, validation split and shot pool overlap"
        for k, draws in target["shots"].items():
            for draw, shots in enumerate(draws):
                if len(shots) != int(k) or len(set(shots)) != len(shots) or not set(shots) <= pool:
                    return f"draw {draw} of K = {k} is not {k} distinct images of the shot pool"
    if kind == "meta":
        for number, task in enumerate(manifest["tasks"]):
            if not task["support"] or not task["query"] or set(task["support"]) & set(task["query"]):
                return f"meta-task {number} has an empty or overlapping support and query"
            if not all(isinstance(index, int) and not isinstance(index, bool) for index in task["support"] + task["query"]):
                return f"meta-task {number} holds an index that is not an integer"
    return None


def _all_indices(manifest: dict[str, Any], kind: str) -> list[int]:
    """Every index into the manifest's own dataset (a task's source block indexes the source's dataset)."""
    blocks = _index_blocks(manifest, kind)
    blocks.pop("source train", None)
    indices = [index for block in blocks.values() for index in block["indices"]]
    if kind == "meta":
        indices = [index for task in manifest["tasks"] for index in task["support"] + task["query"]]
    return indices


# Where each kind of manifest records the dataset it indexes.
_DATASET_BLOCK = {"source": ("dataset",), "task": ("target", "dataset"), "meta": ("source", "dataset")}


def load_split(manifest_path: str | Path, kind: str, dataset_path: str | Path) -> tuple[dict[str, Any], PreparedDataset]:
    """Every training and evaluation stage opens with this: a manifest of `kind`, the prepared dataset it
    indexes, and the check that the dataset is the one the manifest was written for."""
    manifest = read_manifest(manifest_path, kind)
    dataset = PreparedDataset.load(dataset_path)
    block = manifest
    for key in _DATASET_BLOCK[kind]:
        block = block[key]
    check_dataset_matches(block, dataset, manifest_path)
    beyond = [index for index in _all_indices(manifest, kind) if not 0 <= index < len(dataset.labels)]
    if beyond:
        raise BenchmarkError(
            f"Split manifest {manifest_path} indexes image {beyond[0]}, but dataset '{block['name']}' has {len(dataset.labels)} images. "
            "Delete the manifest and rerun the split stage."
        )
    return manifest, dataset


def check_dataset_matches(block: dict[str, Any], dataset: PreparedDataset, manifest_path: str | Path) -> None:
    if block["content_sha256"] != dataset.content_sha256:
        raise BenchmarkError(
            f"{manifest_path} was written for dataset '{block['name']}' with content {block['content_sha256'][:12]}, "
            f"but the prepared data now hashes to {dataset.content_sha256[:12]}. Rerun the split stage."
        )


def shots_for(manifest: dict[str, Any], shots: int, draw: int) -> list[int]:
    by_k = manifest["target"]["shots"]
    if str(shots) not in by_k:
        raise BenchmarkError(f"Task '{manifest['name']}' has no split for K = {shots} (has {sorted(by_k, key=int)}). Add K to `shots`.")
    draws = by_k[str(shots)]
    return draws[draw % len(draws)]


def build_meta_manifest(
    source_manifest: dict[str, Any],
    dataset: PreparedDataset,
    unit: str,
    count: int,
    support_size: int,
    query_size: int,
    split_seed: int,
) -> dict[str, Any]:
    """Meta-training tasks drawn from a source's training images, written once for every meta-learner.

    A task is one `unit` of the source (a class, or the value of a class attribute such as Omniglot's
    `alphabet`) with disjoint support and query images. Tasks are drawn with a seeded generator, never with
    Python's global `random`, and meta-training walks through them in order.
    """
    indices = np.asarray(source_manifest["train"]["indices"])
    labels = dataset.labels[indices]
    if unit == "class":
        unit_of_image = np.asarray(dataset.class_names, dtype=object)[labels]
    elif unit in dataset.class_attributes:
        unit_of_image = np.asarray(dataset.class_attributes[unit], dtype=object)[labels]
    else:
        raise BenchmarkError(
            f"Meta-task unit '{unit}' is neither 'class' nor a class attribute of '{dataset.metadata['name']}' ({sorted(dataset.class_attributes)})."
        )
    members = {name: indices[unit_of_image == name] for name in sorted(set(unit_of_image))}
    needed = support_size + query_size
    usable = sorted(name for name, images in members.items() if len(images) >= needed)
    if not usable:
        raise BenchmarkError(f"No {unit} of source '{source_manifest['name']}' has {needed} images for support + query. Lower the sizes.")
    rng = _rng(split_seed, f"meta:{source_manifest['name']}:{unit}")
    tasks = []
    for _ in range(count):
        name = usable[int(rng.integers(len(usable)))]
        chosen = rng.choice(members[name], size=needed, replace=False)
        tasks.append({"unit": str(name), "support": [int(i) for i in chosen[:support_size]], "query": [int(i) for i in chosen[support_size:]]})
    return {
        "manifest_version": MANIFEST_VERSION,
        "kind": "meta",
        "source": {"name": source_manifest["name"], "manifest_sha256": sha256_json(source_manifest), "dataset": source_manifest["dataset"]},
        "unit": unit,
        "num_units": len(usable),
        "split_seed": split_seed,
        "support_size": support_size,
        "query_size": query_size,
        "tasks": tasks,
    }
