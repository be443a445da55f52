# Two entry points (see README): `make benchmark` runs the default benchmark, `make test` the test suite.
# Both create the environment on first use (.venv, stamp-checked) and reuse it after.
VENV ?= .venv
CORES ?= 2
export VENV

.PHONY: benchmark test setup system-packages dry-run lint

benchmark: setup system-packages
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup system-packages
	$(VENV)/bin/python -m pytest -q -n $(CORES) --dist loadfile

setup:
	@bash scripts/setup_env.sh

system-packages:
	@bash scripts/install_system_packages.sh

dry-run: setup
	$(VENV)/bin/snakemake -n --cores $(CORES)

# Code style (ruff, configured in pyproject.toml) and the workflow's own lint (scripts/lint_workflow.py: any
# Snakemake lint beyond the ones it keeps on purpose, each with its reason, fails).
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python scripts/lint_workflow.py
