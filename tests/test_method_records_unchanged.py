"""The existing methods give bit-identical results across changes of the training loop and the plugin API.

`tests/fixtures/method_fingerprints.json` was written by this module at commit 90fb919, before the plugin API
grew model structures, method state and noise hooks (issue 13): per method, a SHA-256 of every tensor of its
final checkpoint and of its evaluation records' (checkpoint, step, metric, value) rows, from a short adaptation
on the digits task. A change that moves any number of any existing method fails here; a deliberately broken
loop (one extra random draw per step) fails it in the last test. To rewrite the fixture after an intended
change of results, run `GANBENCH_WRITE_FINGERPRINTS=1 pytest tests/test_method_records_unchanged.py` and say
why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from benchmark.methods import Method
from benchmark.settings import AdaptSettings, EvaluateSettings
from benchmark.stages.adapt import adapt
from benchmark.stages.evaluate import evaluate
from conftest import TINY_DIGIT_ARCH, adapt_settings, write_source_checkpoint

FIXTURE = Path(__file__).parent / "fixtures" / "method_fingerprints.json"
METHODS = ("scratch", "finetune", "freeze_d", "l2sp", "ewc", "maml_gan", "reptile", "finetune+diffaug")
TRAIN = {"steps": 6, "batch_size": 8, "eval_steps": [0, 2], "eval_every": 4, "checkpoint_every": 3, "log_every": 2}


def _digest(values: object) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _tensor_digest(payload: dict) -> str:
    hasher = hashlib.sha256()
    for part in ("generator", "generator_ema", "discriminator"):
        for name, tensor in sorted((payload.get(part) or {}).items()):
            hasher.update(f"{part}.{name}".encode())
            hasher.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hasher.hexdigest()


def fingerprint(method: str, task_files: dict, folder: Path) -> dict[str, str]:
    source = write_source_checkpoint(folder / "source.pt", TINY_DIGIT_ARCH)
    settings = adapt_settings(method, train=TRAIN)
    artefacts = {"source_checkpoint": source, "meta_checkpoint": source}
    run_dir = folder / method
    adapt(AdaptSettings.from_dict(settings), task_files["manifest"], task_files["data"], task_files["encoder"], artefacts, run_dir)
    records = evaluate(
        EvaluateSettings.from_dict({"evaluation": settings["evaluation"], "device": "cpu", "oracle_draws": False}),
        run_dir, task_files["manifest"], task_files["data"], task_files["encoder"], folder / f"{method}.json",
    )  # fmt: skip
    rows = [(r["checkpoint"], r["checkpoint_step"], r["metric"], r["value"]) for r in records]
    return {"checkpoint": _tensor_digest(torch.load(run_dir / "checkpoint.pt", weights_only=True)), "records": _digest(rows)}


@pytest.fixture(scope="module")
def fingerprints(task_files, tmp_path_factory) -> dict[str, dict[str, str]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same reduction order on any machine of this kind
    try:
        folder = tmp_path_factory.mktemp("fingerprints")
        found = {method: fingerprint(method, task_files, folder) for method in METHODS}
    finally:
        torch.set_num_threads(threads)
    if os.environ.get("GANBENCH_WRITE_FINGERPRINTS"):
        FIXTURE.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    return found


@pytest.mark.parametrize("method", METHODS)
def test_existing_method_gives_the_records_and_weights_it_gave_before(method, fingerprints):
    expected = json.loads(FIXTURE.read_text())
    assert fingerprints[method] == expected[method]


def test_one_extra_random_draw_per_step_changes_the_fingerprints(task_files, tmp_path, monkeypatch, one_thread):
    """The check above would catch a loop that draws its noise differently: here each D update's augmentation
    hook consumes one extra number of the run's sampler, and finetune's fingerprint no longer matches."""
    original = Method.augment

    def drawing(self, images, rng):
        torch.rand(1, generator=rng)
        return original(self, images, rng)

    monkeypatch.setattr(Method, "augment", drawing)
    expected = json.loads(FIXTURE.read_text())["finetune"]
    found = fingerprint("finetune", task_files, tmp_path)
    assert found["checkpoint"] != expected["checkpoint"] and found["records"] != expected["records"]
