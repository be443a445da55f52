"""Stage `split`: the split manifests every later stage reads, written once and deterministic to the byte.

`split_source` (a source domain's training images), `split_task` (a task's reference set, validation split,
shot pool and the K shots of each draw) and `split_meta` (a source's meta-training tasks). What the manifests
hold and how they are drawn: `benchmark.splits`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from benchmark.data import PreparedDataset
from benchmark.settings import SplitMetaSettings, SplitSourceSettings, SplitTaskSettings
from benchmark.splits import build_meta_manifest, build_source_manifest, build_task_manifest, load_split, write_manifest

log = logging.getLogger(__name__)


def split_source(name: str, settings: SplitSourceSettings, dataset: Path, output: Path) -> None:
    manifest = build_source_manifest(name, settings.spec, PreparedDataset.load(dataset), settings.split_seed)
    write_manifest(output, manifest)
    log.info("source '%s': %d training images", name, manifest["train"]["count"])


def split_task(name: str, settings: SplitTaskSettings, source_manifest: Path, source_dataset: Path, dataset: Path, output: Path) -> None:
    """`dataset` is the task's target dataset; `source_dataset` the one the source manifest indexes (the same file
    or another), read to refuse target images that are also source training images."""
    source, source_data = load_split(source_manifest, "source", source_dataset)
    target = PreparedDataset.load(dataset)
    manifest = build_task_manifest(name, settings.spec, source, source_data, target, settings.shots, settings.split_draws, settings.split_seed)
    write_manifest(output, manifest)
    blocks = manifest["target"]
    log.info(
        "task '%s': reference %d, validation %d, shot pool %d images",
        name, blocks["reference"]["count"], blocks["validation"]["count"], blocks["shot_pool"]["count"],
    )  # fmt: skip


def split_meta(settings: SplitMetaSettings, source_manifest: Path, dataset: Path, output: Path) -> None:
    source, data = load_split(source_manifest, "source", dataset)
    meta = settings.meta
    manifest = build_meta_manifest(source, data, meta["unit"], meta["count"], meta["support_size"], meta["query_size"], settings.split_seed)
    write_manifest(output, manifest)
    log.info("meta-tasks of source '%s': %d tasks over %d %s units", source["name"], len(manifest["tasks"]), manifest["num_units"], manifest["unit"])
