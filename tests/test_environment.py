"""The environment: pins agree between pip and conda files, match what is installed, and learn2learn is quiet."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys

import yaml

from conftest import REPO


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    return pins


def _script_versions() -> dict[str, str]:
    script = (REPO / "scripts" / "setup_env.sh").read_text()
    return {
        "learn2learn": re.search(r"^L2L_VERSION=(\S+)", script, re.M).group(1),
        "mlxtend": re.search(r"^MLXTEND_VERSION=(\S+)", script, re.M).group(1),
    }


def test_environment_yml_and_requirements_agree():
    requirements = _pins((REPO / "requirements.txt").read_text().splitlines())
    environment = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(item["pip"] for item in environment["dependencies"] if isinstance(item, dict))
    assert _pins(pip_section) == requirements
    assert "python=3.11" in environment["dependencies"]
    header = (REPO / "environment.yml").read_text()
    for name, version in _script_versions().items():
        assert f"{name} {version}" in header, f"environment.yml must mention {name} {version} (set-up script)"


def test_installed_versions_match_the_pins():
    expected = _pins((REPO / "requirements.txt").read_text().splitlines()) | _script_versions()
    for name, version in expected.items():
        installed = importlib.metadata.version(name)
        assert installed.split("+")[0] == version, f"{name}: installed {installed}, pinned {version}"


def test_import_learn2learn_prints_nothing():
    result = subprocess.run([sys.executable, "-c", "import learn2learn"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
