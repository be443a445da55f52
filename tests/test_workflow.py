"""The real Snakemake workflow: a tiny config from data to table, the default DAG, and config validation."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from benchmark import layout
from benchmark.checkpoint import load_checkpoint, models_from_checkpoint
from benchmark.config import load_config, validate_config
from benchmark.errors import BenchmarkError
from benchmark.methods import get_method
from benchmark.models import Architecture
from benchmark.plan import Plan, method_hparams, method_names
from benchmark.results import collect_results, render_markdown
from benchmark.selection import CURVE, FINAL, ORACLE, SELECTED
from benchmark.training import generate
from conftest import REPO, run_cli

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(workdir: Path, configfile: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        # `extra` before --configfile, which would take a target after it for a second config file
        [*SNAKEMAKE, "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *extra, "--configfile", str(configfile)],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})},
    )  # fmt: skip


SUITE_METRICS = {
    "kid", "fid", "precision", "recall", "density", "coverage", "ndb_fraction", "ndb_jsd", "classes_covered",
    "class_kl", "intra_cluster_lpips", "memorisation_share", "nn_ratio_share",
}  # fmt: skip


def test_smoke_config_runs_from_data_to_table(tmp_path):
    config_path = REPO / "tests" / "smoke_config.yaml"
    result = snakemake(tmp_path, config_path)
    assert result.returncode == 0, result.stderr[-3000:]

    config = load_config(config_path)
    runs = Plan(config).runs
    frame = pd.read_csv(tmp_path / layout.RESULTS_CSV)
    # Every run: the full suite for its final and its validation-selected checkpoint (FID_inf not asked for), and
    # its adaptation curve: validation KID and FID at steps 0, 5 and 10 (meta-learners add their 2 inner steps).
    assert set(frame["checkpoint"]) == {"final", "validation-selected", CURVE}
    curve, frame = frame[frame["checkpoint"] == CURVE], frame[frame["checkpoint"] != CURVE]
    steps = curve[curve["metric"] == "kid"].groupby(["task", "method", "seed"])["checkpoint_step"].apply(sorted)
    assert {(method, tuple(s)) for (_, method, _), s in steps.items()} == {
        (run.method, (0, 2, 5, 10) if run.method in ("maml_gan", "reptile") else (0, 5, 10)) for run in runs
    }
    assert set(curve["metric"]) == {"kid", "fid"} and curve["value"].notna().all() and (curve["n_fake"] == 50).all()
    assert set(frame["metric"]) == SUITE_METRICS
    assert len(frame) == len(runs) * 2 * len(SUITE_METRICS)
    assert set(frame["method"]) == {run.method for run in runs} and set(frame["seed"]) == {0, 1}
    assert frame["value"].notna().all() and (frame["n_fake"] == 200).all()
    on_features = frame[(frame["task"] == "digits_to_mnist") & frame["metric"].isin(["kid", "fid", "precision", "coverage"])]
    assert set(on_features["n_real"]) == {300}
    assert set(frame.loc[frame["metric"] == "memorisation_share", "n_real"]) == {5}  # K training shots

    table = (tmp_path / layout.RESULTS_TABLE).read_text()
    assert "## digits_5to9 (few-shot)" in table and "## digits_to_mnist (cross-domain)" in table
    assert "### Checkpoint: final, hyperparameters: defaults (draw 0)" in table and "### Checkpoint: validation-selected" in table
    assert "Checkpoint: oracle" not in table  # only when asked for
    number = r"-?[\d.]+(e-?\d+)? \+/- [\d.]+(e-?\d+)?"
    for method in {run.method for run in runs}:
        assert re.search(rf"\| 5 \| {re.escape(method)} \|( {number} \|){{6}} 2 \|", table), method
        assert re.search(rf"\| 5 \| {re.escape(method)} \|( {number} \|){{7}} 2 \|", table), method
    assert "K = 5, final: lowest mean KID" in table and "K = 5, validation-selected: lowest mean KID" in table

    record = json.loads((tmp_path / runs[0].run_dir / "metrics.json").read_text())["records"][0]
    for key in ("seed", "split_draw", "n_real", "n_fake", "feature_weights_sha256", "reference_sha256"):
        assert record[key] is not None, key
    assert record["run_config"]["target_dataset_sha256"] and record["environment"]["code_version"]
    assert record["run_config"]["train_settings"]["steps"] == 10
    # maml_gan meta-trained from the source pretraining (init: source) and adapted with its inner procedure.
    maml = next(run for run in runs if run.method == "maml_gan")
    maml_config = json.loads((tmp_path / maml.run_dir / "config.json").read_text())
    assert (maml_config["train_settings"]["lr_g"], maml_config["train_settings"]["ema_decay"]) == (0.01, 0.0)
    meta_config = json.loads(
        (tmp_path / "results/metatrain" / config["tasks"][maml.task]["source"] / "maml_gan" / "h0" / "seed0" / "config.json").read_text()
    )
    assert list(meta_config["artefacts_sha256"]) == ["source_checkpoint"]

    # Asked for, the oracle selection chooses among the evaluation checkpoints on one half of the reference set and
    # reports on the other (a KID reported on the half it was chosen on would be the minimum it was chosen as).
    oracle = _evaluate_with_oracle(tmp_path, config, runs[0])
    selected = {record["checkpoint"]: record["checkpoint_step"] for record in oracle if record["metric"] == "kid" and record["checkpoint"] != CURVE}
    assert set(selected) == {"final", "validation-selected", "oracle (reference-selected)"}
    by_checkpoint = {(r["checkpoint"], r["metric"]): r for r in oracle if r["checkpoint"] != CURVE}
    oracle_kid = by_checkpoint[(ORACLE, "kid")]
    assert oracle_kid["selected_on"] == "kid on the reference set's choosing half"
    whole = by_checkpoint[(FINAL, "kid")]
    assert whole["reference_set"] == "reference" and oracle_kid["reference_set"] == "reference: reporting half"
    assert oracle_kid["n_real"] == whole["n_real"] // 2 and by_checkpoint[(ORACLE, "kid_choosing_half")]["n_real"] == (whole["n_real"] + 1) // 2
    assert oracle_kid["selection_score"] == by_checkpoint[(ORACLE, "kid_choosing_half")]["value"]
    assert oracle_kid["selection_score"] <= min(by_checkpoint[(label, "kid_choosing_half")]["value"] for label in (FINAL, SELECTED))
    assert oracle_kid["value"] == pytest.approx(by_checkpoint[(ORACLE, "kid_reporting_half")]["value"], rel=1e-12)
    assert oracle_kid["value"] != oracle_kid["selection_score"]
    oracle_table = render_markdown(collect_results([tmp_path / "oracle" / "metrics.json"]))
    assert (
        "### Checkpoint: oracle (reference-selected) (ORACLE: chosen on one half of the test set, scored on the other), hyperparameters"
        in oracle_table
    )

    # Tables regenerate from stored results without retraining.
    (tmp_path / layout.RESULTS_TABLE).unlink()
    again = snakemake(tmp_path, config_path, "--rerun-triggers", "mtime")
    assert again.returncode == 0 and "rule adapt" not in again.stdout + again.stderr
    assert (tmp_path / layout.RESULTS_TABLE).read_text() == table

    _check_paper_outputs(tmp_path, config_path, config)

    # A changed adaptation hyperparameter reruns adaptation and what follows, not data, encoder or pretraining.
    changed_config = yaml.safe_load(config_path.read_text())
    changed_config["adapt"]["train"]["lr_g"] = 0.001
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(changed_config))
    dry = snakemake(tmp_path, changed, "-n")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout, flags=re.MULTILINE))
    assert int(counts["adapt"]) == int(counts["evaluate"]) == len(runs)
    assert not {"prepare_data", "split_source", "split_task", "train_encoder", "pretrain"} & set(counts), counts


def _check_paper_outputs(workdir: Path, config_path: Path, config: dict) -> None:
    """Paper outputs: every figure kind from results/ alone; the panels show the first images the evaluation scored;
    deleted, they come back from the stored results without retraining, identical; `snakemake --report` makes a
    self-contained HTML page that a headless browser renders with every figure."""
    paper = workdir / layout.PAPER
    names = {path.stem for path in (paper / "figures").glob("*.png")}
    expected = {f"{kind}_{task}_k5" for kind in ("samples", "nearest", "training", "adaptation_curve") for task in config["tasks"]}
    assert expected <= names, expected - names
    assert not any(name.startswith("kid_vs_k") for name in names)  # one K: no metric-vs-K figure
    for name in ("paper.md", "paper.html", "tables.csv", "power.csv"):
        assert (paper / name).stat().st_size > 0, name
    # 2 tasks: no cross-task verdict, and the page says why in one line; 2 seeds: no seed verdict either.
    text = (paper / "paper.md").read_text()
    assert "No cross-task verdict: 2 tasks" in text and "No seed verdict: no pair of methods completed 3 or more seeds" in text

    plan = Plan(config)
    with np.load(workdir / layout.PANELS) as stored:
        panels = {key: stored[key] for key in stored.files}
    index = json.loads(str(panels["index"]))
    assert [entry["run_dir"] for entry in index["runs"]] == [run.run_dir for run in plan.panel_runs()]
    run, entry = plan.panel_runs()[0], index["runs"][0]
    state = load_checkpoint(workdir / run.run_dir / "checkpoint.pt")
    arch = Architecture.from_dict(json.loads((workdir / run.run_dir / "config.json").read_text())["architecture"])
    generator = models_from_checkpoint(state, "checkpoint", arch, "cpu", get_method(run.method)().build_models).generator
    scored_first = generate(generator, config["evaluation"]["num_generated"], config["evaluation"]["seed"], torch.device("cpu"))
    assert np.array_equal(panels[entry["samples_array"]], scored_first[: index["samples"]])  # the same latent codes
    # The nearest-shot panels' candidates: the closest of every scored sample (the grid's few are among them).
    closest = panels[entry["closest_distance_array"]]
    assert entry["closest_of"] == config["evaluation"]["num_generated"] and np.all(np.diff(closest) >= 0)
    assert closest[0] <= panels[entry["distance_array"]].min() and len(closest) == min(8, entry["closest_of"])
    assert {run.seed for run in plan.panel_runs()} == set(config["seeds"])  # every seed's runs, not the first's only

    markdown = (paper / "paper.md").read_text()
    shutil.rmtree(paper)
    again = snakemake(workdir, config_path, "--rerun-triggers", "mtime")
    assert again.returncode == 0 and "rule adapt" not in again.stdout + again.stderr and "rule panels" not in again.stdout + again.stderr
    assert (paper / "paper.md").read_text() == markdown

    report = workdir / "report.html"
    made = snakemake(workdir, config_path, "--report", str(report))
    assert made.returncode == 0, made.stderr[-3000:]
    html = report.read_text()
    assert not re.search(r"<(script|img|link)[^>]+(src|href)=\"https?://", html)  # self-contained: nothing fetched
    assert all(f"{name}.png" in html for name in names) and "Nearest-shot panel" in html  # every figure, with its caption
    browser = shutil.which("chromium-headless-shell") or shutil.which("chromium")
    if browser:  # .ci/run installs Debian's chromium-headless-shell; the DOM after its scripts ran lists the results
        dom = subprocess.run(
            [browser, "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", "--dump-dom", report.as_uri()],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "Paper outputs" in dom.stdout and "Statistics" in dom.stdout, dom.stderr[-2000:]


def _evaluate_with_oracle(workdir: Path, config: dict, run) -> list[dict]:
    """The evaluate subcommand on one finished run of the workflow, with the oracle selection switched on."""
    settings = {"evaluation": {**config["evaluation"], "oracle_selection": True}, "device": "cpu", "oracle_draws": False}
    output = workdir / "oracle" / "metrics.json"
    result = run_cli(
        "evaluate", "--settings", json.dumps(settings), "--run-dir", str(workdir / run.run_dir),
        "--manifest", str(workdir / layout.TASK_SPLIT.fill(task=run.task)),
        "--dataset", str(workdir / Plan(config).task_dataset(run.task)),
        "--encoder", str(workdir / layout.ENCODER), "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(output.read_text())["records"]


def test_default_config_dry_run_lists_the_full_dag(tmp_path):
    result = snakemake(tmp_path, REPO / "config" / "config.yaml", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    config = load_config(REPO / "config" / "config.yaml")
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    # One job per seed group (`seed_batching: sequential`): the same numbers as a job per run, a third of the jobs.
    assert config["seed_batching"] == "sequential" and "adapt" not in counts
    assert int(counts["adapt_seeds"]) * len(config["seeds"]) == int(counts["evaluate_seeds"]) * len(config["seeds"]) == len(Plan(config).runs)
    assert int(counts["pretrain"]) == len(config["sources"]) * len(config["pretrain"]["seeds"])
    assert int(counts["train_encoder"]) == 1 and int(counts["table"]) == 1
    kinds = {task["kind"] for task in config["tasks"].values()}
    assert kinds == {"few-shot", "cross-domain"} and config["shots"] == [10] and len(config["seeds"]) >= 3


def test_full_preset_covers_every_method_and_shot_count(tmp_path):
    from benchmark.methods import methods

    config = load_config(REPO / "config" / "full.yaml")
    assert set(config["methods"]) >= set(methods()) | {f"{name}+diffaug" for name in methods() if name != "scratch"}
    assert config["shots"] == [1, 5, 10, 50] and len(config["seeds"]) >= 5 and len(config["pretrain"]["seeds"]) > 1
    assert {task["kind"] for task in config["tasks"].values()} == {"few-shot", "cross-domain"}
    assert {"fashion_to_xray", "xray_normal_to_pneumonia"} <= set(config["tasks"]) and len(config["tasks"]) == 7
    # Every method is swept (draws of one setting run once): 17,500 runs, as the preset's comment says.
    assert config["sweep"]["n_hparams"] == 8 and len(Plan(config).runs) == 17500
    # The DAG of the grid without the sweep (Snakemake takes minutes over the 35,000 jobs of the sweep).
    unswept = yaml.safe_load((REPO / "config" / "full.yaml").read_text())
    unswept["sweep"]["n_hparams"] = 0
    (tmp_path / "full_unswept.yaml").write_text(yaml.safe_dump(unswept))
    result = snakemake(tmp_path, tmp_path / "full_unswept.yaml", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    # One job per seed group: the preset trains each (task, K, method, draw)'s 5 seeds as one batched model.
    assert config["seed_batching"] == "vectorised" and "adapt" not in counts
    assert int(counts["adapt_seeds"]) * 5 == len(Plan(validate_config(unswept)).runs) == 7 * 4 * len(config["methods"]) * 5
    assert int(counts["evaluate_seeds"]) == int(counts["adapt_seeds"])


def test_medical_preset_plans_both_medical_tasks_on_the_x_rays(tmp_path):
    """config/medical.yaml: a cross-domain task (clothing -> X-rays) and a rare-class task (normal X-rays of the
    train split -> pneumonia), every method, three seeds; the DAG is complete."""
    config = load_config(REPO / "config" / "medical.yaml")
    tasks = config["tasks"]
    assert tasks["fashion_to_xray"]["kind"] == "cross-domain" and tasks["fashion_to_xray"]["target"] == {"dataset": "pneumonia"}
    assert config["sources"]["xray_normal"] == {"dataset": "pneumonia", "classes": ["normal"], "where": {"split": "train"}}
    assert tasks["xray_normal_to_pneumonia"]["target"] == {"dataset": "pneumonia", "classes": ["pneumonia"]}
    result = snakemake(tmp_path, REPO / "config" / "medical.yaml", "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, flags=re.MULTILINE))
    assert int(counts["adapt"]) == len(Plan(config).runs) == 2 * len(config["seeds"]) * len(Plan(config).methods)


def test_string_number_in_config_names_the_key(tmp_path):
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    config["adapt"]["train"]["lr_g"] = "1e-4"  # what YAML makes of 1e-4 without a dot
    with pytest.raises(BenchmarkError, match=r"'adapt\.train\.lr_g'.*not of type 'number'.*1\.0e-4"):
        validate_config(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, bad, "-n")
    assert result.returncode != 0 and "adapt.train.lr_g" in result.stdout + result.stderr


def test_unknown_method_in_config_lists_the_available_ones():
    config = yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text())
    config["methods"] = ["finetune", "nope"]
    with pytest.raises(BenchmarkError, match=r"Unknown method 'nope'\. Available: .*finetune.*scratch"):
        method_names(validate_config(config))


def test_variant_of_a_meta_learner_cannot_change_its_meta_training():
    config = validate_config(yaml.safe_load((REPO / "tests" / "smoke_config.yaml").read_text()))
    assert method_hparams(config, "maml_gan+diffaug") == config["adapt"]["method_hparams"]["maml_gan"]
    config["adapt"]["method_hparams"]["maml_gan+diffaug"] = {"inner_lr": 0.5}
    with pytest.raises(BenchmarkError, match=r"'adapt\.method_hparams\.maml_gan\+diffaug'.*shares its meta-training"):
        method_hparams(config, "maml_gan+diffaug")
    config["adapt"]["method_hparams"]["freeze_d+diffaug"] = {"frozen_blocks": 2}
    assert method_hparams(config, "freeze_d+diffaug") == {"frozen_blocks": 2}
