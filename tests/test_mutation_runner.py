"""The mutation-testing script's mutant finder (scripts/mutation_test.py): what it changes and what it leaves alone."""

from __future__ import annotations

import ast
import importlib.util
import sys

from conftest import REPO

spec = importlib.util.spec_from_file_location("mutation_test", REPO / "scripts" / "mutation_test.py")
mutation_test = importlib.util.module_from_spec(spec)
sys.modules["mutation_test"] = mutation_test  # dataclasses look their module up there
spec.loader.exec_module(mutation_test)

SOURCE = '''"""Docstring 1 < 2."""
import math


def f(a: int = 3, b: float = 0.5) -> float:
    """Not mutated: 1 + 1."""
    log.info("not mutated %d", 1 + 1)
    if a >= 2 and not b:
        raise ValueError(f"not mutated {a + 1}")
    total = min(a, 2) * b  # comment with a - sign
    total += (a - 1)
    return -total  # pragma: no mutate
'''


def changes(source: str) -> set[str]:
    finder = mutation_test.MutantFinder("snippet.py", source.encode())
    finder.visit(ast.parse(source))
    return {f"{m.line}: {m.change}" for m in finder.mutants}


def test_finder_mutates_code_and_leaves_text_logging_raises_and_marked_lines_alone():
    assert changes(SOURCE) == {
        "5: 3 -> 4", "5: 3 -> 0", "5: 0.5 -> 1.0", "5: 0.5 -> 0.0",
        "8: >= -> >", "8: >= -> <=", "8: 2 -> 3", "8: 2 -> 0", "8: and -> or", "8: not b -> (b)",
        "10: min -> max", "10: 2 -> 3", "10: 2 -> 0", "10: * -> /", "10: min(a, 2) * b -> (min(a, 2))", "10: min(a, 2) * b -> (b)",
        "11: += -> =", "11: += -> -=", "11: total += (a - 1) -> pass", "11: - -> +", "11: 1 -> 2", "11: 1 -> 0",
    }  # fmt: skip


def test_every_mutant_of_a_core_module_parses_and_changes_the_source():
    path = "benchmark/regularisers.py"
    source = (REPO / path).read_bytes()
    mutants = mutation_test.find_mutants(path)
    assert len(mutants) > 10
    for mutant in mutants:
        mutated = mutant.apply(source)
        assert mutated != source
        ast.parse(mutated)
