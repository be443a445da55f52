"""Atomic file writes: a result or checkpoint is either complete or absent, after a crash of the process or of the
machine.

Each file is written to a temporary file in its own folder, flushed to disk (`fsync`), given the mode the umask
asks for (a temporary file is created private, 0600, and the rename would keep that), and renamed into place.
Files that belong together (a prepared dataset's arrays and its metadata) are written as one unit: a failed
write leaves none of them in place. (A process killed between their renames can leave the first without the
second; readers check that they match, as `PreparedDataset.load` does with the content hash.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmark.errors import BenchmarkError


def _file_mode() -> int:
    """The mode a plain `open(path, "w")` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _sync(path: str | os.PathLike[str]) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _temporary_beside(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    return tmp


def _write_unit(writes: dict[Path, Callable[[str], None]]) -> None:
    """Write every file to a temporary, make each durable, then rename them all; on any failure, remove the
    temporaries and the files this call already renamed into place, so that none of the unit is left."""
    temporaries: dict[Path, str] = {}
    placed: list[Path] = []
    try:
        for path, write in writes.items():
            temporaries[path] = _temporary_beside(path)
            write(temporaries[path])
            os.chmod(temporaries[path], _file_mode())
            _sync(temporaries[path])
        for path, tmp in temporaries.items():
            os.replace(tmp, path)
            placed.append(path)
        for folder in {path.parent for path in writes}:
            _sync(folder)  # the renames themselves survive a machine crash
    except BaseException:
        for tmp in temporaries.values():
            if os.path.exists(tmp):
                os.unlink(tmp)
        if len(placed) < len(writes):
            for path in placed:
                path.unlink(missing_ok=True)
        raise


def _bytes_writer(data: bytes) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as handle:
            handle.write(data)

    return write


def atomic_write_files(files: dict[str | os.PathLike[str], bytes]) -> None:
    """Several files as one unit: a failure before the last rename leaves none of them in place (earlier versions
    of the files not yet replaced stay)."""
    _write_unit({Path(path): _bytes_writer(data) for path, data in files.items()})


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    _write_unit({Path(path): _bytes_writer(data)})


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode())


def json_bytes(value: Any) -> bytes:
    """The JSON form every record and metadata file is written in: indented, sorted keys, a final newline."""
    return (json.dumps(value, indent=1, sort_keys=True) + "\n").encode()


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    atomic_write_bytes(path, json_bytes(value))


def atomic_save(path: str | os.PathLike[str], save: Callable[[str], None]) -> None:
    """Run `save(tmp_path)` (e.g. safetensors' save_file) and move the result into place."""
    _write_unit({Path(path): save})


# ---- output folders -------------------------------------------------------------------------------------------------
FOLDER_MANIFEST = ".ganbench-files.json"  # the files a command wrote into its output folder, so only they are replaced


def check_apart(output: str | os.PathLike[str], option: str, inputs: Iterable[tuple[str, str | os.PathLike[str] | None]]) -> None:
    """Refuse an output that is one of the inputs, contains one, or lies inside one: writing it would overwrite or
    delete what the command reads (`ganbench paper --input-dir results --output-dir results`). `inputs`: (option,
    path) of each input (path None: not given)."""
    target = Path(output).resolve()
    for name, path in inputs:
        if path is None:
            continue
        source = Path(path).resolve()
        if target == source:
            relation = "is"
        elif source.is_relative_to(target):
            relation = "contains"
        elif target.is_relative_to(source) and source.is_dir():
            relation = "lies inside"
        else:
            continue
        raise BenchmarkError(
            f"{option} {output} {relation} the input {path} ({name}): writing it would overwrite what the command reads. "
            f"Name a separate {option}, outside the inputs."
        )


def replace_folder(staging: Path, output: Path) -> list[Path]:
    """Move the files rendered into `staging` to `output` and record them in its manifest (`FOLDER_MANIFEST`).
    Only what the previous run of the command wrote there (its manifest) is replaced; files of anyone else stay, and
    a non-empty folder without a manifest is refused, since nothing says its files are the command's to delete.
    `output` is replaced in one rename where it held nothing else. Returns the files written, under `output`."""
    written = sorted((path.relative_to(staging) for path in staging.rglob("*") if path.is_file()), key=str)
    (staging / FOLDER_MANIFEST).write_text(json.dumps([str(path) for path in written], indent=1) + "\n")
    if output.is_symlink() or (output.exists() and not output.is_dir()):
        raise BenchmarkError(f"{output} exists and is not a folder. Name a new or empty folder for the outputs, or remove {output}.")
    existing = sorted(path for path in output.rglob("*") if not path.is_dir()) if output.exists() else []
    if existing and not (output / FOLDER_MANIFEST).is_file():
        raise BenchmarkError(
            f"{output} holds {len(existing)} files that no earlier run of this command wrote (it has no {FOLDER_MANIFEST}): "
            "they are not the command's to replace. Name a new or empty folder, or empty this one yourself."
        )
    ours = set()
    if existing:
        try:
            ours = {output / name for name in json.loads((output / FOLDER_MANIFEST).read_text())} | {output / FOLDER_MANIFEST}
        except (ValueError, TypeError) as error:
            raise BenchmarkError(f"{output / FOLDER_MANIFEST} is damaged ({error}). Empty {output} yourself and run again.") from error
    if set(existing) <= ours:  # nothing but our own files: swap the folders in one rename
        if output.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output.name}.old.", dir=output.parent))
            os.replace(output, retired / output.name)
            os.replace(staging, output)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output)
        return [output / path for path in written]
    for path in sorted(ours & set(existing)):  # someone else's files beside ours: replace ours, one by one
        path.unlink()
        for folder in path.parents:  # and the folders that held only ours
            if folder == output or any(folder.iterdir()):
                break
            folder.rmdir()
    for path in [*written, Path(FOLDER_MANIFEST)]:
        (output / path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / path, output / path)
    shutil.rmtree(staging, ignore_errors=True)
    return [output / path for path in written]
