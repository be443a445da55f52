"""Method plugins: the registry, a throwaway method from a temporary file, and an installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from benchmark.errors import BenchmarkError
from benchmark.methods import Method, get_method, methods
from conftest import REPO, run_cli, save_prepared

THROWAWAY = '''
import torch
from benchmark.methods import Method, Hyperparameter


class HalfLearningRateD(Method):
    """Test-only: adds a tiny L2 penalty on D so the hook path runs."""

    name = "throwaway_l2d"
    paper = "none (test)"
    hyperparameters = {"weight": Hyperparameter(default=1e-3, search=(1e-5, 1e-1), log_scale=True)}

    def discriminator_penalty(self, discriminator):
        return self.hparams["weight"] * sum(p.pow(2).sum() for p in discriminator.parameters())
'''


def test_builtin_methods_registered():
    registry = methods()
    assert {"scratch", "finetune"} <= set(registry)
    assert get_method("finetune").requires == ("source_checkpoint",)
    assert get_method("scratch").requires == ()
    assert all(issubclass(cls, Method) and cls.paper for cls in registry.values())


def test_unknown_method_lists_available():
    with pytest.raises(BenchmarkError, match=r"Unknown method 'nope'\. Available: .*finetune.*scratch"):
        get_method("nope")


def test_unknown_hyperparameter_is_refused():
    with pytest.raises(BenchmarkError, match="has no hyperparameter"):
        get_method("scratch")(learning_rate=1.0)


@pytest.mark.slow
def test_throwaway_method_from_a_temporary_file_runs_end_to_end(tmp_path, digits):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "throwaway.py").write_text(THROWAWAY)
    env = {"GANBENCH_METHODS_PATH": str(plugins)}
    listed = run_cli("methods", env=env)
    assert "throwaway_l2d" in listed.stdout, listed.stderr

    data = save_prepared(digits, tmp_path, "digits")
    source, task, encoder = tmp_path / "source.json", tmp_path / "task.json", tmp_path / "encoder.safetensors"
    spec = {
        "kind": "few-shot", "source": "low", "target": {"dataset": "digits", "classes": [5, 6, 7, 8, 9]},
        "validation_size": 50, "shot_pool_size": 20, "reference_size": 200,
    }  # fmt: skip
    source_settings = {"spec": {"dataset": "digits", "classes": [0, 1, 2, 3, 4]}, "split_seed": 0}
    encoder_settings = {"epochs": 1, "max_images_per_dataset": 500}
    for command in (
        ["split-source", "--name", "low", "--settings", json.dumps(source_settings), "--dataset", str(data), "--output", str(source)],
        ["split-task", "--name", "t", "--settings", json.dumps({"spec": spec, "shots": [5], "split_draws": 1, "split_seed": 0}),
         "--source-manifest", str(source), "--source-dataset", str(data), "--dataset", str(data), "--output", str(task)],
        ["train-encoder", "--settings", json.dumps(encoder_settings), "--manifests", str(task), "--dataset", f"digits={data}", "--output", str(encoder)],
    ):  # fmt: skip
        result = run_cli(*command)
        assert result.returncode == 0, result.stderr
    settings = {
        "run": {"task": "t", "shots": 5, "method": "throwaway_l2d", "seed": 0, "split_draw": 0, "pretrain_seed": 0, "draw": 0},
        "method_hparams": {"weight": 0.01}, "architecture": {"width": 8}, "train": {"steps": 6, "batch_size": 4, "eval_every": 3, "log_every": 2},
        "evaluation": {"num_generated": 60, "validation_num_generated": 40, "kid_subset_size": 20, "kid_subsets": 5, "seed": 1},
        "device": "cpu",
    }  # fmt: skip
    adapt = ["adapt", "--settings", json.dumps(settings), "--manifest", str(task), "--dataset", str(data), "--encoder", str(encoder)]
    run_dir = tmp_path / "run"
    result = run_cli(*adapt, "--output-dir", str(run_dir), env=env)
    assert result.returncode == 0, result.stderr
    config = json.loads((run_dir / "config.json").read_text())
    assert config["method"] == "throwaway_l2d" and config["method_hparams"] == {"weight": 0.01}
    evals = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [record["step"] for record in evals] == [3, 6] and evals[-1]["eval"]["kid_validation"] > 0

    without_plugin = run_cli(*adapt, "--output-dir", str(tmp_path / "run2"))
    assert without_plugin.returncode == 2 and "Unknown method 'throwaway_l2d'" in without_plugin.stderr


def test_entry_point_of_an_installed_package_is_discovered(tmp_path):
    site = tmp_path / "site"
    (site / "extra_gan_method-1.0.dist-info").mkdir(parents=True)
    (site / "extra_gan_method-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: extra-gan-method\nVersion: 1.0\n")
    (site / "extra_gan_method-1.0.dist-info" / "entry_points.txt").write_text("[ganbench.methods]\nextra = extra_gan_method:Extra\n")
    (site / "extra_gan_method.py").write_text(
        textwrap.dedent("""
        from benchmark.methods import Method
        class Extra(Method):
            name = "extra_from_package"
            paper = "an installed package"
    """)
    )
    code = "from benchmark.methods import methods; print(sorted(methods()))"
    env_path = f"{site}"
    result = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r}); {code}"], capture_output=True, text=True, cwd=REPO)
    assert "extra_from_package" in result.stdout, result.stderr


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("l2sp", {"lambda_g": "1e-2"}, "should be of type float. YAML reads 1e-4"),
        ("freeze_d", {"frozen_blocks": "1"}, "should be of type int"),
        ("l2sp", {"form": "max"}, "is not one of"),
        ("ewc", {"fisher_batches": 0}, "below its minimum"),
        ("l2sp", {"lambda_g": float("nan")}, "is not a finite number"),
    ],
)
def test_bad_hyperparameter_values_are_refused_by_name(name, hparams, message):
    with pytest.raises(BenchmarkError, match=message) as info:
        get_method(name)(**hparams)
    assert f"{name}.{next(iter(hparams))}" in str(info.value)
