# Two entry points (see README): `make benchmark` runs the default benchmark, `make test` the test suite.
# Both create the environment on first use (.venv, stamp-checked) and reuse it after.
VENV ?= .venv
CORES ?= 2
export VENV

.PHONY: benchmark test setup system-data dry-run lint

benchmark: setup system-data
	$(VENV)/bin/snakemake --cores $(CORES)

test: setup system-data
	$(VENV)/bin/python -m pytest -q

setup:
	@bash scripts/setup_env.sh

system-data:
	@bash scripts/install_system_data.sh

dry-run: setup
	$(VENV)/bin/snakemake -n --cores $(CORES)

# Code style (ruff, configured in pyproject.toml) and the workflow's own lint (scripts/lint_workflow.py: any
# Snakemake lint beyond the ones it keeps on purpose, each with its reason, fails).
lint: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python scripts/lint_workflow.py
