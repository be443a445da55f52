"""The shape of the code: stages above the library, one stage module per rule, one home per fact.

Each rule is checked by a small function run on the real tree, and each function is also shown to fail on a
deliberately broken input, so that a passing check means something.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO

LIBRARY_FOLDERS = [REPO / "benchmark", REPO / "benchmark" / "metrics", REPO / "methods", REPO / "datasets"]
UPWARD = ("benchmark.stages", "benchmark.cli")


def imported_modules(source: str) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def upward_imports(source: str) -> set[str]:
    """Imports of a pipeline stage or of the CLI: a library module or a plugin must have none."""
    return {module for module in imported_modules(source) if module.startswith(UPWARD)}


def test_library_and_plugins_never_import_a_stage():
    offenders = {}
    for folder in LIBRARY_FOLDERS:
        for path in folder.glob("*.py"):
            if path.name == "cli.py":
                continue
            found = upward_imports(path.read_text())
            if found:
                offenders[str(path.relative_to(REPO))] = sorted(found)
    assert offenders == {}
    # The check sees both import forms.
    assert upward_imports("from benchmark.stages.adapt import adapt\nimport benchmark.cli\n") == {
        "benchmark.stages.adapt", "benchmark.stages.adapt.adapt", "benchmark.cli",
    }  # fmt: skip
    assert upward_imports("from benchmark.stages import evaluate\n") == {"benchmark.stages", "benchmark.stages.evaluate"}


def rules_and_commands(rule_files: list[Path]) -> dict[str, list[str]]:
    """Each rule of the workflow -> the `ganbench` subcommands its shell command runs."""
    commands: dict[str, list[str]] = {}
    for path in rule_files:
        for block in re.split(r"^\s*rule ", path.read_text(), flags=re.MULTILINE)[1:]:  # also rules inside an `if`
            name = block.split(":", 1)[0]
            commands[name] = re.findall(r"\bganbench(?: --threads \{threads\})? ([a-z-]+)", block)
    return commands


def stage_of(rule: str, stages: set[str]) -> str | None:
    """The stage module a rule belongs to: its own name, or the family before the last underscore (split_task)."""
    return rule if rule in stages else next((stage for stage in stages if rule.startswith(f"{stage}_")), None)


def test_each_rule_runs_one_subcommand_of_its_stage_module(tmp_path):
    stages = {path.stem for path in (REPO / "benchmark" / "stages").glob("*.py") if path.stem != "__init__"}
    commands = rules_and_commands(sorted((REPO / "rules").glob("*.smk")))
    assert set(commands) == {
        "prepare_data", "split_source", "split_meta", "split_task", "train_encoder", "pretrain", "meta_train", "build_artefact", "adapt",
        "adapt_seeds", "evaluate", "evaluate_seeds", "collect", "table", "collect_training", "panels", "paper",
    }  # fmt: skip
    several_runs = {"evaluate_seeds": "evaluate"}  # the subcommand takes several runs itself
    for rule, called in commands.items():
        assert called == [several_runs.get(rule, rule.replace("_", "-"))], (rule, called)
        assert stage_of(rule, stages) is not None, f"rule {rule} has no stage module in benchmark/stages"
    assert {stage_of(rule, stages) for rule in commands} == stages, "every stage module is a rule of the workflow"

    # The CLI's handler for each subcommand calls into that stage's module, and into no other stage.
    cli = ast.parse((REPO / "benchmark" / "cli.py").read_text())
    for function in (node for node in cli.body if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_")):
        subcommand = function.name[4:]
        if subcommand == "methods":
            continue
        used = {module for module in imported_modules(ast.unparse(function)) if module.startswith("benchmark.stages.")}
        assert {module.split(".")[2] for module in used} == {stage_of(subcommand, stages)}, function.name

    # The parser of rule files finds a rule that runs two subcommands.
    broken = tmp_path / "two_commands.smk"
    broken.write_text('rule both:\n    shell:\n        "ganbench adapt x && ganbench --threads {threads} evaluate y"\n')
    assert rules_and_commands([broken]) == {"both": ["adapt", "evaluate"]}


PROBE = """
import json, sys
from benchmark.config import load_config
from benchmark.plan import Plan
Plan(load_config(sys.argv[1]))
print(json.dumps(sorted(name for name in sys.modules if name.startswith(("torch_fidelity", "benchmark.metrics", "benchmark.stages")))))
"""


def heavy_modules_loaded_by_planning(env: dict[str, str] | None = None) -> list[str]:
    """What planning the default benchmark (what the Snakefile does while it parses) imports from the metrics
    stack or the stages: discovering the methods, validating their hyperparameters, laying out the runs."""
    result = subprocess.run([sys.executable, "-c", PROBE, str(REPO / "config" / "config.yaml")], capture_output=True, text=True, cwd=REPO, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def test_discovering_methods_imports_neither_the_metrics_nor_a_stage(tmp_path):
    import os

    assert heavy_modules_loaded_by_planning() == []
    # A method plugin that imports a stage (as maml_gan once did, through the old meta-training module) is caught.
    (tmp_path / "leaky.py").write_text(
        "from benchmark.methods import Method\nimport benchmark.stages.adapt\n\n\nclass Leaky(Method):\n    name = 'leaky'\n"
    )
    leaked = heavy_modules_loaded_by_planning({**os.environ, "GANBENCH_METHODS_PATH": str(tmp_path)})
    assert "torch_fidelity" in leaked and "benchmark.metrics" in leaked and "benchmark.stages.adapt" in leaked


def results_paths_outside_layout(files: list[Path]) -> list[str]:
    """String literals that spell a path under results/ or reports/ anywhere but the layout module."""
    found = []
    for path in files:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"""["'](results|reports)(/|["'])""", line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_every_results_path_is_built_by_the_layout_module(tmp_path):
    folders = LIBRARY_FOLDERS + [REPO / "benchmark" / "stages", REPO / "scripts"]
    code = [path for folder in folders for path in folder.glob("*.py") if path.name != "layout.py"]
    code += sorted((REPO / "rules").glob("*.smk")) + [REPO / "Snakefile"]
    assert results_paths_outside_layout(code) == []
    stray = tmp_path / "stray.smk"
    stray.write_text('rule x:\n    output:\n        "results/runs/{task}/metrics.json",\n    log: Path("reports") / "x.log"\n')
    assert results_paths_outside_layout([stray]) == [
        'stray.smk:3: "results/runs/{task}/metrics.json",',
        'stray.smk:4: log: Path("reports") / "x.log"',
    ]


def variant_parsing_outside_methods(files: list[Path]) -> list[str]:
    """Places that take a method name apart themselves instead of asking `benchmark.methods.split_variant`."""
    pattern = re.compile(r"""\.(split|partition|rsplit)\(\s*["']\+["']""")
    return [f"{path.name}: {line.strip()}" for path in files for line in path.read_text().splitlines() if pattern.search(line)]


def test_variant_names_are_parsed_in_one_place(tmp_path):
    code = [path for folder in LIBRARY_FOLDERS + [REPO / "benchmark" / "stages"] for path in folder.glob("*.py")]
    code += sorted((REPO / "rules").glob("*.smk"))
    assert variant_parsing_outside_methods(code) == ['methods.py: base, *modifiers = name.split("+")']
    stray = tmp_path / "stray.py"
    stray.write_text("base = run.method.split('+')[0]\n")
    assert variant_parsing_outside_methods([stray]) == ["stray.py: base = run.method.split('+')[0]"]


def test_the_workflow_lint_gate_fails_on_new_lints_and_on_a_workflow_that_does_not_parse(capsys):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import lint_workflow
    finally:
        sys.path.pop(0)
    kept = next(iter(lint_workflow.KEPT))
    lints = f"Lints for rule adapt (line 45, rules/train.smk):\n    * {kept}:\n      details\n"
    assert lint_workflow.verdict(1, lints) == 0
    assert lint_workflow.verdict(1, lints + "Lints for rule table (line 9, rules/x.smk):\n    * Absolute path in line 3.:\n") == 1
    assert lint_workflow.verdict(1, "WorkflowError: configuration error: Config key 'shots' ...") == 2
    assert lint_workflow.verdict(0, "Congratulations, your workflow is in a good condition!") == 0
    assert lint_workflow.verdict(0, "") == 2
    capsys.readouterr()
