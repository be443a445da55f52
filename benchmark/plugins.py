"""Plugin discovery shared by methods and dataset sources.

A plugin is a class with a `name` attribute that subclasses a base class. Plugins come from three places:
the project's own folder (`methods/`, `datasets/`), extra folders named in an environment variable, and
installed packages exposing an entry point. The folders are imported by file path under a private module
name, so a folder called `datasets/` never shadows the well-known `datasets` package.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TypeVar

from benchmark.errors import BenchmarkError

REPO_ROOT = Path(__file__).resolve().parents[1]

PluginT = TypeVar("PluginT", bound=type)


def import_file(path: Path, namespace: str) -> ModuleType:
    """Import one Python file under a unique private module name (stable for the same path)."""
    resolved = path.resolve()
    tag = hashlib.sha256(str(resolved).encode()).hexdigest()[:10]
    module_name = f"_ganbench_plugins.{namespace}.{resolved.stem}_{tag}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, resolved)
    if spec is None or spec.loader is None:
        raise BenchmarkError(f"Cannot import plugin file {resolved}: not a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise BenchmarkError(
            f"Plugin file {resolved} fails to import ({type(error).__name__}: {error}). Fix it, or move it out of {resolved.parent}."
        ) from error
    return module


def plugin_folders(default_folder: str, env_var: str) -> list[Path]:
    """The project's folder plus any extra folders listed (os.pathsep-separated) in `env_var`."""
    folders = [REPO_ROOT / default_folder]
    for entry in os.environ.get(env_var, "").split(os.pathsep):
        if entry.strip():
            folder = Path(entry).expanduser()
            if not folder.is_dir():
                raise BenchmarkError(f"{env_var} names {folder}, which is not a folder. Fix or unset {env_var}.")
            folders.append(folder)
    return folders


def discover(base: PluginT, folders: list[Path], entry_point_group: str, namespace: str) -> dict[str, PluginT]:
    """Map plugin name -> class. Two plugins with one name are an error that names both origins."""
    found: dict[str, PluginT] = {}
    origins: dict[str, str] = {}

    def add(cls: PluginT, origin: str) -> None:
        name = cls.name
        if name in found and found[name] is not cls:
            raise BenchmarkError(f"Two {namespace} plugins are named '{name}': {origins[name]} and {origin}. Rename one of them.")
        found[name] = cls
        origins[name] = origin

    for folder in folders:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            module = import_file(path, namespace)
            for value in vars(module).values():
                if (
                    isinstance(value, type)
                    and issubclass(value, base)
                    and value is not base
                    and value.__module__ == module.__name__
                    and getattr(value, "name", None)
                ):
                    add(value, str(path))
    for entry_point in importlib.metadata.entry_points(group=entry_point_group):
        try:
            value = entry_point.load()
        except Exception as error:
            package = entry_point.dist.name if entry_point.dist is not None else "an installed package"
            raise BenchmarkError(
                f"Entry point '{entry_point.name}' = {entry_point.value} in group {entry_point_group}, declared by {package}, "
                f"fails to load ({type(error).__name__}: {error}). Reinstall or uninstall {package}."
            ) from error
        if not (isinstance(value, type) and issubclass(value, base)):
            raise BenchmarkError(
                f"Entry point '{entry_point.name}' in group {entry_point_group} is {value!r}, "
                f"not a subclass of {base.__name__}. Fix the package that declares it."
            )
        add(value, f"entry point {entry_point.value}")
    return found


def lookup(registry: dict[str, PluginT], name: str, kind: str) -> PluginT:
    if name not in registry:
        available = ", ".join(sorted(registry)) or "(none)"
        raise BenchmarkError(f"Unknown {kind} '{name}'. Available: {available}.")
    return registry[name]
