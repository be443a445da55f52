"""`snakemake --lint` as a CI gate: the lints this workflow keeps on purpose are listed with the reason; any
other lint fails the run. (Snakemake 9.27 prints its lints as text only: `--lint json` is accepted but ignored.)

    .venv/bin/python scripts/lint_workflow.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

KEPT = {
    # Every rule runs in the one pinned environment that scripts/setup_env.sh builds (requirements.txt, plus
    # learn2learn built from its sdist, which a conda or container spec per rule could not do by itself);
    # environment.yml is the conda route to that same environment. One environment for all rules also keeps
    # the numbers of every stage from one set of package versions, which the records state.
    "Specify a conda environment or container for each rule.",
}


def lint_titles(output: str) -> dict[str, list[str]]:
    """Lint title -> the rules (or files) it was reported for, from Snakemake's text output."""
    found: dict[str, list[str]] = {}
    rule = "(workflow)"
    for line in output.splitlines():
        if heading := re.match(r"Lints for (?:rule (\S+)|snakefile (\S+?):?$)", line):
            rule = heading.group(1) or heading.group(2)
        elif title := re.match(r"    \* (.+):$", line):
            found.setdefault(title.group(1), []).append(rule)
    return found


def verdict(returncode: int, output: str) -> int:
    """0: linted, nothing beyond the kept lints; 1: other lints; 2: the workflow was not linted at all."""
    found = lint_titles(output)
    # Exit status 1 means "lints found" only when lints were printed; a workflow that does not even parse (a
    # configuration error, a syntax error) also exits with 1, and must not pass as lint-free.
    linted = (returncode == 1 and found) or (returncode == 0 and "Congratulations" in output)
    if not linted:
        print(output, file=sys.stderr)
        print(f"snakemake --lint did not lint the workflow (exit status {returncode}): see its output above", file=sys.stderr)
        return 2
    for title, rules in sorted(found.items()):
        print(f"{'kept' if title in KEPT else 'FAIL'}: {title} ({len(rules)} rules)")
    if set(found) - KEPT:
        print(output, file=sys.stderr)
        return 1
    print("snakemake --lint: no lints beyond the ones kept on purpose")
    return 0


def main() -> int:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=REPO)
    return verdict(result.returncode, result.stdout + result.stderr)


if __name__ == "__main__":
    sys.exit(main())
