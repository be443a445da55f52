"""The preamble of every training and evaluation stage, written once: the job's split manifest, the prepared
dataset it indexes (checked to be the dataset the manifest was written for), the device, and the backbone
sized to that dataset's images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.data import PreparedDataset
from benchmark.models import Architecture
from benchmark.provenance import resolve_device
from benchmark.splits import load_split


@dataclass(frozen=True)
class StageInputs:
    manifest: dict[str, Any]
    dataset: PreparedDataset
    device: torch.device
    arch: Architecture | None  # None when the stage takes its architecture from elsewhere (a run's record)


def open_stage_inputs(manifest: Path, kind: str, dataset: Path, device: str, architecture: dict[str, Any] | None = None) -> StageInputs:
    """`kind`: the manifest's kind (source, task or meta); `architecture`: the config's section, if the stage builds models."""
    split, prepared = load_split(manifest, kind, dataset)
    arch = Architecture.for_dataset(prepared.metadata, architecture) if architecture is not None else None
    return StageInputs(split, prepared, resolve_device(device), arch)
