"""The sweep draws of every method, pinned (kept apart from tests/test_sweep.py so that mutation testing of the
method files runs only this fast test)."""

from __future__ import annotations

import json
import os

import yaml

from benchmark.config import validate_config
from benchmark.methods import methods
from benchmark.plan import method_hparams
from conftest import REPO

DRAWS_FIXTURE = REPO / "tests" / "fixtures" / "sweep_draws.json"


def test_every_methods_draws_are_the_ones_published_runs_used():
    """Draws 1-3 (sweep seed 0) of every registered method, stored when sweeps were introduced: a published sweep
    can be rerun with the same settings. A changed search range, scale or seeding fails here (e.g. l2sp's
    lambda_g drawn from (1e-5, 2.0) instead of (1e-5, 1.0)). After a deliberate change, regenerate with
    GANBENCH_WRITE_DRAWS=1 and say so in the change."""
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    config["adapt"]["method_hparams"], config["sweep"] = {}, {"n_hparams": 3}
    config = validate_config(config)
    found = {name: [method_hparams(config, name, draw) for draw in (1, 2, 3)] for name in sorted(methods())}
    if os.environ.get("GANBENCH_WRITE_DRAWS"):
        DRAWS_FIXTURE.write_text(json.dumps(found, indent=1, sort_keys=True) + "\n")
    assert found == json.loads(DRAWS_FIXTURE.read_text())
