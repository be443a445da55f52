"""`ganbench`: one subcommand per pipeline stage; each parses its arguments and makes one call into its stage.

A stage's settings arrive as one JSON object (`--settings`, read into that stage's settings object from
`benchmark.settings`), which the run plan builds from the validated config and the workflow also lists in the
rule's `params`, so that changing a setting reruns exactly the jobs that use it. Files are named by flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from benchmark.config import SEED_BATCHING
from benchmark.errors import BenchmarkError

log = logging.getLogger("ganbench")


def _named_paths(entries: list[str]) -> dict[str, Path]:
    named = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            raise BenchmarkError(f"'{entry}' should read NAME=PATH.")
        named[name] = Path(path)
    return named


def cmd_prepare_data(args: argparse.Namespace) -> None:
    from benchmark.settings import PrepareDataSettings
    from benchmark.stages.prepare_data import prepare_data

    prepare_data(args.name, PrepareDataSettings.from_json(args.settings), output=args.output)


def cmd_split_source(args: argparse.Namespace) -> None:
    from benchmark.settings import SplitSourceSettings
    from benchmark.stages.split import split_source

    split_source(args.name, SplitSourceSettings.from_json(args.settings), dataset=args.dataset, output=args.output)


def cmd_split_task(args: argparse.Namespace) -> None:
    from benchmark.settings import SplitTaskSettings
    from benchmark.stages.split import split_task

    split_task(
        args.name, SplitTaskSettings.from_json(args.settings), source_manifest=args.source_manifest, source_dataset=args.source_dataset,
        dataset=args.dataset, output=args.output,
    )  # fmt: skip


def cmd_split_meta(args: argparse.Namespace) -> None:
    from benchmark.settings import SplitMetaSettings
    from benchmark.stages.split import split_meta

    split_meta(SplitMetaSettings.from_json(args.settings), source_manifest=args.source_manifest, dataset=args.dataset, output=args.output)


def cmd_train_encoder(args: argparse.Namespace) -> None:
    from benchmark.settings import EncoderSettings
    from benchmark.stages.train_encoder import train_encoder

    settings = EncoderSettings.from_json(args.settings)
    train_encoder(settings, manifests=args.manifests, datasets=_named_paths(args.dataset), output=args.output)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from benchmark.settings import PretrainSettings
    from benchmark.stages.pretrain import pretrain

    pretrain(PretrainSettings.from_json(args.settings), manifest=args.manifest, dataset=args.dataset, output_dir=args.output_dir)


def cmd_meta_train(args: argparse.Namespace) -> None:
    from benchmark.settings import MetaTrainSettings
    from benchmark.stages.meta_train import meta_train

    meta_train(
        MetaTrainSettings.from_json(args.settings), manifest=args.manifest, dataset=args.dataset, output_dir=args.output_dir,
        artefacts=_named_paths(args.artefact),
    )  # fmt: skip


def cmd_build_artefact(args: argparse.Namespace) -> None:
    from benchmark.settings import BuildArtefactSettings
    from benchmark.stages.build_artefact import build_artefact

    build_artefact(BuildArtefactSettings.from_json(args.settings), artefacts=_named_paths(args.artefact), output=args.output)


def cmd_adapt(args: argparse.Namespace) -> None:
    from benchmark.settings import AdaptSettings
    from benchmark.stages.adapt import adapt

    adapt(
        AdaptSettings.from_json(args.settings), manifest=args.manifest, dataset=args.dataset, encoder=args.encoder,
        artefacts=_named_paths(args.artefact), output_dir=args.output_dir,
    )  # fmt: skip


def cmd_adapt_seeds(args: argparse.Namespace) -> None:
    from benchmark.settings import AdaptSettings
    from benchmark.stages.adapt import adapt_seeds

    try:
        runs = [
            (AdaptSettings.from_dict(run["settings"]), {k: Path(v) for k, v in run["artefacts"].items()}, Path(run["output_dir"]))
            for run in json.loads(args.runs)
        ]
    except (ValueError, KeyError, TypeError) as error:
        raise BenchmarkError(f"--runs must be a JSON list of {{settings, artefacts, output_dir}} objects ({error}).") from None
    adapt_seeds(runs, manifest=args.manifest, dataset=args.dataset, encoder=args.encoder, batching=args.batching)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from benchmark.settings import EvaluateSettings
    from benchmark.stages.evaluate import evaluate

    if len(args.run_dir) != len(args.output):
        raise BenchmarkError(f"{len(args.run_dir)} --run-dir but {len(args.output)} --output: give one output per run folder, in order.")
    for run_dir, output in zip(args.run_dir, args.output):  # several runs in one job share its start-up
        evaluate(
            EvaluateSettings.from_json(args.settings), run_dir=run_dir, manifest=args.manifest, dataset=args.dataset,
            encoder=args.encoder, output=output,
        )  # fmt: skip


def cmd_collect(args: argparse.Namespace) -> None:
    from benchmark.stages.collect import collect

    collect(args.metrics, output=args.output)


def cmd_collect_training(args: argparse.Namespace) -> None:
    from benchmark.stages.collect import collect_training_logs

    collect_training_logs(args.train_logs, output=args.output)


def cmd_panels(args: argparse.Namespace) -> None:
    from benchmark.settings import PanelSettings
    from benchmark.stages.panels import panels

    panels(
        PanelSettings.from_json(args.settings), run_dirs=args.run_dirs, manifests=_named_paths(args.manifest),
        datasets=_named_paths(args.dataset), encoder=args.encoder, output=args.output,
    )  # fmt: skip


def cmd_paper(args: argparse.Namespace) -> None:
    from benchmark.settings import PaperSettings
    from benchmark.stages.paper import paper

    paper(
        PaperSettings.from_json(args.settings), input_dir=args.input_dir, output_dir=args.output_dir, reference_dir=args.reference,
    )  # fmt: skip


def cmd_table(args: argparse.Namespace) -> None:
    from benchmark.settings import PaperSettings
    from benchmark.stages.table import table

    table(args.input, output=args.output, settings=PaperSettings.from_json(args.settings).comparison(), oracle_draws=args.oracle_draws)


def cmd_methods(args: argparse.Namespace) -> None:
    from benchmark.methods import methods

    for name, cls in sorted(methods().items()):
        print(f"{name}\t{cls.paper}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganbench", description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (the rule's threads)")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(
        name: str, handler: Callable[[argparse.Namespace], None], help_text: str, trains: bool = False, gpu: bool | None = None
    ) -> argparse.ArgumentParser:
        """`trains`: the stage runs torch computations, made deterministic before it starts. `gpu` (default: as
        `trains`): its rule may ask for a GPU, so the job claims one of a multi-GPU node's before CUDA starts."""
        command = sub.add_parser(name, help=help_text)
        command.set_defaults(handler=handler, trains=trains, gpu=trains if gpu is None else gpu)
        return command

    def files(command: argparse.ArgumentParser, *names: str) -> None:
        for name in names:
            command.add_argument(f"--{name}", type=Path, required=True)

    c = add("prepare-data", cmd_prepare_data, "convert one dataset source to the canonical prepared form")
    c.add_argument("--name", required=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--output", type=Path, required=True, help=".npz; the metadata goes beside it as .json")
    c = add("split-source", cmd_split_source, "write a source domain's split manifest")
    c.add_argument("--name", required=True)
    c.add_argument("--settings", required=True)
    files(c, "dataset", "output")
    c = add("split-task", cmd_split_task, "write a task's split manifest")
    c.add_argument("--name", required=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--source-manifest", type=Path, required=True)
    c.add_argument("--source-dataset", type=Path, required=True, help="the dataset the source manifest indexes")
    c.add_argument("--dataset", type=Path, required=True, help="the target dataset")
    c.add_argument("--output", type=Path, required=True)
    c = add("split-meta", cmd_split_meta, "write a source's meta-training task manifest")
    c.add_argument("--settings", required=True)
    files(c, "source-manifest", "dataset", "output")
    c = add("train-encoder", cmd_train_encoder, "train the domain encoder used as feature extractor", trains=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--manifests", type=Path, nargs="+", required=True)
    c.add_argument("--dataset", action="append", default=[], help="NAME=PATH of a prepared dataset (repeat)")
    c.add_argument("--output", type=Path, required=True)
    c = add("pretrain", cmd_pretrain, "train G and D on a source domain", trains=True)
    c.add_argument("--settings", required=True)
    files(c, "manifest", "dataset", "output-dir")
    c = add("meta-train", cmd_meta_train, "meta-train G and D on a source's tasks (maml_gan, reptile)", trains=True)
    c.add_argument("--settings", required=True)
    files(c, "manifest", "dataset", "output-dir")
    c.add_argument("--artefact", action="append", default=[], help="NAME=PATH of an artefact meta-training reads (init: source)")
    c = add("build-artefact", cmd_build_artefact, "build a plugin artefact for one source and pretraining seed", gpu=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--artefact", action="append", default=[], help="NAME=PATH of a built-in artefact it is built from")
    c.add_argument("--output", type=Path, required=True)
    c = add("adapt", cmd_adapt, "adapt one method to one task's K shots for one seed", trains=True)
    c.add_argument("--settings", required=True)
    files(c, "manifest", "dataset", "encoder")
    c.add_argument("--artefact", action="append", default=[], help="NAME=PATH of an artefact the method requires")
    c.add_argument("--output-dir", type=Path, required=True)
    c = add("adapt-seeds", cmd_adapt_seeds, "adapt one method to one task's K shots for several seeds in one job", trains=True)
    c.add_argument("--runs", required=True, help="JSON list of {settings, artefacts: {NAME: PATH}, output_dir}, one per seed")
    files(c, "manifest", "dataset", "encoder")
    c.add_argument("--batching", choices=SEED_BATCHING[1:], required=True, help="one after another, or as one batched model")
    c = add("evaluate", cmd_evaluate, "score runs' checkpoints against the task's reference set", trains=True)
    c.add_argument("--settings", required=True)
    files(c, "manifest", "dataset", "encoder")
    c.add_argument("--run-dir", type=Path, action="append", required=True, help="a run's folder (repeat, with one --output each)")
    c.add_argument("--output", type=Path, action="append", required=True, help="the metrics file of the --run-dir at the same position")
    c = add("collect", cmd_collect, "gather every run's metrics into one tidy CSV")
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("metrics", type=Path, nargs="+")
    c = add("collect-training", cmd_collect_training, "gather every run's training log into one tidy CSV")
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("train_logs", type=Path, nargs="+")
    c = add("panels", cmd_panels, "generate a few samples per run with their nearest shots, for the paper's figures", trains=True)
    c.add_argument("--settings", required=True)
    c.add_argument("--manifest", action="append", default=[], help="TASK=PATH of a task's split manifest (repeat)")
    c.add_argument("--dataset", action="append", default=[], help="TASK=PATH of the target dataset that manifest indexes (repeat)")
    c.add_argument("--encoder", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("run_dirs", type=Path, nargs="+")
    c = add("paper", cmd_paper, "render every paper table, statistic and figure from a results folder (no training)")
    c.add_argument("--settings", default="{}", help="the config's `paper` section as JSON (defaults: the schema's)")
    c.add_argument("--input-dir", type=Path, required=True, help="a run's results/ folder, or reports/reference")
    c.add_argument("--output-dir", type=Path, required=True)
    c.add_argument("--reference", type=Path, default=None, help="a results folder to compare with, e.g. reports/reference")
    c = add("table", cmd_table, "render the Markdown results table from the CSV")
    c.add_argument("--input", type=Path, required=True)
    c.add_argument("--output", type=Path, required=True)
    c.add_argument("--oracle-draws", action="store_true", help="also select hyperparameter draws on the reference set (labelled)")
    c.add_argument("--settings", default="{}", help="the config's `paper` section as JSON: the verdicts' level and equivalence margin")
    add("methods", cmd_methods, "list the registered methods")
    return parser


def _requested_device(args: argparse.Namespace) -> str:
    """The `device` of a stage's settings (JSON), without parsing them fully; "auto" when there is none."""
    text = getattr(args, "settings", None) or (args.runs if getattr(args, "runs", None) else "{}")
    try:
        value = json.loads(text)
    except ValueError:
        return "auto"  # the stage itself reports the bad settings
    first = value[0].get("settings", {}) if isinstance(value, list) and value and isinstance(value[0], dict) else value
    return first.get("device", "auto") if isinstance(first, dict) else "auto"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        if args.gpu:
            from benchmark.devices import claim_gpu_slot  # before torch starts CUDA

            claim_gpu_slot(_requested_device(args))
        if args.trains:
            from benchmark.provenance import configure_determinism

            configure_determinism(args.threads)
        args.handler(args)
    except BenchmarkError as error:
        print(f"ganbench {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a full disk, an unwritable or missing folder, a failing device: the system's words
        where = f" ({error.filename})" if error.filename else ""
        print(
            f"ganbench {args.command}: error: {error.strerror or error}{where}. Check that this path exists and can be read "
            "and written, and that its disk has free space, then run the stage again.",
            file=sys.stderr,
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
