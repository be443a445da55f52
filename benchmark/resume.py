"""Checkpoint and resume for every training loop (GAN training and meta-training), written once.

A job's checkpoint holds its identity (everything that defines the run: settings, data hashes, seed), the state
of each model and optimiser, and the states of its random generators; a mid-run checkpoint also holds the job's
JSON-lines log up to its step (a workflow manager deletes a failed job's declared outputs, the log among them,
before it reruns the job). A job resumes only from a checkpoint of the same identity; one of another run is
refused with each changed key named. A resumed job's log holds each step once, as an uninterrupted job's does:
together with the restored random states, a job killed at any point ends bit-identical on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import torch

from benchmark.checkpoint import load_checkpoint, save_checkpoint
from benchmark.errors import BenchmarkError
from benchmark.io import atomic_write_text
from benchmark.layout import StageFolder

log = logging.getLogger(__name__)


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> Any: ...


def settings_differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What differs between a checkpoint's run identity and the current one, key by key."""
    current = json.loads(json.dumps(current))  # tuples -> lists, as the stored identity went through JSON
    keys = sorted(set(stored) | set(current))
    return [f"{key}: checkpoint {stored.get(key)!r} vs now {current.get(key)!r}" for key in keys if stored.get(key) != current.get(key)]


class TrainingState:
    """What a checkpoint of a training job captures, in the order it is stored.

    `parts` are models, optimisers and a method's own state (None: a part this run does not have, stored as None);
    `structure` is the models' structure when it is not the plain backbone's; `generators` are
    the job's own random generators. The global torch RNG state is always stored, last; a mid-run checkpoint then
    stores the job's log lines.
    """

    def __init__(
        self,
        identity: dict[str, Any],
        architecture: dict[str, Any],
        parts: dict[str, Stateful | None],
        generators: dict[str, torch.Generator],
        log: JsonLog,
        structure: dict[str, str] | None = None,
    ) -> None:
        self.identity = identity
        self.identity_json = json.dumps(identity, sort_keys=True)
        self.architecture = architecture
        self.parts = parts
        self.generators = generators
        self.log = log
        self.structure = structure  # the models' structure when not the plain backbone's (`checkpoint.model_structure`)

    def save(self, path: Path, step: int, mid_run: bool) -> None:
        """`mid_run`: a checkpoint to resume from, which carries the log too (the final one does not need it)."""
        self.log.write()
        payload: dict[str, Any] = {"step": step, "architecture": self.architecture, "identity_json": self.identity_json}
        if self.structure is not None:
            payload["structure"] = self.structure
        payload.update({name: part.state_dict() if part is not None else None for name, part in self.parts.items()})
        payload.update({name: generator.get_state() for name, generator in self.generators.items()})
        payload["torch_rng_state"] = torch.get_rng_state()
        if mid_run:
            payload["log_lines"] = list(self.log.lines)
        save_checkpoint(path, payload)

    def resume(self, candidates: Iterable[Path], device: torch.device, what: str) -> int:
        """Restore from the first existing checkpoint among `candidates`; returns its step (0: none exists).

        A checkpoint written by a run with another identity is refused, naming each changed key."""
        path = next((candidate for candidate in candidates if candidate.exists()), None)
        if path is None:
            return 0
        state = load_checkpoint(path, device)
        if state.get("status") == "diverged":
            raise BenchmarkError(
                f"{path} records a run that diverged at step {state.get('step')} ({state.get('reason')}). Delete the run folder "
                f"{path.parent} to run it again."
            )
        changed = settings_differences(json.loads(state["identity_json"]), self.identity)
        if changed:
            raise BenchmarkError(
                f"{path} belongs to a {what} with other settings ({'; '.join(changed)}). Delete the run folder "
                f"{path.parent} to start over, or restore the settings to resume."
            )
        if state.get("structure") != self.structure:
            raise BenchmarkError(
                f"{path} holds models of structure {state.get('structure') or 'plain backbone'}, but this {what} builds "
                f"{self.structure or 'the plain backbone'}. Delete the run folder {path.parent} to start over."
            )
        for name, part in self.parts.items():
            if part is not None:
                part.load_state_dict(state[name])
        for name, generator in self.generators.items():
            generator.set_state(state[name])
        torch.set_rng_state(state["torch_rng_state"])
        step = int(state["step"])
        # The log as it stood at the checkpoint: from the checkpoint itself ("records" in meta-training's older
        # format), else from the log file, cut back to the step.
        lines = state.get("log_lines", state.get("records"))
        if lines is not None:
            self.log.lines = list(lines)
        else:
            self.log.keep_until(step)
        return step


class JsonLog:
    """A job's JSON-lines log: one sorted-key JSON object per line, rewritten whole and atomically."""

    def __init__(self, path: Path, step_key: str = "step") -> None:
        self.path = path
        self.step_key = step_key
        self.lines: list[str] = []

    def append(self, record: dict[str, Any]) -> None:
        self.lines.append(json.dumps(record, sort_keys=True))

    def write(self) -> None:
        atomic_write_text(self.path, "".join(line + "\n" for line in self.lines))

    def keep_until(self, step: int) -> None:
        """Reload the log as it stood at a checkpoint: lines written after `step` are written again on resume."""
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            self.lines = [line for line in lines if json.loads(line)[self.step_key] <= step]


@contextlib.contextmanager
def job_folder(path: Path) -> Iterator[StageFolder]:
    """A training job's output folder, never left with a failed job's partial outputs.

    When the job fails, and no checkpoint (`resume.pt` mid-run, or `checkpoint.pt`) is there for a rerun to continue
    from, the files of the folder's own kind that the job created are removed (never a file that was there before,
    nor anything else in the folder), and then the folder itself if that leaves it empty, as it was or as a
    workflow manager made it before the job."""
    folder = StageFolder(path)
    before = set(folder.own_entries())
    try:
        yield folder
    except BaseException:
        if folder.path.is_dir() and not folder.resume.exists() and not folder.checkpoint.exists():
            for entry in folder.own_entries():
                if entry not in before:
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
            if not any(folder.path.iterdir()):
                folder.path.rmdir()
        raise
