"""`ganbench`: one subcommand per pipeline stage; each parses its arguments and calls one library function.

Settings arrive as one JSON object (`--settings`), which the workflow builds from the validated config and also
lists in the rule's `params`, so that changing a setting reruns exactly the jobs that use it.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

from benchmark.errors import BenchmarkError

log = logging.getLogger("ganbench")


def _settings(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise BenchmarkError(f"--settings is not valid JSON ({error}).") from error
    if not isinstance(value, dict):
        raise BenchmarkError("--settings must be a JSON object.")
    return value


def _named_paths(entries: list[str]) -> dict[str, Path]:
    named = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            raise BenchmarkError(f"'{entry}' should read NAME=PATH.")
        named[name] = Path(path)
    return named


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from benchmark.data import prepare_dataset

    s = _settings(args.settings)
    dataset = prepare_dataset(args.name, s["source"], s["options"], s["image_size"], s["channels"])
    dataset.save(args.output, args.output.with_suffix(".json"))
    log.info("prepared '%s': %d images, %d classes", args.name, len(dataset.labels), len(dataset.class_names))


def cmd_split_source(args: argparse.Namespace) -> None:
    from benchmark.data import PreparedDataset
    from benchmark.splits import build_source_manifest, write_manifest

    s = _settings(args.settings)
    manifest = build_source_manifest(args.name, s["spec"], PreparedDataset.load(args.dataset), s["split_seed"])
    write_manifest(args.output, manifest)
    log.info("source '%s': %d training images", args.name, manifest["train"]["count"])


def cmd_split_task(args: argparse.Namespace) -> None:
    from benchmark.data import PreparedDataset
    from benchmark.splits import build_task_manifest, read_manifest, write_manifest

    s = _settings(args.settings)
    source = read_manifest(args.source_manifest, "source")
    manifest = build_task_manifest(
        args.name, s["spec"], source, PreparedDataset.load(args.dataset), s["shots"], s["split_draws"], s["split_seed"]
    )
    write_manifest(args.output, manifest)
    target = manifest["target"]
    log.info(
        "task '%s': reference %d, validation %d, shot pool %d images",
        args.name, target["reference"]["count"], target["validation"]["count"], target["shot_pool"]["count"],
    )  # fmt: skip


def cmd_split_meta(args: argparse.Namespace) -> None:
    from benchmark.data import PreparedDataset
    from benchmark.splits import build_meta_manifest, read_manifest, write_manifest

    s = _settings(args.settings)
    source = read_manifest(args.source_manifest, "source")
    manifest = build_meta_manifest(
        source, PreparedDataset.load(args.dataset), s["unit"], s["count"], s["support_size"], s["query_size"], s["split_seed"]
    )
    write_manifest(args.output, manifest)
    log.info("meta-tasks of source '%s': %d tasks over %d %s units", source["name"], len(manifest["tasks"]), manifest["num_units"], manifest["unit"])


def cmd_meta_train(args: argparse.Namespace) -> None:
    from benchmark.meta import meta_train_source
    from benchmark.provenance import resolve_device

    s = _settings(args.settings)
    meta_train_source(
        args.manifest, args.dataset, s["method"], s["method_hparams"], s["architecture"], s["seed"], resolve_device(s["device"]), args.output_dir
    )


def cmd_train_encoder(args: argparse.Namespace) -> None:
    from benchmark.data import PreparedDataset
    from benchmark.encoder import encoder_training_set, train_encoder
    from benchmark.splits import read_manifest

    s = _settings(args.settings)
    manifests = [read_manifest(path, "task") for path in args.manifests]
    datasets = {name: PreparedDataset.load(path) for name, path in _named_paths(args.dataset).items()}
    images, labels, class_names, provenance = encoder_training_set(manifests, datasets, s["max_images_per_dataset"], s["seed"])
    train_encoder(
        images, labels, class_names, s["epochs"], s["batch_size"], s["learning_rate"], s["seed"], s["holdout_fraction"],
        args.output, provenance,
    )  # fmt: skip


def cmd_pretrain(args: argparse.Namespace) -> None:
    from benchmark.provenance import resolve_device
    from benchmark.runs import pretrain_source

    s = _settings(args.settings)
    pretrain_source(args.manifest, args.dataset, s["architecture"], s["train"], s["seed"], resolve_device(s["device"]), args.output_dir)


def cmd_adapt(args: argparse.Namespace) -> None:
    from benchmark.provenance import resolve_device
    from benchmark.runs import adapt_to_task

    s = _settings(args.settings)
    adapt_to_task(
        args.manifest, args.dataset, args.encoder, s["method"], s["method_hparams"], s["shots"], s["seed"],
        s["split_draw"], s["pretrain_seed"], _named_paths(args.artefact), s["architecture"], s["train"],
        s["evaluation"], resolve_device(s["device"]), args.output_dir,
    )  # fmt: skip


def cmd_evaluate(args: argparse.Namespace) -> None:
    from benchmark.evaluation import evaluate_run
    from benchmark.provenance import resolve_device

    s = _settings(args.settings)
    evaluate_run(args.run_dir, args.manifest, args.dataset, args.encoder, s["evaluation"], resolve_device(s["device"]), args.output)


def cmd_collect(args: argparse.Namespace) -> None:
    from benchmark.results import write_results_csv

    frame = write_results_csv(args.metrics, args.output)
    log.info("collected %d records from %d runs into %s", len(frame), len(args.metrics), args.output)


def cmd_table(args: argparse.Namespace) -> None:
    from benchmark.results import write_markdown_table

    write_markdown_table(args.input, args.output)


def cmd_methods(args: argparse.Namespace) -> None:
    from benchmark.methods import methods

    for name, cls in sorted(methods().items()):
        print(f"{name}\t{cls.paper}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganbench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (the rule's threads)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, handler: Callable[[argparse.Namespace], None], help_text: str) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler)
        return command

    c = add("prepare-data", cmd_prepare_data, "convert one dataset source to the canonical prepared form")
    c.add_argument("--name", required=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--output", type=Path, required=True, help=".npz; the metadata goes beside it as .json")
    c = add("split-source", cmd_split_source, "write a source domain's split manifest")
    c.add_argument("--name", required=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--dataset", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    c = add("split-task", cmd_split_task, "write a task's split manifest")
    c.add_argument("--name", required=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--source-manifest", type=Path, required=True)
    c.add_argument("--dataset", type=Path, required=True, help="the target dataset")
    c.add_argument("--output", type=Path, required=True)
    c = add("split-meta", cmd_split_meta, "write a source's meta-training task manifest")
    c.add_argument("--settings", required=True)
    c.add_argument("--source-manifest", type=Path, required=True)
    c.add_argument("--dataset", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    c = add("meta-train", cmd_meta_train, "meta-train G and D on a source's tasks (maml_gan, reptile)")
    c.add_argument("--settings", required=True)
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--dataset", type=Path, required=True)
    c.add_argument("--output-dir", type=Path, required=True)
    c = add("train-encoder", cmd_train_encoder, "train the domain encoder used as feature extractor")
    c.add_argument("--settings", required=True)
    c.add_argument("--manifests", type=Path, nargs="+", required=True)
    c.add_argument("--dataset", action="append", default=[], help="NAME=PATH of a prepared dataset (repeat)")
    c.add_argument("--output", type=Path, required=True)
    c = add("pretrain", cmd_pretrain, "train G and D on a source domain")
    c.add_argument("--settings", required=True)
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--dataset", type=Path, required=True)
    c.add_argument("--output-dir", type=Path, required=True)
    c = add("adapt", cmd_adapt, "adapt one method to one task's K shots for one seed")
    c.add_argument("--settings", required=True)
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--dataset", type=Path, required=True)
    c.add_argument("--encoder", type=Path, required=True)
    c.add_argument("--artefact", action="append", default=[], help="NAME=PATH of an artefact the method requires")
    c.add_argument("--output-dir", type=Path, required=True)
    c = add("evaluate", cmd_evaluate, "score a run's final generator against the task's reference set")
    c.add_argument("--settings", required=True)
    c.add_argument("--run-dir", type=Path, required=True)
    c.add_argument("--manifest", type=Path, required=True)
    c.add_argument("--dataset", type=Path, required=True)
    c.add_argument("--encoder", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    c = add("collect", cmd_collect, "gather every run's metrics into one tidy CSV")
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("metrics", type=Path, nargs="+")
    c = add("table", cmd_table, "render the Markdown results table from the CSV")
    c.add_argument("--input", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    add("methods", cmd_methods, "list the registered methods")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        if args.command not in ("collect", "table", "methods", "split-source", "split-task", "split-meta", "prepare-data"):
            from benchmark.provenance import configure_determinism

            configure_determinism(args.threads)
        args.handler(args)
    except BenchmarkError as error:
        print(f"ganbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
