"""Mutation testing of the core numerical code: do the tests notice a small deliberate bug?

Each mutant is one small change to one module (a flipped comparison, a swapped operator, a dropped factor, a
changed constant, a deleted statement, min for max). The tests that cover that module (`TARGETS`) run against it
in a scratch copy of the repository; the mutant is killed when they fail (or time out), and survives when they
pass. Survivors that cannot change a result, or change nothing a user sees, are listed in
`scripts/mutation_accepted.yaml` with the reason; the report shows every survivor with its diff and, where there is
one, that reason.

    .venv/bin/python scripts/mutation_test.py                     # every target, 2 workers; writes reports/mutation.md
    .venv/bin/python scripts/mutation_test.py --module benchmark/results.py --jobs 1
    .venv/bin/python scripts/mutation_test.py --list              # the mutants only, nothing runs
    .venv/bin/python scripts/mutation_test.py --rebuild           # the report again from the saved outcomes

Not part of CI (about 15 minutes on 2 cores). Why a runner of our own: mutmut and cosmic-ray mutate a
whole package against one test command, while each of these modules has its own fast tests, and the plugins in
`methods/` are loaded from files rather than imported as a package.
"""

from __future__ import annotations

import argparse
import ast
import concurrent.futures
import difflib
import importlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ACCEPTED_FILE = REPO / "scripts" / "mutation_accepted.yaml"

# Module -> the fast tests that cover it (the tests a developer would run after editing it). Tests marked `slow`
# are left out of every run; the metric tests that need a trained encoder come after the fast known-value ones.
METRIC_TESTS = ("tests/test_metric_values.py", "tests/test_metric_validation.py")
METHOD_TESTS = (
    "tests/test_sweep_draws.py",
    "tests/test_penalties.py",
    "tests/test_method_defaults.py",
    "tests/test_adaptation_methods.py",
    "tests/test_method_fidelity.py",
)
META_TESTS = ("tests/test_sweep_draws.py", "tests/test_meta_values.py", "tests/test_method_defaults.py", "tests/test_meta.py")
TARGETS: dict[str, tuple[str, ...]] = {
    "benchmark/results.py": ("tests/test_results_table.py", "tests/test_sweep.py"),
    "benchmark/comparison.py": ("tests/test_comparison.py", "tests/test_results_table.py", "tests/test_paper.py"),
    "benchmark/regularisers.py": ("tests/test_penalties.py",),
    "benchmark/splits.py": ("tests/test_split_values.py", "tests/test_splits.py"),
    "benchmark/augment.py": ("tests/test_augment.py",),
    "benchmark/metrics/fidelity.py": METRIC_TESTS,
    "benchmark/metrics/diversity.py": METRIC_TESTS,
    "benchmark/metrics/modes.py": METRIC_TESTS,
    "benchmark/metrics/perceptual.py": METRIC_TESTS,
    "benchmark/meta_learning.py": ("tests/test_meta_learning_values.py", *META_TESTS),
    "benchmark/training.py": (
        "tests/test_training_values.py",
        "tests/test_training.py",
        "tests/test_selection.py",
        "tests/test_adaptation_methods.py",
        "tests/test_added_networks.py",
    ),
    "methods/ewc.py": METHOD_TESTS,
    "methods/l2sp.py": METHOD_TESTS,
    "methods/freeze_d.py": METHOD_TESTS,
    "methods/finetune.py": METHOD_TESTS,
    "methods/scratch.py": ("tests/test_method_defaults.py",),
    "methods/reptile.py": META_TESTS,
    "methods/maml_gan.py": META_TESTS,
    "benchmark/fetch.py": ("tests/test_fetch.py",),
    "benchmark/sweep.py": ("tests/test_sweep.py", "tests/test_sweep_draws.py"),
    "benchmark/hparam_selection.py": ("tests/test_sweep.py",),
    "benchmark/paper/tables.py": ("tests/test_paper.py",),
    "benchmark/paper/aggregate.py": ("tests/test_paper.py",),
    "benchmark/paper/power.py": ("tests/test_paper.py",),
    "benchmark/batched.py": ("tests/test_batched.py",),
    "benchmark/devices.py": ("tests/test_devices.py",),
    "benchmark/paper/compare.py": ("tests/test_paper.py",),
    "benchmark/paper/inputs.py": ("tests/test_paper.py",),
    "datasets/medmnist.py": ("tests/test_medmnist.py", "tests/test_fetch.py"),
    "methods/minegan.py": ("tests/test_added_networks.py", "tests/test_sweep_draws.py"),
    "methods/cdc.py": ("tests/test_added_networks.py", "tests/test_sweep_draws.py"),
    "methods/adafm.py": ("tests/test_added_networks.py", "tests/test_sweep_draws.py"),
}

COMPARISON_SWAPS = {
    ast.Lt: ("<", ("<=", ">")),
    ast.LtE: ("<=", ("<", ">=")),
    ast.Gt: (">", (">=", "<")),
    ast.GtE: (">=", (">", "<=")),
    ast.Eq: ("==", ("!=",)),
    ast.NotEq: ("!=", ("==",)),
    ast.Is: ("is", ("is not",)),
    ast.IsNot: ("is not", ("is",)),
    ast.In: ("in", ("not in",)),
    ast.NotIn: ("not in", ("in",)),
}
OPERATOR_SWAPS = {
    ast.Add: ("+", ("-",)),
    ast.Sub: ("-", ("+",)),
    ast.Mult: ("*", ("/",)),
    ast.Div: ("/", ("*",)),
    ast.FloorDiv: ("//", ("*",)),
    ast.Mod: ("%", ("//",)),
    ast.Pow: ("**", ("*",)),
    ast.BitAnd: ("&", ("|",)),
    ast.BitOr: ("|", ("&",)),
}
NAME_SWAPS = {"min": "max", "max": "min", "argmin": "argmax", "argmax": "argmin", "any": "all", "all": "any", "sqrt": "square"}
LOGGERS = {"log", "logger", "logging", "warnings"}
NO_MUTATE = "pragma: no mutate"


@dataclass(frozen=True)
class Mutant:
    path: str  # relative to the repository
    line: int
    start: int  # byte offsets into the file
    stop: int
    replacement: str
    operator: str
    original: str
    line_text: str  # the mutated line as it stood when the mutants were found (whitespace collapsed)
    occurrence: int = 1  # the n-th mutant of this line with this same change, left to right
    diff: str = ""

    @property
    def key(self) -> tuple[str, str, str, int]:
        """How the accepted list names the mutant: file, line text, change and occurrence."""
        return self.path, self.line_text, self.change, self.occurrence

    @property
    def change(self) -> str:
        """How the mutant is named in the accepted list: the original text, an arrow, the replacement."""
        return f"{' '.join(self.original.split())} -> {' '.join(self.replacement.split())}"

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.stop :]


class MutantFinder(ast.NodeVisitor):
    """Every mutant of one module. Left alone: docstrings, annotations, f-strings, `raise` statements (their
    conditions are mutated; their messages are text), logging calls, imports and lines marked `# pragma: no mutate`."""

    def __init__(self, path: str, source: bytes) -> None:
        self.path, self.source = path, source
        self.line_starts = [0]
        for line in source.split(b"\n"):
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self.lines = source.decode().split("\n")  # the same line breaks as the byte offsets above
        self.mutants: list[Mutant] = []

    # -- positions -----------------------------------------------------------------------------------------------
    def offset(self, line: int, column: int) -> int:
        return self.line_starts[line - 1] + column  # ast columns are UTF-8 byte offsets

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(node.end_lineno, node.end_col_offset)

    def text(self, start: int, stop: int) -> str:
        return self.source[start:stop].decode()

    def add(self, line: int, start: int, stop: int, replacement: str, operator: str) -> None:
        if NO_MUTATE in self.lines[line - 1]:
            return
        self.mutants.append(
            Mutant(self.path, line, start, stop, replacement, operator, self.text(start, stop), " ".join(self.lines[line - 1].split()))
        )

    def token_between(self, left: ast.AST, right: ast.AST, token: str) -> tuple[int, int] | None:
        """Byte span of `token` in the gap between two sibling nodes (parentheses and comments may sit there too)."""
        start, stop = self.span(left)[1], self.span(right)[0]
        gap = self.source[start:stop].decode()
        code = gap.split("#")[0] if "\n" not in gap else gap
        words = code.replace("(", " ").replace(")", " ").split()
        if " ".join(words) != token:
            return None
        position = gap.index(token.split()[0])
        end = position + len(token) if " " not in token else gap.index(token.split()[-1], position) + len(token.split()[-1])
        return start + len(gap[:position].encode()), start + len(gap[:end].encode())

    # -- skipped subtrees ----------------------------------------------------------------------------------------
    def visit_Import(self, node: ast.AST) -> None:
        return

    visit_ImportFrom = visit_Import
    visit_JoinedStr = visit_Import
    visit_Raise = visit_Import

    def visit_Expr(self, node: ast.Expr) -> None:
        if isinstance(node.value, ast.Constant):  # a docstring
            return
        if isinstance(node.value, ast.Call) and _is_logging(node.value):
            return
        self.delete_statement(node)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)

    def visit_arg(self, node: ast.arg) -> None:
        return  # annotations only

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        for statement in node.body:
            self.visit(statement)

    visit_AsyncFunctionDef = visit_FunctionDef

    # -- mutations -----------------------------------------------------------------------------------------------
    def delete_statement(self, node: ast.stmt) -> None:
        start, stop = self.span(node)
        self.add(node.lineno, start, stop, "pass", "statement deleted")

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        symbol = OPERATOR_SWAPS.get(type(node.op), (None, ()))[0]
        if symbol:
            span = self.token_between(node.target, node.value, symbol + "=")
            if span:
                self.add(node.lineno, *span, "=", "augmented assignment replaced by assignment")
                for other in OPERATOR_SWAPS[type(node.op)][1]:
                    self.add(node.lineno, *span, other + "=", "operator swapped")
        self.delete_statement(node)
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        symbol, others = OPERATOR_SWAPS.get(type(node.op), (None, ()))
        span = self.token_between(node.left, node.right, symbol) if symbol else None
        if span:
            for other in others:
                self.add(node.lineno, *span, other, "operator swapped")
        start, stop = self.span(node)
        if isinstance(node.op, ast.Mult | ast.Div):
            self.add(node.lineno, start, stop, f"({self.text(*self.span(node.left))})", "factor dropped")
        if isinstance(node.op, ast.Mult):
            self.add(node.lineno, start, stop, f"({self.text(*self.span(node.right))})", "factor dropped")
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for index, op in enumerate(node.ops):
            symbol, others = COMPARISON_SWAPS[type(op)]
            span = self.token_between(operands[index], operands[index + 1], symbol)
            if span:
                for other in others:
                    self.add(node.lineno, *span, other, "comparison swapped")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        symbol, other = ("and", "or") if isinstance(node.op, ast.And) else ("or", "and")
        for left, right in zip(node.values, node.values[1:]):
            span = self.token_between(left, right, symbol)
            if span:
                self.add(left.end_lineno, *span, other, "boolean operator swapped")
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.USub | ast.Not | ast.Invert):
            start, stop = self.span(node)
            self.add(node.lineno, start, stop, f"({self.text(*self.span(node.operand))})", "unary operator dropped")
            if isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
                return  # -1 is a constant too: mutating its digits again repeats the above
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value, start_stop = node.value, self.span(node)
        if isinstance(value, bool):
            self.add(node.lineno, *start_stop, str(not value), "constant changed")
        elif isinstance(value, int):
            for other in dict.fromkeys([value + 1, 0 if value != 0 else 2]):
                self.add(node.lineno, *start_stop, str(other), "constant changed")
        elif isinstance(value, float):
            for other in dict.fromkeys([value * 2 if value else 1.0, 0.0 if value else 0.5]):
                self.add(node.lineno, *start_stop, repr(other), "constant changed")

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in NAME_SWAPS and isinstance(node.ctx, ast.Load):
            self.add(node.lineno, *self.span(node), NAME_SWAPS[node.id], "function swapped")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in NAME_SWAPS:
            stop = self.span(node)[1]
            start = stop - len(node.attr.encode())
            self.add(node.end_lineno, start, stop, NAME_SWAPS[node.attr], "function swapped")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        if _is_logging(node):
            return
        self.generic_visit(node)


def _is_logging(call: ast.Call) -> bool:
    function = call.func
    while isinstance(function, ast.Attribute):
        function = function.value
    return isinstance(function, ast.Name) and function.id in LOGGERS


def find_mutants(path: str) -> list[Mutant]:
    source = (REPO / path).read_bytes()
    finder = MutantFinder(path, source)
    finder.visit(ast.parse(source))
    mutants: list[Mutant] = []
    seen: Counter = Counter()
    for mutant in sorted(set(finder.mutants), key=lambda m: (m.start, m.stop, m.replacement)):
        mutated = mutant.apply(source)
        try:
            ast.parse(mutated)
        except SyntaxError:
            continue  # e.g. `pass` where an expression statement was the body's value
        seen[mutant.line, mutant.change] += 1
        mutants.append(replace(mutant, occurrence=seen[mutant.line, mutant.change], diff=unified_diff(path, source, mutated)))
    return mutants


def unified_diff(path: str, before: bytes, after: bytes) -> str:
    lines = difflib.unified_diff(before.decode().splitlines(), after.decode().splitlines(), path, path, n=0, lineterm="")
    return "\n".join(list(lines)[2:])


# -- running ---------------------------------------------------------------------------------------------------------
def ignored_when_copying() -> Callable[[str, list[str]], set[str]]:
    """Run outputs, caches and the environment (the copy runs the checkout's .venv); `reports/` is copied, since the
    paper tests render the committed reference results. The layout is imported here, not at the top: a test server
    must not hold any `benchmark` module when it forks."""
    from benchmark.layout import RESULTS

    return shutil.ignore_patterns(".git", ".venv", str(RESULTS), "__pycache__", ".snakemake", ".pytest_cache", ".ruff_cache", "*.pyc")


def worker_environment(folder: Path) -> dict[str, str]:
    from benchmark.config import data_root  # the original checkout's data root, since the copy sits elsewhere

    return {
        **os.environ,
        "PYTHONPATH": str(folder),  # ahead of the editable install, which points at the original checkout
        "PYTHONDONTWRITEBYTECODE": "1",  # a stale .pyc of the same size and mtime would hide a mutant
        "GANBENCH_DATA_ROOT": str(data_root({}).resolve()),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


PREIMPORTED = (
    "torch",
    "numpy",
    "pandas",
    "scipy.stats",
    "sklearn.cluster",
    "torch_fidelity",
    "learn2learn",
    "PIL.Image",
    "yaml",
    "jsonschema",
    "pytest",
)


def serve() -> None:
    """A worker's test server: import the heavy libraries once, then fork a fresh pytest per request.

    The fork inherits torch and the rest already imported (5 s saved per mutant) but not `benchmark`, `methods` or
    the tests, which the child imports from the copy on disk, with the mutant in it. Requests and replies are
    JSON lines on stdin and stdout; the child's own output goes to the log file named in the request.
    """
    for name in PREIMPORTED:
        importlib.import_module(name)
    import pytest

    for request_line in sys.stdin:
        request = json.loads(request_line)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: one pytest session, then exit without running the parent's cleanup
            code = 99
            try:
                os.setsid()  # its own process group, so that a timeout also stops what the tests started
                output = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(output, 1)
                os.dup2(output, 2)
                code = int(pytest.main(request["args"]))
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        status = None
        while status is None and time.monotonic() - started < request["timeout"]:
            finished, code = os.waitpid(pid, os.WNOHANG)
            status = code if finished else None
            time.sleep(0.02)
        if status is None:
            os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            outcome = "timeout"
        else:
            outcome = "passed" if os.waitstatus_to_exitcode(status) == 0 else "failed"
        print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started}), flush=True)


class Worker:
    """A copy of the repository and its test server."""

    def __init__(self, root: Path, number: int) -> None:
        self.folder = root / f"worker-{number}"
        shutil.copytree(REPO, self.folder, ignore=ignored_when_copying())
        self.log = root / f"worker-{number}.log"
        self.check_isolation()
        self.server = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            cwd=self.folder, env=worker_environment(self.folder), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def check_isolation(self) -> None:
        """The copy, not the editable install, must be what the tests import."""
        probe = "import benchmark, benchmark.plugins as p; print(benchmark.__file__); print(p.REPO_ROOT)"
        env = worker_environment(self.folder)
        output = subprocess.run([sys.executable, "-c", probe], cwd=self.folder, env=env, capture_output=True, text=True, check=True).stdout
        if str(REPO) in output or str(self.folder) not in output:
            raise SystemExit(f"mutation_test: the worker copy {self.folder} imports the checkout itself:\n{output}")

    def run_tests(self, tests: tuple[str, ...], timeout: float) -> tuple[str, float]:
        """'passed', 'failed' or 'timeout', and the seconds taken."""
        args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header", "-m", "not slow", *tests]
        self.server.stdin.write(json.dumps({"args": args, "timeout": timeout, "log": str(self.log)}) + "\n")
        self.server.stdin.flush()
        reply = json.loads(self.server.stdout.readline())
        return reply["outcome"], reply["seconds"]

    def output(self) -> str:
        return self.log.read_text()[-3000:]

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait()


@dataclass
class Outcome:
    mutant: Mutant
    status: str  # killed, timeout, survived
    seconds: float


def test_module(path: str, mutants: list[Mutant], workers: queue.Queue, jobs: int, log) -> list[Outcome]:
    tests = TARGETS[path]
    worker = workers.get()
    try:
        baseline, seconds = worker.run_tests(tests, timeout=3600)
        if baseline != "passed":
            raise SystemExit(f"mutation_test: the tests of {path} fail without any mutant:\n{worker.output()}")
    finally:
        workers.put(worker)
    timeout = 2 * seconds + 20
    log(f"{path}: {len(mutants)} mutants; tests {' '.join(tests)} take {seconds:.1f} s (timeout {timeout:.0f} s)")

    def one(mutant: Mutant) -> Outcome:
        worker = workers.get()
        target = worker.folder / mutant.path
        original = target.read_bytes()
        try:
            target.write_bytes(mutant.apply(original))
            result, seconds = worker.run_tests(tests, timeout)
        finally:
            target.write_bytes(original)
            workers.put(worker)
        return Outcome(mutant, {"failed": "killed", "passed": "survived"}.get(result, result), seconds)

    outcomes = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for number, outcome in enumerate(pool.map(one, mutants), start=1):
            outcomes.append(outcome)
            if outcome.status == "survived":
                log(f"  survived {number}/{len(mutants)} line {outcome.mutant.line}: {outcome.mutant.change}")
    killed = sum(outcome.status != "survived" for outcome in outcomes)
    log(f"{path}: {killed} of {len(outcomes)} killed")
    return outcomes


def load_accepted() -> dict[tuple[str, str, str, int], str]:
    """(file, line text, change, occurrence) -> reason; `occurrence` may be left out when it is 1."""
    entries = yaml.safe_load(ACCEPTED_FILE.read_text()) if ACCEPTED_FILE.is_file() else []
    return {(entry["file"], " ".join(entry["line"].split()), entry["change"], entry.get("occurrence", 1)): entry["reason"] for entry in entries or []}


def write_report(outcomes: list[Outcome], seconds: float, jobs: int, commit: str) -> str:
    accepted = load_accepted()
    by_file: dict[str, Counter] = {}
    for outcome in outcomes:
        by_file.setdefault(outcome.mutant.path, Counter())[outcome.status] += 1
    total = len(outcomes)
    killed = sum(outcome.status != "survived" for outcome in outcomes)
    survivors = [outcome for outcome in outcomes if outcome.status == "survived"]
    explained = [outcome for outcome in survivors if outcome.mutant.key in accepted]
    lines = [
        "# Mutation testing",
        "",
        f"Code version {commit}; `scripts/mutation_test.py` with {jobs} workers took {seconds / 60:.0f} min.",
        "",
        f"**Score: {killed} of {total} mutants killed ({100 * killed / max(total, 1):.1f}%).** "
        f"{len(survivors)} survived: {len(explained)} of them are listed in `scripts/mutation_accepted.yaml` as equivalent "
        f"or harmless, {len(survivors) - len(explained)} are not.",
        "",
        "| module | tests | mutants | killed | timed out | survived |",
        "|---|---|---|---|---|---|",
    ]
    for path, counts in by_file.items():
        tests = ", ".join(Path(test).name for test in TARGETS[path])
        lines.append(f"| {path} | {tests} | {sum(counts.values())} | {counts['killed']} | {counts['timeout']} | {counts['survived']} |")
    surviving_keys = {outcome.mutant.key for outcome in survivors}
    stale = [key for key in accepted if key[0] in by_file and key not in surviving_keys]
    if stale:
        lines += ["", "## Listed as accepted, but killed or gone (remove them from the list)", ""]
        lines += [f"- {path}: `{line}`: {change} (occurrence {occurrence})" for path, line, change, occurrence in stale]
    lines += ["", "## Survivors", ""]
    for outcome in survivors:
        reason = accepted.get(outcome.mutant.key, "NOT EXPLAINED: a behaviour no test pins down.")
        lines += [
            f"### {outcome.mutant.path}:{outcome.mutant.line} ({outcome.mutant.operator})",
            "",
            reason,
            "",
            "```diff",
            outcome.mutant.diff,
            "```",
            "",
        ]
    return "\n".join(lines)


def save_outcomes(path: Path, outcomes: list[Outcome], seconds: float, jobs: int, commit: str) -> None:
    """Every mutant and its outcome, so that the report can be rebuilt after the accepted list changes (`--rebuild`)."""
    rows = [{**asdict(outcome.mutant), "status": outcome.status, "seconds": outcome.seconds} for outcome in outcomes]
    path.write_text(json.dumps({"commit": commit, "seconds": seconds, "jobs": jobs, "outcomes": rows}) + "\n")


def load_outcomes(path: Path) -> tuple[list[Outcome], float, int, str]:
    saved = json.loads(path.read_text())
    outcomes = []
    for row in saved["outcomes"]:
        status, seconds = row.pop("status"), row.pop("seconds")
        outcomes.append(Outcome(Mutant(**row), status, seconds))
    return outcomes, saved["seconds"], saved["jobs"], saved["commit"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="only this module (repeatable)")
    parser.add_argument("--jobs", type=int, default=2, choices=range(1, 65), metavar="N", help="mutants tested at once (one repository copy each)")
    parser.add_argument("--list", action="store_true", help="list the mutants and stop")
    parser.add_argument("--report", type=Path, help="where the report goes (default: reports/mutation.md; the outcomes beside it, .json)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the report from the saved outcomes (after editing the accepted list)")
    parser.add_argument(
        "--retest",
        action="store_true",
        help="test again only the mutants that survived in the saved outcomes (after adding tests); the report covers all",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a worker's test server (internal)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    from benchmark.layout import MUTATION_REPORT

    report_path = args.report or REPO / MUTATION_REPORT
    outcomes_path = report_path.with_suffix(".json")
    if args.rebuild:
        outcomes, seconds, jobs, commit = load_outcomes(outcomes_path)
        report_path.write_text(write_report(outcomes, seconds, jobs, commit) + "\n")
        print(f"report rebuilt from {outcomes_path} into {report_path}")
        return
    modules = args.module or list(TARGETS)
    mutants = {path: find_mutants(path) for path in modules}
    kept: list[Outcome] = []  # with --retest: the saved outcomes that are not tested again
    if args.retest:
        saved, _, _, _ = load_outcomes(outcomes_path)
        current = {mutant for found in mutants.values() for mutant in found}
        if any(outcome.mutant not in current for outcome in saved if outcome.mutant.path in mutants):
            raise SystemExit(f"mutation_test: {outcomes_path} was made from other source files: run without --retest.")
        again = {outcome.mutant for outcome in saved if outcome.status == "survived"}
        kept = [outcome for outcome in saved if outcome.mutant not in again]
        mutants = {path: [mutant for mutant in found if mutant in again] for path, found in mutants.items()}
    if args.list:
        for path, found in mutants.items():
            for mutant in found:
                print(f"{path}:{mutant.line} {mutant.operator}: {mutant.change}")
        print(f"{sum(map(len, mutants.values()))} mutants", file=sys.stderr)
        return
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{(time.monotonic() - started) / 60:5.1f} min] {message}", flush=True)

    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="ganbench-mutation-") as scratch:
        pool = [Worker(Path(scratch), number) for number in range(args.jobs)]
        workers: queue.Queue = queue.Queue()
        for worker in pool:
            workers.put(worker)
        try:
            outcomes = kept + [outcome for path in modules for outcome in test_module(path, mutants[path], workers, args.jobs, log)]
        finally:
            for worker in pool:
                worker.close()
    seconds = time.monotonic() - started
    report_path.parent.mkdir(parents=True, exist_ok=True)
    save_outcomes(outcomes_path, outcomes, seconds, args.jobs, commit)
    report_path.write_text(write_report(outcomes, seconds, args.jobs, commit) + "\n")
    log(f"report written to {report_path}, outcomes to {outcomes_path}")


if __name__ == "__main__":
    main()
