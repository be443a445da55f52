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
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
