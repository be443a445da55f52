"""Paper figures (matplotlib, written as PNG and PDF). Each function returns {name: figure}; `save` writes them.

Every figure states its metric, direction and seeds in its axes or title; the captions of the HTML report
(`rules/report/paper.rst`) say what each shows. Methods keep one colour across all figures.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window (this runs in batch jobs)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from benchmark.comparison import mean_interval  # noqa: E402
from benchmark.hparam_selection import DEFAULTS as DEFAULTS_RULE  # noqa: E402
from benchmark.results import HEADLINE  # noqa: E402
from benchmark.selection import CURVE, FINAL  # noqa: E402

GRID_COLUMNS = 10  # at most this many shots or samples per row of a sample grid
PANEL_PAIRS = 4  # sample / nearest-shot pairs per method in the nearest-shot panel


def method_colours(methods: list[str]) -> dict[str, tuple]:
    palette = plt.get_cmap("tab10" if len(methods) <= 10 else "tab20").colors
    return {method: palette[index % len(palette)] for index, method in enumerate(sorted(methods))}


def save(figure: Figure, folder: Path, name: str) -> list[Path]:
    """PNG (150 dpi) and PDF, without creation dates so that reruns give the same files."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight", metadata={"Software": None})
    figure.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None, "Creator": None, "Producer": None})
    plt.close(figure)
    return paths


def _scale_axes(axis, values: np.ndarray, steps: bool = False) -> None:
    """Log scale for a metric spanning orders of magnitude (symlog where unbiased KID dips below 0); a symlog step
    axis, so that step 0 and the early steps of the adaptation curve stay visible."""
    finite = values[np.isfinite(values)]
    if len(finite) and finite.max() > 0 and finite.max() > 20 * max(np.percentile(np.abs(finite), 10), 1e-12):
        if finite.min() > 0:
            axis.set_yscale("log")
            axis.set_ylim(bottom=0.5 * finite.min())  # a band reaching 0 runs off the bottom instead of to 1e-300
        else:
            axis.set_yscale("symlog", linthresh=max(np.percentile(np.abs(finite), 10), 1e-6))
    if steps:
        axis.set_xscale("symlog", linthresh=10)
        axis.set_xlim(left=0)


def mean_and_interval(values: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Per x: mean of y over seeds and its 95% t-interval (NaN with one seed), from the engine's `mean_interval`."""
    stats = values.groupby(x)[y].agg(["mean", "std", "count"]).sort_index()
    stats["low"], stats["high"] = mean_interval(stats["mean"], stats["std"], stats["count"])
    return stats


def _interval_band(axis, stats: pd.DataFrame, scale: float, colour, label: str | None, emphasis: bool = True) -> None:
    """A curve of means with its 95% interval band; drawn faint (no band, no marker) where not the emphasis."""
    x, mean = stats.index.to_numpy(), stats["mean"].to_numpy() * scale
    if not emphasis:
        axis.plot(x, mean, color="0.75", linewidth=0.8, zorder=1)
        return
    axis.plot(x, mean, marker="o", markersize=2.5, color=colour, label=label, linewidth=1.5, zorder=3)
    low, high = stats["low"].to_numpy() * scale, stats["high"].to_numpy() * scale
    finite = np.isfinite(low) & np.isfinite(high)
    axis.fill_between(x[finite], low[finite], high[finite], color=colour, alpha=0.2, linewidth=0, zorder=2)


def metric_vs_shots(results: pd.DataFrame, checkpoint: str, rule: str) -> dict[str, Figure]:
    """Per task with two or more K: the headline metric against K per method, mean over seeds with its 95%
    t-interval band. None for a task with one K."""
    rows = results[results["checkpoint"].eq(checkpoint) & results["metric"].eq(HEADLINE.metric) & results["value"].notna()]
    colours = method_colours(sorted(set(results["method"])))
    figures = {}
    for task, block in rows.groupby("task", sort=True):
        if block["shots"].nunique() < 2:
            continue  # one K is a column of dots, not a curve: the tables show it
        figure, axis = plt.subplots(figsize=(5.5, 3.6))
        for method, by_method in block.groupby("method", sort=True):
            _interval_band(axis, mean_and_interval(by_method, "shots", "value"), HEADLINE.scale, colours[method], method)
        shots = sorted(set(block["shots"]))
        if len(shots) > 1 and shots[0] > 0:
            axis.set_xscale("log")
        _scale_axes(axis, block.groupby(["method", "shots"])["value"].mean().to_numpy() * HEADLINE.scale)
        axis.set_xticks(shots, [str(k) for k in shots])
        axis.set_xlabel("K (shots)")
        axis.set_ylabel(f"{HEADLINE.label} (lower is better)")
        seeds = block.groupby(["method", "shots"])["seed"].nunique()
        axis.set_title(f"{task}: {checkpoint} checkpoint, {rule}; n = {seeds.min()}-{seeds.max()} seeds", fontsize=8)
        axis.legend(fontsize=6, ncol=2, frameon=False)
        figures[f"kid_vs_k_{task}_{slug(checkpoint)}"] = figure
    return figures


def adaptation_curves(results: pd.DataFrame, rule: str) -> dict[str, Figure]:
    """Per task and K: validation KID against adaptation steps, one small panel per method (its mean over seeds and
    95% t-interval band, in colour, over every other method's mean in grey), ticks at the evaluated steps."""
    rows = results[results["checkpoint"].eq(CURVE) & results["metric"].eq(HEADLINE.metric) & results["value"].notna()]
    colours = method_colours(sorted(set(results["method"])))
    chosen_on_curve = rule != DEFAULTS_RULE and "draw" in rows and rows["draw"].nunique() > 1
    figures = {}
    for (task, shots), block in rows.groupby(["task", "shots"], sort=True):
        methods = sorted(set(block["method"]))
        per_method = {method: mean_and_interval(block[block["method"].eq(method)], "checkpoint_step", "value") for method in methods}
        steps = sorted({int(step) for step in block["checkpoint_step"]})
        columns = min(5, len(methods))
        lines = -(-len(methods) // columns)
        figure, axes = plt.subplots(lines, columns, figsize=(2.3 * columns + 0.6, 2.0 * lines + 0.7), sharex=True, sharey=True, squeeze=False)
        every_mean = np.concatenate([stats["mean"].to_numpy() for stats in per_method.values()]) * HEADLINE.scale
        for axis, method in zip(axes.flat, methods, strict=False):
            for other in methods:
                if other != method:
                    _interval_band(axis, per_method[other], HEADLINE.scale, None, None, emphasis=False)
            _interval_band(axis, per_method[method], HEADLINE.scale, colours[method], method)
            axis.set_title(method, fontsize=8, color=colours[method])
            _step_axis(axis, steps, every_mean)
        for axis in list(axes.flat)[len(methods) :]:
            axis.set_visible(False)
        for axis in axes[:, 0]:
            axis.set_ylabel(f"validation {HEADLINE.label}\n(lower is better)", fontsize=7)
        for axis in axes[-1, :]:
            axis.set_xlabel("adaptation step", fontsize=7)
        seeds = block.groupby("method")["seed"].nunique()
        seed_text = str(seeds.min()) if seeds.min() == seeds.max() else f"{seeds.min()}-{seeds.max()}"
        drawn = " (draws chosen on these curves' validation scores, each seed's on the other seeds)" if chosen_on_curve else ""
        figure.suptitle(f"{task}, K = {shots}: {rule}{drawn}. Mean over {seed_text} seeds, band: 95% t-interval of the mean", fontsize=8)
        figure.tight_layout()
        figures[f"adaptation_curve_{task}_k{shots}"] = figure
    return figures


def _step_axis(axis, steps: list[int], values: np.ndarray) -> None:
    """Symlog steps with a tick at every evaluated step (labelled where they do not crowd), a log or symlog metric."""
    _scale_axes(axis, values, steps=True)
    axis.set_xticks(steps)
    labelled, right = [], None
    for step in reversed(steps):  # the last step labelled; another unless within 0.25 decades of the label to its right
        crowded = right is not None and step > 10 and np.log10(right / step) < 0.25
        labelled.append("" if crowded else str(step))
        right = right if crowded else step
    axis.set_xticklabels(labelled[::-1], fontsize=6)
    axis.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    axis.tick_params(axis="y", labelsize=6)


def training_curves(training: pd.DataFrame, results: pd.DataFrame) -> dict[str, Figure]:
    """Per task and K, from the runs' training logs: the discriminator's and generator's losses and the validation
    KID against the step, per method (mean over seeds, 95% t-interval band), each method at one draw: the one its
    adaptation curve reports."""
    # One draw per method: the adaptation curve's (the validation-selected checkpoint's choice in a sweep), else the final's.
    source = results[results["checkpoint"].eq(CURVE)] if results["checkpoint"].eq(CURVE).any() else results[results["checkpoint"].eq(FINAL)]
    reported = source[["task", "shots", "method", "draw", "seed"]].drop_duplicates()  # cross-fitted: a draw per seed
    training = training.merge(reported, on=["task", "shots", "method", "draw", "seed"], how="inner")
    figures = {}
    quantities = [("loss_d", "D loss", 1.0), ("loss_g", "G loss", 1.0), ("kid_validation", f"validation {HEADLINE.label}", HEADLINE.scale)]
    colours = method_colours(sorted(set(results["method"])))
    for (task, shots), block in training.groupby(["task", "shots"], sort=True):
        figure, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for axis, (quantity, label, scale) in zip(axes, quantities, strict=True):
            rows = block[block["quantity"].eq(quantity) & block["value"].notna()]
            for method, by_method in rows.groupby("method", sort=True):
                _interval_band(axis, mean_and_interval(by_method, "step", "value"), scale, colours[method], method)
            if quantity == "kid_validation" and not rows.empty:
                _scale_axes(axis, rows.groupby(["method", "step"])["value"].mean().to_numpy() * scale)
            axis.set_xlabel("adaptation step")
            axis.set_ylabel(label)
            if rows.empty:
                axis.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axis.transAxes)
        axes[0].legend(fontsize=6, ncol=2, frameon=False)
        figure.suptitle(f"{task}, K = {shots}: training logs, mean over {block['seed'].nunique()} seeds, band: 95% t-interval", fontsize=9)
        figure.tight_layout()
        figures[f"training_{task}_k{shots}"] = figure
    return figures


def reported_panel_entries(panels: dict[str, np.ndarray], results: pd.DataFrame) -> pd.DataFrame:
    """The panel entries of the reported runs (each seed at its reported draw of the final checkpoint)."""
    index = pd.DataFrame(json.loads(str(panels["index"]))["runs"])
    reported = results[results["checkpoint"].eq(FINAL)][["task", "shots", "method", "draw", "seed"]].drop_duplicates()
    return index.merge(reported, on=["task", "shots", "method", "draw", "seed"], how="inner")


def panel_runs(panels: dict[str, np.ndarray], results: pd.DataFrame) -> pd.DataFrame:
    """The panel entries of the reported runs of the first seed: what the sample grids show."""
    index = reported_panel_entries(panels, results)
    first_seed = index.groupby(["task", "shots"])["seed"].transform("min")
    return index[index["seed"].eq(first_seed)].sort_values(["task", "shots", "method"]).reset_index(drop=True)


def _mosaic(rows: list[np.ndarray | None], columns: int, gap: int = 2) -> np.ndarray:
    """Rows of uint8 N x C x H x W images as one grey or RGB picture (missing rows and cells left white)."""
    shape = next(row.shape[1:] for row in rows if row is not None)
    channels, height, width = shape
    picture = np.full((len(rows) * (height + gap), columns * (width + gap), channels), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate([] if row is None else row[:columns]):
            top, left = r * (height + gap), c * (width + gap)
            picture[top : top + height, left : left + width] = image.transpose(1, 2, 0)
    return picture[..., 0] if channels == 1 else picture


def sample_grids(panels: dict[str, np.ndarray], results: pd.DataFrame) -> dict[str, Figure]:
    """Per task and K: the K real shots (first row), then each method's samples from the same latent codes."""
    runs = panel_runs(panels, results)
    figures = {}
    for (task, shots), block in runs.groupby(["task", "shots"], sort=True):
        real = panels[block["shots_array"].iloc[0]]
        rows = [real] + [panels[name] if isinstance(name, str) else None for name in block.get("samples_array", [None] * len(block))]
        labels = [f"{len(real)} real shots" + (f" (first {GRID_COLUMNS})" if len(real) > GRID_COLUMNS else "")]
        labels += [m if status != "diverged" else f"{m} (diverged)" for m, status in zip(block["method"], block["status"], strict=True)]
        figures[f"samples_{task}_k{shots}"] = _picture(
            rows, labels, f"{task}, K = {shots}: samples from the same latent codes (seed {block['seed'].iloc[0]}, final checkpoint)"
        )
    return figures


def _picture(rows: list[np.ndarray | None], labels: list[str], title: str) -> Figure:
    columns = min(GRID_COLUMNS, max(len(row) for row in rows if row is not None))
    picture = _mosaic(rows, columns)
    height = picture.shape[0] / len(rows)
    figure, axis = plt.subplots(figsize=(1.2 + 0.45 * columns, 0.45 * len(rows) + 0.6))
    axis.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    axis.set_yticks([height * (i + 0.5) for i in range(len(rows))], labels, fontsize=7)
    axis.set_xticks([])
    for side in axis.spines.values():
        side.set_visible(False)
    axis.set_title(title, fontsize=8)
    return figure


def _closest_candidates(panels: dict[str, np.ndarray], run: pd.Series, threshold: float | None) -> list[tuple]:
    """(distance, sample, its nearest shot, threshold, seed) of a run's candidates: the closest of all its scored
    samples where the panels file keeps them, else the grid's few samples (files written before issue 26)."""
    real = panels[run["shots_array"]]
    kind = "closest_" if isinstance(run.get("closest_samples_array"), str) else ""
    samples, nearest, distance = (panels[run[f"{kind}{name}_array"]] for name in ("samples", "nearest", "distance"))
    return [(float(distance[i]), samples[i], real[nearest[i]], threshold, int(run["seed"])) for i in range(len(samples))]


def nearest_shot_panels(panels: dict[str, np.ndarray], results: pd.DataFrame) -> dict[str, Figure]:
    """Per task and K: for each method its `PANEL_PAIRS` generated samples closest to a training shot, over every
    sample the evaluation scored on every seed (the panels file keeps each run's closest), each beside that shot
    (from its own seed's shots), labelled with the squared encoder-LPIPS distance and the seed; "*" where it is
    below its run's memorisation threshold (the quantile of held-out real images' nearest-shot distances: what the
    memorised share counts)."""
    entries = reported_panel_entries(panels, results)
    thresholds = _thresholds(results)
    figures = {}
    for (task, shots), block in entries.groupby(["task", "shots"], sort=True):
        block = block[block["status"].ne("diverged")]
        if block.empty:
            continue
        methods = sorted(set(block["method"]))
        pooled = "closest_samples_array" in block and block["closest_samples_array"].map(lambda name: isinstance(name, str)).all()
        figure, axes = plt.subplots(len(methods), 1, figsize=(2 * PANEL_PAIRS + 1.5, 0.95 * len(methods) + 0.6), squeeze=False)
        for axis, method in zip(axes[:, 0], methods, strict=True):
            candidates = []
            for _, run in block[block["method"].eq(method)].iterrows():
                threshold = thresholds.get((run["task"], run["shots"], run["method"], run["draw"], run["seed"]))
                candidates += _closest_candidates(panels, run, threshold)
            chosen = sorted(candidates, key=lambda candidate: candidate[0])[:PANEL_PAIRS]
            pairs = []
            for _, sample, shot, _, _ in chosen:
                pairs += [sample, shot, np.full_like(sample, 255)]
            axis.imshow(_mosaic([np.stack(pairs)], len(pairs)), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            width = chosen[0][1].shape[-1] + 2
            for slot, (distance, _, _, threshold, seed) in enumerate(chosen):
                flag = " *" if threshold is not None and distance < threshold else ""
                axis.text((3 * slot + 1) * width, -2, f"d\u00b2={distance:.3f}{flag} (s{seed})", ha="center", va="bottom", fontsize=6)
            axis.set_yticks([chosen[0][1].shape[-2] / 2], [method], fontsize=7)
            axis.set_xticks([])
            for side in axis.spines.values():
                side.set_visible(False)
        seeds = block["seed"].nunique()
        scope = (
            f"the closest of all {int(block['closest_of'].max())} scored samples of each of {seeds} seeds"
            if pooled
            else f"the closest of the first seed's {len(panels[block['samples_array'].iloc[0]])} panel samples"
        )
        figure.suptitle(
            f"{task}, K = {shots}: {scope}, each beside its nearest shot (squared encoder-LPIPS d\u00b2; sN: seed). *: closer to its "
            f"nearest shot than {1 - _calibration_quantile(results):.0%}\nof held-out real images are to theirs (what the memorised "
            "share counts; a distance criterion, not a judgement that it copies)",
            fontsize=8,
        )
        figure.tight_layout()
        figures[f"nearest_{task}_k{shots}"] = figure
    return figures


def _calibration_quantile(results: pd.DataFrame) -> float:
    """The held-out quantile the memorisation threshold sits at (the records' `calibration_quantile`; 0.05 if absent)."""
    rows = results[results["metric"].eq("memorisation_share") & results["value"].notna()]
    for details in rows.get("details", pd.Series(dtype=object)):
        if isinstance(details, str) and "calibration_quantile" in details:
            return float(json.loads(details)["calibration_quantile"])
    return 0.05


def _thresholds(results: pd.DataFrame) -> dict[tuple, float]:
    rows = results[results["checkpoint"].eq(FINAL) & results["metric"].eq("memorisation_share") & results["value"].notna()]
    out = {}
    for _, row in rows.iterrows():
        threshold = json.loads(row["details"]).get("threshold") if isinstance(row.get("details"), str) else None
        if threshold is not None:
            out[(row["task"], row["shots"], row["method"], row["draw"], row["seed"])] = float(threshold)
    return out


def critical_difference(rank_result, title: str) -> Figure:
    """autorank's critical-difference diagram: mean ranks, methods joined where Nemenyi does not separate them."""
    from autorank import plot_stats

    figure, axis = plt.subplots(figsize=(7, 3))
    plot_stats(rank_result, allow_insignificant=True, ax=axis)
    axis.set_title(title, fontsize=8)
    return figure


def slug(text: str) -> str:
    return "".join(character if character.isalnum() else "_" for character in text).strip("_")
