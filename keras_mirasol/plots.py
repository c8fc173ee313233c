"""Figures of training, evaluation, benchmarks and attention (matplotlib).

Needs the `guides` extra (`pip install 'keras-mirasol[guides]'`, which
installs matplotlib). Each function draws one figure from what a run
already wrote (`history.json`, the demo's summary line, `bench`'s JSON, a
`snippet_attention` map), saves it as a PNG and returns the path:

    plot_history(...)              training curves, loss and accuracy
    plot_accuracy_by_type(...)     per-question-type accuracy, ablations
    plot_scaling(...)              step time and memory against frames
    plot_snippet_attention(...)    which snippets the answer tokens read

`keras-mirasol plot` draws the first three from a run folder, a summary
and a bench file.
"""

import json
import os

import numpy as np

# A summary's ablations, as the demo writes them, and their labels.
ABLATIONS = {
    "per_type": "full input",
    "zero_video": "video zeroed",
    "zero_audio": "audio zeroed",
}


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError(
            "Plots need matplotlib: pip install 'keras-mirasol[guides]' "
            "(or matplotlib)."
        ) from error
    # Files only: no display is needed, or used.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def _load_json(value, name):
    """`value` itself, or the JSON in the file (or `name` in the folder)
    it names."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if os.path.isdir(path):
            path = os.path.join(path, name)
        with open(path) as f:
            return json.load(f)
    return value


def _validation_epochs(epochs, count):
    """The epochs (from 1) of `count` validation entries over `epochs`:
    every `k`-th epoch and the last, for the `k` that gives `count`."""
    for every in range(1, epochs + 1):
        chosen = [e for e in range(1, epochs + 1) if e % every == 0]
        if chosen[-1] != epochs:
            chosen.append(epochs)
        if len(chosen) == count:
            return chosen
    return list(range(epochs - count + 1, epochs + 1))


def plot_history(
    history,
    path,
    steps=None,
    metrics=("loss", "sparse_categorical_accuracy"),
    title=None,
):
    """Training curves: one panel per metric, training and validation.

    Args:
        history: dict of metric name to a list of one value per epoch
            (what `train` returns and writes), or the path of a
            `history.json` or of the run folder holding it.
        path: str. The PNG to write.
        steps: int or None. Training steps of the whole run: the x axis
            counts steps (epochs are equal shares). Defaults to `None`,
            which counts epochs.
        metrics: tuple of str. The metrics to draw, each with its `val_`
            twin where there is one. Defaults to `("loss",
            "sparse_categorical_accuracy")`.
        title: str or None. The figure's title. Defaults to `None`.

    Returns:
        str: `path`.

    Raises:
        ValueError: none of `metrics` is in `history`.
    """
    history = _load_json(history, "history.json")
    drawn = [m for m in metrics if history.get(m)]
    if not drawn:
        raise ValueError(
            f"None of the metrics {list(metrics)} is in the history (it "
            f"has {sorted(history)}); pass metrics= from those."
        )
    plt = _pyplot()
    figure, axes = plt.subplots(
        1, len(drawn), figsize=(4.5 * len(drawn), 3.4), squeeze=False
    )
    epochs = len(history[drawn[0]])
    scale = steps / epochs if steps else 1
    for axis, metric in zip(axes[0], drawn):
        values = history[metric]
        x = [scale * (e + 1) for e in range(len(values))]
        axis.plot(x, values, marker="o", markersize=3, label="training")
        validation = history.get(f"val_{metric}") or []
        if validation:
            at = _validation_epochs(len(values), len(validation))
            axis.plot(
                [scale * e for e in at],
                validation,
                marker="s",
                linestyle="--",
                label="validation",
            )
        axis.set_xlabel("step" if steps else "epoch")
        axis.set_title(metric.replace("_", " "))
        if "loss" in metric and min(values) > 0:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
        axis.legend()
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_accuracy_by_type(results, path, title=None):
    """Per-question-type accuracy, one group of bars per type.

    Args:
        results: dict of a label to `{type: accuracy}` (one bar each), or
            a summary as `keras-mirasol demo` prints it (its `per_type`,
            `zero_video` and `zero_audio` become the full input and the
            two ablations), or the path of a JSON file holding either.
        path: str. The PNG to write.
        title: str or None. The figure's title. Defaults to `None`.

    Returns:
        str: `path`.

    Raises:
        ValueError: `results` holds no accuracy.
    """
    results = _load_json(results, "summary.json")
    if "per_type" in results:
        results = {
            label: results[key]
            for key, label in ABLATIONS.items()
            if results.get(key)
        }
    results = {k: v for k, v in results.items() if isinstance(v, dict) and v}
    if not results:
        raise ValueError(
            "No accuracies to draw: give {label: {type: accuracy}} or a "
            "demo summary with per_type."
        )
    types = sorted({t for accuracies in results.values() for t in accuracies})
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(1.3 * len(types) + 2.5, 3.6))
    width = 0.8 / len(results)
    positions = np.arange(len(types))
    for index, (label, accuracies) in enumerate(results.items()):
        heights = [accuracies.get(t, np.nan) for t in types]
        bars = axis.bar(
            positions + (index - (len(results) - 1) / 2) * width,
            heights,
            width,
            label=label,
        )
        axis.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
    axis.set_xticks(positions, [t or "(no type)" for t in types])
    axis.set_ylim(0, 1.1)
    axis.set_ylabel("accuracy")
    axis.legend(
        loc="upper center",
        bbox_to_anchor=(0.5, -0.1),
        ncol=len(results),
        fontsize=8,
    )
    axis.grid(axis="y", alpha=0.3)
    if title:
        axis.set_title(title)
    return _save(figure, path)


def plot_scaling(bench, path, title=None, time_label=None):
    """Step time and peak memory against clip length, one line per model.

    Args:
        bench: the JSON `keras-mirasol bench --scaling` writes (a dict
            with `summary`, or the summary itself, or its `scaling` rows:
            dicts with `variant`, `frames`, `step_s`, and optionally
            `peak_rss_mb` and `out_of_memory`), or that file's path. The
            memory panel is drawn when a row has `peak_rss_mb`.
        path: str. The PNG to write.
        title: str or None. The figure's title. Defaults to `None`.
        time_label: str or None. The time axis's label. Defaults to
            `None`, which means "seconds per training step".

    Returns:
        str: `path`.

    Raises:
        ValueError: `bench` holds no scaling rows.
    """
    bench = _load_json(bench, "bench.json")
    rows = bench
    if isinstance(rows, dict):
        rows = rows.get("summary", rows).get("scaling") or []
    if not rows:
        raise ValueError(
            "No scaling rows: give the JSON written by "
            "`keras-mirasol bench --scaling`."
        )
    panels = [("step_s", time_label or "seconds per training step", 1)]
    if any(row.get("peak_rss_mb") is not None for row in rows):
        panels.append(("peak_rss_mb", "peak RSS (GiB)", 1024))
    plt = _pyplot()
    figure, axes = plt.subplots(
        1, len(panels), figsize=(5 * len(panels), 3.8), squeeze=False
    )
    axes = axes[0]
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    for variant in variants:
        mine = sorted(
            (row for row in rows if row["variant"] == variant),
            key=lambda row: row["frames"],
        )
        lost = [r for r in mine if r.get("out_of_memory")]
        for axis, (key, _, unit) in zip(axes, panels):
            ran = [r for r in mine if r.get(key) is not None]
            line = axis.plot(
                [r["frames"] for r in ran],
                [r[key] / unit for r in ran],
                marker="o",
                label=variant,
            )[0]
            for row in lost:
                axis.annotate(
                    "out of memory",
                    (row["frames"], axis.get_ylim()[1]),
                    color=line.get_color(),
                    fontsize=7,
                    ha="center",
                )
                axis.axvline(
                    row["frames"], color=line.get_color(), alpha=0.3, ls=":"
                )
    frames = sorted({row["frames"] for row in rows})
    for axis, (_, label, _) in zip(axes, panels):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(frames, [str(f) for f in frames])
        axis.set_xticks([], minor=True)
        axis.set_xlabel("frames per clip")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_snippet_attention(weights, path, tokens=None, title=None):
    """A heat map of which snippets each text position reads.

    Args:
        weights: float `[L, T]` (one clip of `snippet_attention`'s
            `[B, L, T]`).
        path: str. The PNG to write.
        tokens: list of str or None. A label per text position. Defaults
            to `None` (positions are numbered).
        title: str or None. The figure's title. Defaults to `None`.

    Returns:
        str: `path`.

    Raises:
        ValueError: `weights` is not 2-D, or `tokens` does not label
            every row.
    """
    weights = np.asarray(weights, dtype="float32")
    if weights.ndim != 2:
        raise ValueError(
            f"weights has shape {weights.shape}: give one clip's [L, T] "
            "map, e.g. snippet_attention(...)[0]."
        )
    if tokens is not None and len(tokens) != weights.shape[0]:
        raise ValueError(
            f"{len(tokens)} tokens for {weights.shape[0]} rows of weights."
        )
    plt = _pyplot()
    length, snippets = weights.shape
    figure, axis = plt.subplots(
        figsize=(min(12, 2 + 0.3 * snippets), min(10, 1.5 + 0.3 * length))
    )
    image = axis.imshow(weights, aspect="auto", cmap="viridis", vmin=0)
    figure.colorbar(image, ax=axis, label="attention weight")
    axis.set_xlabel("snippet (time)")
    axis.set_ylabel("text position")
    if tokens is not None:
        axis.set_yticks(range(length), tokens, fontsize=7)
    if title:
        axis.set_title(title)
    return _save(figure, path)
