"""The scaling section: cost against clip length, Mirasol and the baseline.

One training step (batch 2 by default, AdamW, XLA-compiled) per clip length
and model: Mirasol with each Combiner, with and without rematerialisation,
and the unchunked baseline (`unchunked_config`). Snippets keep a fixed
number of frames, so a longer clip is more snippets. The ratios compare
numbers of this one run: the longest clip against one a quarter as long
(`t(512)/t(128)` by default), TTM against the Transformer Combiner, and
remat against none.
"""

from keras_mirasol.benchmark.tables import number
from keras_mirasol.benchmark.tables import table


def scaling_rows(records):
    """One row per scaling job: its time, memory and size, or why none.

    Args:
        records: the run's records (`{section, backend, job, result |
            error}`); those of other sections are skipped.

    Returns:
        list of dicts with `variant`, `frames`, `backend`, `step_s`,
        `peak_rss_mb`, `model_rss_mb` (peak minus the process before the
        model), `device_peak_mb`, `parameters`, `flops` and
        `out_of_memory` (the job passed the memory cap or was killed; the
        other values are then None).
    """
    rows = []
    for record in records:
        if record["section"] != "scaling":
            continue
        job = record["job"]
        row = dict(
            variant=job["variant"],
            frames=job["frames"],
            backend=record["backend"],
            step_s=None,
            peak_rss_mb=None,
            model_rss_mb=None,
            device_peak_mb=None,
            parameters=None,
            flops=None,
            out_of_memory=bool(record.get("out_of_memory")),
            error=record.get("error"),
        )
        result = record.get("result")
        if result is not None:
            row.update(
                step_s=result["median_s"],
                peak_rss_mb=result["peak_rss_mb"],
                model_rss_mb=result["peak_rss_mb"] - result["start_rss_mb"],
                device_peak_mb=result.get("device_peak_mb"),
                parameters=result["parameters"],
                flops=result.get("xla_flops"),
            )
        rows.append(row)
    return rows


def _memory(row):
    """The memory a row is compared by: the device's, else the RSS peak."""
    if row["device_peak_mb"] is not None:
        return row["device_peak_mb"]
    return row["peak_rss_mb"]


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def scaling_ratios(rows):
    """Growth from a clip to one four times longer, per model.

    Args:
        rows: from `scaling_rows`.

    Returns:
        dict with `long` and `short` (frames: the longest clip measured
        and the clip a quarter as long, or the shortest), `growth` (per
        backend and variant: `time` and `memory` ratios long/short,
        `model_memory` the same without the process's own memory,
        `same_parameters` across every length, and `out_of_memory_at`,
        the first length that did not fit), `ttm` (TTM over Transformer
        per length: `time`, `flops`) and `remat` (remat over none per
        Combiner and length: `time`, `memory`).
    """
    frames = sorted({row["frames"] for row in rows})
    if not frames:
        return {"long": None, "short": None, "growth": [], "comparisons": []}
    long = frames[-1]
    short = long // 4 if long // 4 in frames else frames[0]
    by_key = {(r["backend"], r["variant"], r["frames"]): r for r in rows}
    growth = []
    for backend, variant in sorted(
        {(r["backend"], r["variant"]) for r in rows}
    ):
        mine = [
            r
            for r in rows
            if (r["backend"], r["variant"]) == (backend, variant)
        ]
        a = by_key.get((backend, variant, long), {})
        b = by_key.get((backend, variant, short), {})
        fitted = [r for r in mine if r["parameters"] is not None]
        failed = sorted(r["frames"] for r in mine if r["out_of_memory"])
        growth.append(
            dict(
                backend=backend,
                variant=variant,
                time=_ratio(a.get("step_s"), b.get("step_s")),
                memory=_ratio(
                    _memory(a) if a.get("step_s") else None,
                    _memory(b) if b.get("step_s") else None,
                ),
                model_memory=_ratio(
                    a.get("model_rss_mb"), b.get("model_rss_mb")
                ),
                same_parameters=len({r["parameters"] for r in fitted}) == 1
                if fitted
                else None,
                out_of_memory_at=failed[0] if failed else None,
            )
        )
    comparisons = []
    for backend in sorted({r["backend"] for r in rows}):
        for n in frames:
            for variant, against, kind in (
                ("ttm", "transformer", "ttm"),
                ("transformer+remat", "transformer", "remat"),
                ("ttm+remat", "ttm", "remat"),
            ):
                a = by_key.get((backend, variant, n))
                b = by_key.get((backend, against, n))
                if not a or not b or a["step_s"] is None or b["step_s"] is None:
                    continue
                comparisons.append(
                    dict(
                        kind=kind,
                        backend=backend,
                        frames=n,
                        variant=variant,
                        against=against,
                        time=_ratio(a["step_s"], b["step_s"]),
                        flops=_ratio(a["flops"], b["flops"]),
                        memory=_ratio(_memory(a), _memory(b)),
                    )
                )
    return {
        "long": long,
        "short": short,
        "growth": growth,
        "comparisons": comparisons,
    }


def _times(value):
    return "-" if value is None else f"{value:.2f}x"


def format_scaling(rows, ratios):
    """The scaling section as Markdown tables."""
    memory_name = (
        "device peak MiB"
        if any(r["device_peak_mb"] is not None for r in rows)
        else "peak RSS MiB (model)"
    )
    step_rows = []
    for r in rows:
        if r["step_s"] is None:
            why = "out of memory" if r["out_of_memory"] else "failed"
            step_rows.append(
                [r["variant"], r["frames"], r["backend"], why, "-", "-", "-"]
            )
            continue
        if r["device_peak_mb"] is not None:
            memory = f"{r['device_peak_mb']:.0f}"
        else:
            memory = f"{r['peak_rss_mb']:.0f} ({r['model_rss_mb']:.0f})"
        step_rows.append(
            [
                r["variant"],
                r["frames"],
                r["backend"],
                number(r["step_s"]),
                memory,
                f"{r['parameters'] / 1e6:.2f}M",
                number((r["flops"] or 0) / 1e9 or None),
            ]
        )
    parts = [
        table(
            [
                "model",
                "frames",
                "backend",
                "step s",
                memory_name,
                "params",
                "GFLOP/step",
            ],
            step_rows,
        )
    ]
    long, short = ratios["long"], ratios["short"]
    parts.append(
        table(
            [
                "model",
                "backend",
                f"t({long})/t({short})",
                f"memory({long})/memory({short})",
                "model memory ratio",
                "same params at every length",
                "out of memory from",
            ],
            [
                [
                    g["variant"],
                    g["backend"],
                    _times(g["time"]),
                    _times(g["memory"]),
                    _times(g["model_memory"]),
                    g["same_parameters"],
                    g["out_of_memory_at"] or "-",
                ]
                for g in ratios["growth"]
            ],
        )
    )
    if ratios["comparisons"]:
        parts.append(
            table(
                [
                    "model",
                    "against",
                    "frames",
                    "backend",
                    "time",
                    "FLOPs",
                    "memory",
                ],
                [
                    [
                        c["variant"],
                        c["against"],
                        c["frames"],
                        c["backend"],
                        _times(c["time"]),
                        _times(c["flops"]),
                        _times(c["memory"]),
                    ]
                    for c in ratios["comparisons"]
                ],
            )
        )
    return "\n\n".join(parts)
