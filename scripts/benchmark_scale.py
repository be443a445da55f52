"""Throughput and overheads of adaptation training, side by side in one process, on one device (a benchmark script,
not a timed test):

1. Aggregate training steps/s on one grid of R runs (the seeds of one method and task): the per-run loop
   (`train_gan`, run after run), the same with bf16 autocast and with `torch.compile`, the seed-batched loop
   (`benchmark.batched`, R runs as one vectorised model) with the same switches, and a minimal hand-written loop
   of the same model, losses, optimisers, EMA and steps (the framework's overhead is the per-run loop's time over
   it).
2. Per-run metric time: the validation scoring the training schedule runs (KID and FID of
   `validation_num_generated` images) and its set-up.
3. Per-job overhead of a Snakemake job: interpreter start and the imports of an adaptation and an evaluation job,
   each in a fresh process, against the median wall time of the jobs of a finished run (`--workdir`: Snakemake's
   benchmark records under results/benchmarks/).

    .venv/bin/python scripts/benchmark_scale.py [--device auto] [--runs 8] [--steps 200] [--workdir DIR]
        [--cost config/full.yaml] [--output-dir reports/scale (the default)]

With --cost, the preset's device-hours from its plan and the per-unit times measured here. Writes scale.json and
scale.md. Shapes are the full preset's adaptation (28 px, z 64, width 64, batch 32, K = 10 digits); on a GPU pass
larger --runs and --steps (e.g. --runs 256 --steps 500).
"""

from __future__ import annotations

import argparse
import copy
import logging
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from benchmark import layout
from benchmark.batched import BatchMember, train_gan_batched
from benchmark.data import prepare_dataset
from benchmark.io import atomic_write_json, atomic_write_text
from benchmark.methods import get_method
from benchmark.models import Architecture, GANModels
from benchmark.provenance import code_version, resolve_device
from benchmark.training import TrainSettings, as_training_tensor, ema_decay_at, train_gan

log = logging.getLogger("benchmark_scale")
ARCH = {"z_dim": 64, "width": 64, "generator_norm": "batch", "discriminator_spectral_norm": True}
TRAIN = {"batch_size": 32, "lr_g": 2.0e-4, "lr_d": 4.0e-4, "beta1": 0.0, "beta2": 0.9, "ema_decay": 0.99, "eval_every": 0, "eval_steps": []}


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, action: Callable[[], Any]) -> float:
    synchronise(device)
    started = time.perf_counter()
    action()
    synchronise(device)
    return time.perf_counter() - started


def shots(device: torch.device, count: int = 10) -> torch.Tensor:
    digits = prepare_dataset("digits", "sklearn_digits", {}, image_size=28, channels=1)
    return as_training_tensor(digits.images[:count], device)


def fresh_members(runs: int, arch: Architecture, real: torch.Tensor, folder: Path, method: str) -> list[BatchMember]:
    hooks_class = get_method(method)
    return [
        BatchMember(GANModels.fresh(arch, seed, real.device), real, seed, folder / f"run{seed}", hooks_class(), {"seed": seed})
        for seed in range(runs)
    ]  # fmt: skip


def per_run_loop(members: list[BatchMember], settings: TrainSettings) -> None:
    for member in members:
        train_gan(member.models, member.real_images, settings, member.seed, member.run_dir, member.hooks, member.run_identity)


def hand_written_loop(arch: Architecture, real: torch.Tensor, runs: int, settings: TrainSettings) -> None:
    """The same model, losses, Adam, EMA and steps with nothing else: no hooks, logs, checks or checkpoints."""
    for seed in range(runs):
        models = GANModels.fresh(arch, seed, real.device)
        generator, discriminator = models.generator.train(), models.discriminator.train()
        ema = copy.deepcopy(generator).requires_grad_(False)
        betas = (settings.beta1, settings.beta2)
        optimiser_g = torch.optim.Adam(generator.parameters(), lr=settings.lr_g, betas=betas)
        optimiser_d = torch.optim.Adam(discriminator.parameters(), lr=settings.lr_d, betas=betas)
        sampler = torch.Generator().manual_seed(seed)
        g_params, ema_params = list(generator.parameters()), list(ema.parameters())
        for step in range(1, settings.steps + 1):
            batch = real[torch.randint(real.shape[0], (settings.batch_size,), generator=sampler).to(real.device)]
            fake = generator(torch.randn(settings.batch_size, arch.z_dim, generator=sampler).to(real.device))
            loss_d = F.softplus(-discriminator(batch)).mean() + F.softplus(discriminator(fake.detach())).mean()
            optimiser_d.zero_grad(set_to_none=True)
            loss_d.backward()
            optimiser_d.step()
            fake = generator(torch.randn(settings.batch_size, arch.z_dim, generator=sampler).to(real.device))
            loss_g = F.softplus(-discriminator(fake)).mean()
            optimiser_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optimiser_g.step()
            with torch.no_grad():
                torch._foreach_lerp_(ema_params, g_params, 1.0 - ema_decay_at(step, settings.ema_decay))


def time_path(path: str, device: torch.device, arch: Architecture, real: torch.Tensor, runs: int, settings: TrainSettings) -> float:
    """Seconds one path takes for the grid, from fresh models."""
    with tempfile.TemporaryDirectory() as folder:
        members = fresh_members(runs, arch, real, Path(folder), "scratch")
        if path.startswith("hand-written"):
            return timed(device, partial(hand_written_loop, arch, real, runs, settings))
        if path.startswith("per-run"):
            return timed(device, partial(per_run_loop, members, settings))
        return timed(device, partial(train_gan_batched, members, settings))


def training_throughput(device: torch.device, runs: int, steps: int, paths: list[str], repeats: int) -> list[dict[str, Any]]:
    """Each path `repeats` times, the paths interleaved (so that no path gains from running later in the process, on
    a warmer allocator or a quieter machine); the median time."""
    arch = Architecture.from_config(ARCH, image_size=28, channels=1)
    real = shots(device)
    base = TrainSettings.from_config({**TRAIN, "steps": steps, "log_every": steps, "checkpoint_every": 0})
    # Untimed warm-up: the first loop of a process pays for kernel selection and the allocator's first requests.
    hand_written_loop(arch, real, 1, TrainSettings.from_config({**base.as_record(), "steps": 10}))
    times: dict[str, list[float]] = {path: [] for path in paths}
    failed: dict[str, str] = {}
    for repeat in range(repeats):
        for path in paths:
            if path in failed:
                continue
            settings = TrainSettings.from_config({**base.as_record(), "autocast_bf16": "bf16" in path, "compile": "compile" in path})
            log.info("timing %s (%d of %d): %d runs x %d steps", path, repeat + 1, repeats, runs, steps)
            try:
                times[path].append(time_path(path, device, arch, real, runs, settings))
            except Exception as error:  # a path this device or build cannot take (e.g. compile without a compiler)
                log.warning("%s failed: %s", path, error)
                failed[path] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    rows: list[dict[str, Any]] = []
    for path in paths:
        if path in failed:
            rows.append({"path": path, "error": failed[path]})
            continue
        seconds = statistics.median(times[path])
        rows.append(
            {
                "path": path,
                "runs": runs,
                "steps": steps,
                "seconds": round(seconds, 3),
                "all seconds": [round(t, 2) for t in times[path]],
                "steps_per_s": round(runs * steps / seconds, 2),
            }
        )
    naive = next((row["steps_per_s"] for row in rows if row["path"] == "per-run loop" and "steps_per_s" in row), None)
    hand = next((row["seconds"] for row in rows if row["path"].startswith("hand-written") and "seconds" in row), None)
    for row in rows:
        if naive and "steps_per_s" in row:
            row["speed-up"] = round(row["steps_per_s"] / naive, 2)
        if hand and row["path"] == "per-run loop":
            row["framework overhead"] = f"{100 * (row['seconds'] / hand - 1):.1f}%"
    return rows


def metric_time(device: torch.device) -> dict[str, Any]:
    """The validation scoring of one evaluation step (default preset sizes: 1,000 generated vs 1,000 validation
    images, KID with 100 subsets of 1,000): set-up (encoder features of the validation split) and one scoring."""
    from benchmark.encoder import fit_encoder
    from benchmark.metrics import feature_space
    from benchmark.metrics.suite import DistanceScorer
    from benchmark.training import generate

    digits = prepare_dataset("digits", "sklearn_digits", {}, image_size=28, channels=1)
    with tempfile.TemporaryDirectory() as folder:
        encoder = Path(folder) / "encoder.safetensors"
        fit_encoder(digits.images, digits.labels, digits.class_names, 1, 128, 1e-3, 0, 0.0, encoder, {"benchmark": True})
        space = feature_space(encoder, None)
        validation = digits.images[:1000]
        scorer: list[DistanceScorer] = []
        setup = timed(device, lambda: scorer.append(DistanceScorer(validation, space, 1000, 100, 0, device)))
        generator = GANModels.fresh(Architecture.from_config(ARCH, 28, 1), 0, device).generator
        images: list[Any] = []
        generation = timed(device, lambda: images.append(generate(generator, 1000, 0, device)))
        scoring = timed(device, lambda: scorer[0](images[0]))
    return {"validation set-up s": round(setup, 3), "generate 1,000 s": round(generation, 3), "KID+FID of 1,000 s": round(scoring, 3)}


def start_up() -> dict[str, float]:
    """Median of 3 fresh processes: the interpreter alone, and the imports of an adaptation and an evaluation job."""
    probes = {"interpreter": "pass", "adapt job imports": "import benchmark.stages.adapt", "evaluate job imports": "import benchmark.stages.evaluate"}
    found = {}
    for name, code in probes.items():
        times = []
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - started)
        found[name] = round(statistics.median(times), 2)
    return found


def job_times(workdir: Path) -> dict[str, dict[str, float]]:
    """Median and count of the wall times (s) Snakemake recorded per training and scoring stage of a finished run."""
    found = {}
    for stage in ("adapt", "adapt_seeds", "evaluate", "evaluate_seeds"):
        seconds = []
        for record in Path(workdir, layout.benchmark(stage, "")).parent.rglob("*.tsv"):
            lines = record.read_text().splitlines()
            if len(lines) >= 2:
                seconds.append(float(lines[1].split("\t")[0]))
        if seconds:
            found[stage] = {"jobs": len(seconds), "median s": round(statistics.median(seconds), 2), "total s": round(sum(seconds), 1)}
    return found


def full_preset_cost(
    config_path: Path, device: torch.device, adapt_rate: float, validation_scoring: float, start_up: dict[str, float]
) -> dict[str, Any]:
    """The preset's job counts from its plan, and its compute from per-unit times measured here at its shapes:
    adaptation steps/s (the per-run loop row), pretraining steps/s and meta-iterations/s (timed below), validation
    scoring per evaluation point (the metric row); the metric suite per scored checkpoint is the measurement in the
    docs/metrics.md (Speed: 13.2 s at 5,000 generated vs 10,000 reference images)."""
    from benchmark.config import load_config
    from benchmark.plan import Plan

    config = load_config(config_path)
    plan = Plan(config)
    artefacts = {path for run in plan.runs for path in plan.artefacts(run).values()}
    pretrainings = sum(1 for path in artefacts if "/pretrain/" in path)
    meta_trainings = sorted(path for path in artefacts if "/metatrain/" in path)
    arch = Architecture.from_config(config["architecture"], config["image_size"], config["channels"])
    real = shots(device, 64)
    pretrain = TrainSettings.from_config({**config["pretrain"]["train"], "steps": 40, "log_every": 40, "checkpoint_every": 0})
    with tempfile.TemporaryDirectory() as folder:
        member = fresh_members(1, arch, real, Path(folder), "scratch")[0]
        pretrain_rate = 40 / timed(device, partial(per_run_loop, [member], pretrain))
    meta_seconds = {name: meta_iteration_seconds(name, config, arch, device) for name in ("maml_gan", "reptile")}
    adapt = TrainSettings.from_config(config["adapt"]["train"])
    evaluations = sum(1 for step in range(adapt.steps + 1) if adapt.evaluates_at(step))
    suite_seconds = 13.2  # per scored checkpoint, two per run (docs/metrics.md: scripts/benchmark_metrics.py)
    start_up_seconds = start_up["adapt job imports"] + start_up["evaluate job imports"]  # a job of each kind per run
    per_run = adapt.steps / adapt_rate + evaluations * validation_scoring + 2 * suite_seconds + start_up_seconds
    meta_hours = 0.0
    for path in meta_trainings:
        method = "reptile" if "/reptile/" in path else "maml_gan"
        iterations = config["adapt"]["method_hparams"].get(method, {}).get("meta_iterations", 5000)
        meta_hours += iterations * meta_seconds[method] / 3600
    hours = {
        "adaptation runs": round(len(plan.runs) * per_run / 3600, 1),
        "pretrainings": round(pretrainings * config["pretrain"]["train"]["steps"] / pretrain_rate / 3600, 1),
        "meta-trainings": round(meta_hours, 1),
    }
    return {
        "config": str(config_path),
        "adaptation runs": len(plan.runs),
        "pretrainings": pretrainings,
        "meta-trainings": len(meta_trainings),
        "adaptation steps/s (one run)": round(adapt_rate, 2),
        "pretraining steps/s": round(pretrain_rate, 2),
        "meta-iteration s": {name: round(value, 3) for name, value in meta_seconds.items()},
        "evaluation points per run": evaluations,
        "seconds per adaptation run": round(per_run, 1),
        "device-hours": hours,
        "device-hours total": round(sum(hours.values()), 1),
    }


def meta_iteration_seconds(method: str, config: dict[str, Any], arch: Architecture, device: torch.device) -> float:
    """One outer update of a meta-learner at the config's hyperparameters, on digit tasks of the config's support
    and query sizes (median of 3 after one untimed)."""
    from benchmark.plan import method_hparams

    hparams = method_hparams(config, method)
    learner = get_method(method)(**hparams)
    models = GANModels.fresh(arch, 0, device)
    images = shots(device, 200)
    size = config["meta"]["support_size"]
    tasks = [
        (images[i * 2 * size : i * 2 * size + size], images[i * 2 * size + size : (i + 1) * 2 * size]) for i in range(hparams["meta_batch_size"])
    ]
    rng = torch.Generator().manual_seed(0)
    learner.meta_step(models, tasks, rng)
    return statistics.median(timed(device, partial(learner.meta_step, models, tasks, rng)) for _ in range(3))


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "# Adaptation throughput and overheads (scripts/benchmark_scale.py)",
        "",
        f"Device: {report['device']}; code {report['code_version']}; torch {report['torch']}; {report['threads']} threads.",
        "",
        "## Training: aggregate steps/s on one grid",
        "",
        "| path | runs | steps | seconds | steps/s | speed-up vs per-run loop | framework overhead |",
        "|---|---:|---:|---:|---:|---:|---:|",  # seconds: the median over --repeats
    ]
    for row in report["training"]:
        if "error" in row:
            lines.append(f"| {row['path']} | | | | failed: {row['error']} | | |")
        else:
            lines.append(
                f"| {row['path']} | {row['runs']} | {row['steps']} | {row['seconds']} | {row['steps_per_s']} | "
                f"{row.get('speed-up', '')} | {row.get('framework overhead', '')} |"
            )
    lines += ["", "## Per-run metric time (validation scoring, default preset sizes)", ""]
    lines += [f"- {name}: {value}" for name, value in report["metrics"].items()]
    lines += ["", "## Per-job start-up (fresh process, median of 3)", ""]
    lines += [f"- {name}: {value} s" for name, value in report["start_up"].items()]
    if report.get("cost"):
        cost = report["cost"]
        lines += ["", f"## Cost of {cost['config']} (measured per unit on this device, extrapolated to the plan)", ""]
        lines += [f"- {name}: {value}" for name, value in cost.items() if name != "config"]
    if report.get("jobs"):
        lines += [
            "",
            f"## Job wall times of {report['workdir']}",
            "",
            "| stage | jobs | median s | total s | start-up share |",
            "|---|---:|---:|---:|---:|",
        ]
        for stage, values in report["jobs"].items():
            imports = report["start_up"]["evaluate job imports" if stage.startswith("evaluate") else "adapt job imports"]
            share = f"{100 * imports / values['median s']:.0f}%"
            lines.append(f"| {stage} | {values['jobs']} | {values['median s']} | {values['total s']} | {share} |")
    return "\n".join(lines) + "\n"


PATHS = (
    "hand-written loop",
    "per-run loop",
    "per-run loop + bf16",
    "per-run loop + compile",
    "vectorised",
    "vectorised + bf16",
    "vectorised + compile",
    "vectorised + bf16 + compile",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="times each path runs, interleaved; the median is reported")
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--workdir", type=Path, default=None, help="a finished run's folder, for its job wall times")
    parser.add_argument("--cost", type=Path, default=None, help="a preset (config/full.yaml) to cost from the units measured here")
    parser.add_argument("--output-dir", type=Path, default=Path(layout.SCALE_REPORT))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("benchmark").setLevel(logging.WARNING)  # per-step lines of the timed loops
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"
    report: dict[str, Any] = {
        "device": name,
        "code_version": code_version(),
        "torch": torch.__version__,
        "threads": args.threads,
        "training": training_throughput(device, args.runs, args.steps, args.paths, args.repeats),
        "metrics": metric_time(device),
        "start_up": start_up(),
    }
    if args.cost:
        per_run = next((row for row in report["training"] if row["path"] == "per-run loop" and "steps_per_s" in row), None)
        if per_run is None:
            parser.error("--cost needs the adaptation rate of the per-run loop: keep 'per-run loop' among --paths")
        scoring = report["metrics"]["KID+FID of 1,000 s"] + report["metrics"]["generate 1,000 s"]
        report["cost"] = full_preset_cost(args.cost, device, per_run["steps_per_s"], scoring, report["start_up"])
    if args.workdir:
        report["workdir"] = str(args.workdir)
        report["jobs"] = job_times(args.workdir)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output_dir / "scale.json", report)
    atomic_write_text(args.output_dir / "scale.md", markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
