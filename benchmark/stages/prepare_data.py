"""Stage `prepare_data`: one dataset source converted to the canonical prepared form (uint8 N x C x H x W)."""

from __future__ import annotations

import logging
from pathlib import Path

from benchmark.data import prepare_dataset
from benchmark.settings import PrepareDataSettings

log = logging.getLogger(__name__)


def prepare_data(name: str, settings: PrepareDataSettings, output: Path) -> None:
    """Write `output` (.npz) and its metadata beside it."""
    dataset = prepare_dataset(name, settings.source, settings.options, settings.image_size, settings.channels)
    dataset.save(output)
    log.info("prepared '%s': %d images, %d classes", name, len(dataset.labels), len(dataset.class_names))
