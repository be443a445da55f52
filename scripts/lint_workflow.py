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
    """Lint title -> the rules it was reported for, from Snakemake's text output."""
    found: dict[str, list[str]] = {}
    rule = "(workflow)"
    for line in output.splitlines():
        if heading := re.match(r"Lints for (?:rule )?(\S+)", line):
            rule = heading.group(1)
        elif title := re.match(r"    \* (.+):$", line):
            found.setdefault(title.group(1), []).append(rule)
    return found


def main() -> int:
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], capture_output=True, text=True, cwd=REPO)
    output = result.stdout + result.stderr
    if result.returncode not in (0, 1) or "Traceback" in output:
        print(output, file=sys.stderr)
        return 2
    found = lint_titles(output)
    unexplained = {title: rules for title, rules in found.items() if title not in KEPT}
    for title, rules in sorted(found.items()):
        print(f"{'kept' if title in KEPT else 'FAIL'}: {title} ({len(rules)} rules)")
    if unexplained:
        print(output, file=sys.stderr)
        return 1
    print("snakemake --lint: no lints beyond the ones kept on purpose")
    return 0


if __name__ == "__main__":
    sys.exit(main())
