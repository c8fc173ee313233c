"""`keras-mirasol bench`: every measurement in one run, one at a time.

Each job runs in its own process (`keras_mirasol.benchmark.worker`), one
after the other, never two at once; the runner collects the results,
derives the ratios (MFU, speedups) from numbers of this same run, prints
a table and writes everything as JSON.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from keras_mirasol.benchmark.configs import CONFIG_NAMES
from keras_mirasol.benchmark.configs import SCALING_FRAMES
from keras_mirasol.benchmark.configs import SCALING_VARIANTS
from keras_mirasol.benchmark.configs import benchmark_config
from keras_mirasol.benchmark.configs import spectrogram_frames
from keras_mirasol.benchmark.measure import compute_dtype
from keras_mirasol.benchmark.scaling import format_scaling
from keras_mirasol.benchmark.scaling import scaling_ratios
from keras_mirasol.benchmark.scaling import scaling_rows
from keras_mirasol.benchmark.tables import millions as _millions
from keras_mirasol.benchmark.tables import number as _f
from keras_mirasol.benchmark.tables import table as _table
from keras_mirasol.host_memory import with_huge_pages

SECTIONS = ("train", "parts", "port", "generate", "stream", "pipeline")
# Not run unless asked for (`--scaling`): long clips take many minutes.
EXTRA_SECTIONS = ("scaling",)
# (frames, spectrogram frames) of the peer-matched points: the port and
# our model get the same length at each frame count.
PEER_POINTS = ((16, 1024), (64, 4096))
GENERATE_TOKENS = (32, 64)
# The last snippet index timed by the stream section.
STREAM_SNIPPETS = 64


class JobError(RuntimeError):
    pass


class OutOfMemory(JobError):
    """A job that did not fit in the memory it was given."""


# What a backend's allocation failure says: XLA (JAX, TF with XLA),
# TensorFlow and torch.
_OUT_OF_MEMORY = (
    "Out of memory allocating",
    "RESOURCE_EXHAUSTED",
    "OutOfMemoryError",
    "CUDA out of memory",
)


def _rss_mb(pid):
    """Resident memory of process `pid` in MiB, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_job(job, backend=None, timeout=3600, memory_cap_mb=None, command=None):
    """Run `job` in a fresh process; return its result dict.

    Args:
        job: dict for `keras_mirasol.benchmark.worker`.
        backend: str or None. `KERAS_BACKEND` of the process.
        timeout: float. Seconds before the job is stopped.
        memory_cap_mb: float or None. Stop the job when its resident
            memory passes this (read from `/proc` twice a second), so a
            model that does not fit is reported, not left to push the
            machine into swap or its out-of-memory killer.
        command: list of str or None. The process to run. Defaults to
            `None`, which means the benchmark worker with `job`.

    Raises:
        OutOfMemory: the job passed `memory_cap_mb`, was killed by the
            system (SIGKILL) or failed to allocate memory in the backend
            (XLA, TensorFlow or torch), naming the job.
        JobError: naming the job and the end of its stderr.
    """
    # Huge pages for XLA's per-step host buffers (`host_memory`): the
    # step's cost, not the kernel's page faults, is what is measured.
    env = with_huge_pages(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    command = command or [
        sys.executable,
        "-m",
        "keras_mirasol.benchmark.worker",
        json.dumps(job),
    ]
    with (
        tempfile.TemporaryFile("w+") as out,
        tempfile.TemporaryFile("w+") as err,
    ):
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        start = time.monotonic()
        peak = 0.0
        while process.poll() is None:
            rss = _rss_mb(process.pid) or 0.0
            peak = max(peak, rss)
            if memory_cap_mb is not None and rss > memory_cap_mb:
                process.kill()
                process.wait()
                raise OutOfMemory(
                    f"{job} passed the memory cap of {memory_cap_mb:.0f} MiB "
                    f"({rss:.0f} MiB resident) and was stopped"
                )
            if time.monotonic() - start > timeout:
                process.kill()
                process.wait()
                raise JobError(f"{job} timed out after {timeout} s")
            time.sleep(0.5)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode == -signal.SIGKILL:
        raise OutOfMemory(
            f"{job} was killed by the system (SIGKILL, out of memory?) at "
            f"{peak:.0f} MiB resident"
        )
    lines = stdout.strip().splitlines()
    allocation_failure = next(
        (
            line.strip()
            for line in reversed(stderr.splitlines())
            if any(m in line for m in _OUT_OF_MEMORY)
        ),
        None,
    )
    if process.returncode and allocation_failure:
        raise OutOfMemory(
            f"{job} ran out of memory in the backend: {allocation_failure}"
        )
    if process.returncode or not lines:
        raise JobError(
            f"{job} on {backend} failed (exit {process.returncode}):\n"
            + stderr[-3000:]
        )
    return json.loads(lines[-1])


def default_backends():
    """The backends `keras-mirasol bench` measures unless told.

    JAX and TensorFlow (both compile the step with XLA), and torch (which
    runs it eagerly) where it is installed: it is not a dependency of the
    package.

    Returns:
        list of str.
    """
    backends = ["jax", "tensorflow"]
    if importlib.util.find_spec("torch") is not None:
        backends.append("torch")
    return backends


def plan_jobs(
    configs=CONFIG_NAMES,
    backends=("jax", "tensorflow"),
    sections=SECTIONS,
    dtypes=("float32", "mixed_bfloat16"),
    batch_size=2,
    steps=10,
    threads=None,
    peer_points=PEER_POINTS,
    train_batch_sizes=None,
    generate_tokens=GENERATE_TOKENS,
    records=None,
    scaling_config="peer-matched",
    scaling_frames=SCALING_FRAMES,
    scaling_variants=SCALING_VARIANTS,
):
    """The benchmark's jobs, in the order they run.

    Args:
        batch_size: int. Clips per step of every section (the pipeline's
            demo batches aside). Defaults to `2`.
        train_batch_sizes: ints or None. Batch sizes of the train
            section, each timed at every point and dtype (MFU against
            batch size). Defaults to `None`, which means `(batch_size,)`.
        records: str or None. `convert` output for the pipeline section
            (default: 200 synthetic clips written for it).
        scaling_config: str. Config of the scaling section (see
            `configs.scaling_config`). Defaults to `"peer-matched"`.
        scaling_frames: ints. Clip lengths of the scaling section.
            Defaults to `SCALING_FRAMES`.
        scaling_variants: strs. Models of the scaling section. Defaults to
            `SCALING_VARIANTS`.

    Returns:
        list of `(section, backend, job)`; `backend` is None for the
        port's jobs.
    """
    threads = threads or os.cpu_count()
    # Each step's MFU is over the matmul peak of the dtype it computes in.
    peak_dtypes = sorted({"float32"} | {compute_dtype(d) for d in dtypes})
    jobs = []
    train_points = []
    for name in configs:
        if name == "peer-matched":
            for frames, spec in peer_points:
                train_points.append(
                    dict(config=name, frames=frames, spectrogram_frames=spec)
                )
        else:
            train_points.append(dict(config=name))
    for backend in backends:
        jobs.append(("peak", backend, {"kind": "peak", "dtypes": peak_dtypes}))
        if "train" in sections:
            for point in train_points:
                for size in train_batch_sizes or (batch_size,):
                    for dtype in dtypes:
                        jobs.append(
                            (
                                "train",
                                backend,
                                dict(
                                    point,
                                    kind="train",
                                    dtype=dtype,
                                    batch_size=size,
                                    steps=steps,
                                ),
                            )
                        )
        if "parts" in sections:
            jobs.append(
                (
                    "parts",
                    backend,
                    dict(
                        kind="parts",
                        config="peer-matched",
                        frames=peer_points[0][0],
                        spectrogram_frames=peer_points[0][1],
                        batch_size=batch_size,
                        steps=steps,
                    ),
                )
            )
        if "generate" in sections:
            for tokens in generate_tokens:
                jobs.append(
                    (
                        "generate",
                        backend,
                        dict(
                            kind="generate",
                            config="peer-matched",
                            frames=peer_points[0][0],
                            spectrogram_frames=peer_points[0][1],
                            new_tokens=tokens,
                            batch_size=batch_size,
                            steps=max(3, steps // 2),
                        ),
                    )
                )
        if "stream" in sections:
            jobs.append(
                (
                    "stream",
                    backend,
                    dict(
                        kind="stream",
                        config="peer-matched",
                        frames=peer_points[0][0],
                        spectrogram_frames=peer_points[0][1],
                        snippets=STREAM_SNIPPETS,
                        batch_size=1,
                    ),
                )
            )
        if "scaling" in sections:
            for frames in scaling_frames:
                for variant in scaling_variants:
                    jobs.append(
                        (
                            "scaling",
                            backend,
                            dict(
                                kind="scaling",
                                config=scaling_config,
                                frames=frames,
                                variant=variant,
                                batch_size=batch_size,
                                steps=steps,
                            ),
                        )
                    )
        if "pipeline" in sections:
            jobs.append(
                (
                    "pipeline",
                    backend,
                    dict(
                        kind="pipeline",
                        config="mirasol_tiny",
                        batch_size=96,
                        questions_per_clip=6,
                        steps=steps * 2,
                        records=records,
                    ),
                )
            )
    if "port" in sections:
        for frames, spec in peer_points:
            jobs.append(
                (
                    "port",
                    None,
                    dict(
                        kind="port_train",
                        frames=frames,
                        spectrogram_frames=spec,
                        batch_size=batch_size,
                        steps=steps,
                        threads=threads,
                    ),
                )
            )
        if "generate" in sections:
            for tokens in generate_tokens:
                jobs.append(
                    (
                        "port",
                        None,
                        dict(
                            kind="port_generate",
                            frames=peer_points[0][0],
                            spectrogram_frames=peer_points[0][1],
                            new_tokens=tokens,
                            batch_size=batch_size,
                            steps=max(3, steps // 2),
                            threads=threads,
                        ),
                    )
                )
    return jobs


# A backend whose products in a step's compute dtype run more than this
# many times slower than in float32 has no instructions for that dtype on
# this machine (`drop_slow_dtypes`).
SLOW_DTYPE_FACTOR = 8.0


def probe_dtype(backend, dtype):
    """`measure.dtype_slowdown(dtype)` on `backend`, in a worker process."""
    return run_job(
        {"kind": "dtype_probe", "dtype": dtype}, backend, timeout=600
    )


def _step_dtype(section, backend, job):
    """`(backend, compute dtype)` of a training step job; None otherwise."""
    if section != "train":
        return None
    return backend, compute_dtype(job["dtype"])


def drop_slow_dtypes(jobs, probe=None, log=print):
    """`jobs` without training steps in a dtype a backend runs far too slowly.

    For each backend with training steps in a compute dtype other than
    float32 (bfloat16 for `mixed_bfloat16`), `probe` times small products
    in that dtype and in float32. Where that dtype is over
    `SLOW_DTYPE_FACTOR` times slower, the backend's steps in it and its
    matmul peak in it leave the plan, and the reason is logged: on a CPU
    without bfloat16 instructions, torch's bfloat16 products run through
    generic kernels 60-125x slower than float32, and its `mixed_bfloat16`
    steps would take hours. A probe that fails keeps the jobs.

    Args:
        jobs: from `plan_jobs`.
        probe: function of `(backend, dtype)` returning
            `measure.dtype_slowdown`'s dict, or None for `probe_dtype`.
            Defaults to `None`.
        log: function of one str. Defaults to `print`.

    Returns:
        `(jobs, skipped)`: the jobs kept, and one dict per backend and
        dtype left out, with `backend`, `dtype`, `gflops`,
        `float32_gflops`, `slowdown`, `jobs` (training steps left out)
        and `reason`.
    """
    probe = probe or probe_dtype
    counts = {}
    for job in jobs:
        key = _step_dtype(*job)
        if key is not None and key[1] != "float32":
            counts[key] = counts.get(key, 0) + 1
    skipped = []
    for (backend, dtype), count in counts.items():
        try:
            probed = probe(backend, dtype)
        except JobError as error:
            log(
                f"could not probe {backend}'s {dtype} products, keeping its "
                f"{dtype} jobs: {str(error).splitlines()[0]}"
            )
            continue
        if probed["slowdown"] <= SLOW_DTYPE_FACTOR:
            continue
        reason = (
            f"{backend}'s {dtype} training steps: its {dtype} products "
            f"run at {probed['gflops']:.1f} GFLOP/s against "
            f"{probed['float32_gflops']:.0f} in float32 on this machine, "
            f"{probed['slowdown']:.0f}x slower (no {dtype} instructions "
            f"for them), so its {count} step job(s) in {dtype} would take "
            "hours. `--dtypes float32` asks for none."
        )
        log(f"skipping {reason}")
        skipped.append(
            dict(
                backend=backend,
                dtype=dtype,
                gflops=probed["gflops"],
                float32_gflops=probed["float32_gflops"],
                slowdown=probed["slowdown"],
                jobs=count,
                reason=reason,
            )
        )
    slow = {(s["backend"], s["dtype"]) for s in skipped}
    kept = []
    for section, backend, job in jobs:
        if _step_dtype(section, backend, job) in slow:
            continue
        if section == "peak":
            dtypes = [d for d in job["dtypes"] if (backend, d) not in slow]
            job = dict(job, dtypes=dtypes)
        kept.append((section, backend, job))
    return kept, skipped


def _point_name(job):
    if job["config"] == "peer-matched":
        return f"peer-matched {job['frames']}f/{job['spectrogram_frames']}"
    return job["config"]


def _train_key(job):
    """`(point name, dtype, batch size)` of a train job: one row each."""
    return _point_name(job), job["dtype"], job["batch_size"]


def _same_step(row, port_job):
    """Whether our train row times the step the port's job times."""
    return (
        row["config"] == _point_name(dict(port_job, config="peer-matched"))
        and row["dtype"] == "float32"
        and row["batch_size"] == port_job["batch_size"]
    )


def summarize(records):
    """Derive the ratios from one run's job records.

    Args:
        records: list of dicts `{section, backend, job, result}` (or
            `error` in place of `result`).

    Returns:
        dict with `peak`, `train`, `port`, `generate`, `stream`,
        `pipeline` rows.
    """
    peaks_by_dtype = {
        r["backend"]: {
            dtype: peak["gflops"]
            for dtype, peak in r["result"]
            .get("dtypes", {"float32": r["result"]})
            .items()
        }
        for r in records
        if r["section"] == "peak" and "result" in r
    }
    peaks = {
        backend: by_dtype["float32"]
        for backend, by_dtype in peaks_by_dtype.items()
        if "float32" in by_dtype
    }
    flops = {}
    for r in records:
        if r["section"] == "train" and "xla_flops" in r.get("result", {}):
            flops[_train_key(r["job"])] = r["result"]["xla_flops"]
    summary = {
        "peak_gflops": peaks,
        "peak_gflops_by_dtype": peaks_by_dtype,
        "host_memory": sorted(
            {
                r["result"]["host_memory"]
                for r in records
                if "host_memory" in r.get("result", {})
            }
        ),
        "train": [],
        "port": [],
        "parts": [],
        "generate": [],
        "stream": [],
        "pipeline": [],
        "errors": [],
    }
    for r in records:
        if r["section"] == "scaling":
            continue
        if "error" in r:
            summary["errors"].append(
                {"section": r["section"], "job": r["job"], "error": r["error"]}
            )
            continue
        result, job = r["result"], r["job"]
        if r["section"] == "train":
            key = _train_key(job)
            row = dict(
                config=key[0],
                dtype=key[1],
                batch_size=key[2],
                backend=r["backend"],
                step_s=result["median_s"],
                min_s=result["min_s"],
                max_s=result["max_s"],
                samples_per_s=result["samples_per_s"],
                compile_s=result["compile_s"],
                parameters=result["parameters"],
                retraces=result["retraces"],
            )
            if key in flops:
                row["flops"] = flops[key]
                row["flops_source"] = "XLA cost analysis of the JAX step"
                peak = peaks_by_dtype.get(r["backend"], {}).get(
                    compute_dtype(job["dtype"])
                )
                if peak:
                    row["mfu"] = flops[key] / result["median_s"] / 1e9 / peak
                    row["mfu_peak_dtype"] = compute_dtype(job["dtype"])
            if job["config"] != "peer-matched":
                config = benchmark_config(job["config"])
            else:
                config = benchmark_config(
                    "peer-matched", job["frames"], job["spectrogram_frames"]
                )
            row["spectrogram_frames"] = spectrogram_frames(config)
            summary["train"].append(row)
        elif r["section"] == "generate":
            summary["generate"].append(
                dict(
                    backend=r["backend"],
                    new_tokens=result["new_tokens"],
                    cached_tokens_per_s=result["cached"]["tokens_per_s"],
                    uncached_tokens_per_s=result["uncached"]["tokens_per_s"],
                    cached_s=result["cached"]["median_s"],
                    uncached_s=result["uncached"]["median_s"],
                    cached_compile_s=result["cached"]["compile_s"],
                    speedup=result["speedup"],
                    cached_decode_tokens_per_s=result["cached_decode"][
                        "tokens_per_s"
                    ],
                    uncached_decode_tokens_per_s=result["uncached_decode"][
                        "tokens_per_s"
                    ],
                    decode_speedup=result["decode_speedup"],
                    retraces=result["retraces"],
                    same_tokens=result["same_tokens"],
                )
            )
        elif r["section"] == "parts":
            summary["parts"].extend(_part_rows(r, peaks))
        elif r["section"] == "pipeline":
            summary["pipeline"].append(dict(result, backend=r["backend"]))
        elif r["section"] == "stream":
            summary["stream"].append(
                dict(result, config=_point_name(job), backend=r["backend"])
            )
        elif r["section"] == "port":
            summary["port"].append(dict(result, kind=job["kind"], job=job))
    summary["scaling"] = scaling_rows(records)
    summary["scaling_ratios"] = scaling_ratios(summary["scaling"])
    _compare_with_port(summary)
    _share_part_flops(summary["parts"], peaks)
    return summary


def _part_rows(record, peaks):
    """One row per part of a `parts` job, with its share of their sum."""
    parts = record["result"]["parts"]
    total = sum(part["median_s"] for part in parts.values())
    rows = []
    for name, part in parts.items():
        row = dict(
            part=name,
            backend=record["backend"],
            config=_point_name(record["job"]),
            fwd_bwd_s=part["median_s"],
            min_s=part["min_s"],
            max_s=part["max_s"],
            share=part["median_s"] / total,
            flops=part["flops"],
        )
        rows.append(row)
    return rows


def _share_part_flops(rows, peaks):
    """Give every backend's part rows JAX's FLOP count, and their MFU."""
    flops = {r["part"]: r["flops"] for r in rows if r["flops"]}
    for row in rows:
        row["flops"] = flops.get(row["part"])
        if row["flops"] and row["backend"] in peaks:
            row["mfu"] = (
                row["flops"] / row["fwd_bwd_s"] / 1e9 / peaks[row["backend"]]
            )


def _compare_with_port(summary):
    """Add our/port step time ratios and generation ratios."""
    comparisons = []
    for port in summary["port"]:
        job = port["job"]
        if port["kind"] == "port_train":
            name = _point_name(dict(job, config="peer-matched"))
            for row in summary["train"]:
                if _same_step(row, job):
                    comparisons.append(
                        dict(
                            config=name,
                            backend=row["backend"],
                            ours_s=row["step_s"],
                            port_s=port["median_s"],
                            speedup=port["median_s"] / row["step_s"],
                            ours_parameters=row["parameters"],
                            port_parameters=port["parameters"],
                            port_parameters_without_heads=port[
                                "parameters_without_heads"
                            ],
                            port_spectrogram_frames=job["spectrogram_frames"],
                            ours_spectrogram_frames=row["spectrogram_frames"],
                        )
                    )
        else:
            for row in summary["generate"]:
                if row["new_tokens"] == job["new_tokens"]:
                    comparisons.append(
                        dict(
                            config="generate",
                            backend=row["backend"],
                            new_tokens=job["new_tokens"],
                            ours_tokens_per_s=row["cached_tokens_per_s"],
                            port_tokens_per_s=port["tokens_per_s"],
                            speedup=row["cached_tokens_per_s"]
                            / port["tokens_per_s"],
                        )
                    )
    summary["against_port"] = comparisons


def _port_table(summary, port_train):
    """Our float32 step beside the port's, per peer-matched point."""
    rows = []
    for port in port_train:
        job = port["job"]
        name = _point_name(dict(job, config="peer-matched"))
        ours = [r for r in summary["train"] if _same_step(r, job)]
        for row in ours or [None]:
            rows.append(
                [
                    name,
                    row["backend"] if row else "-",
                    _f(row["step_s"]) if row else "-",
                    _f(port["median_s"]),
                    f"{port['median_s'] / row['step_s']:.2f}x" if row else "-",
                    f"{_f((row or {}).get('flops', 0) / 1e9 or None)} / "
                    f"{_f(port.get('flops', 0) / 1e9 or None)}",
                    _millions(row["parameters"]) if row else "-",
                    f"{_millions(port['parameters'])} "
                    f"({_millions(port['parameters_without_heads'])})",
                    f"{row['spectrogram_frames'] if row else '-'} / "
                    f"{job['spectrogram_frames']}",
                ]
            )
    return _table(
        [
            "config",
            "backend",
            "ours s",
            "port s",
            "port/ours",
            "GFLOP/step ours (XLA) / port (torch)",
            "params ours",
            "params port (without recon heads)",
            "spectrogram frames ours / port",
        ],
        rows,
    )


def format_summary(summary):
    """The summary as Markdown tables (what the README shows)."""
    parts = []
    by_dtype = summary["peak_gflops_by_dtype"]
    peaks = "; ".join(
        f"{b} "
        + ", ".join(f"{g:.0f} GFLOP/s {d}" for d, g in sorted(rates.items()))
        for b, rates in by_dtype.items()
    )
    parts.append(
        f"Measured matmul peak: {peaks or '-'} (each step's MFU is over "
        "the peak of the dtype it computes in)"
    )
    for line in summary.get("host_memory", []):
        parts.append(line[0].upper() + line[1:])
    if summary["train"]:
        parts.append(
            _table(
                [
                    "config",
                    "dtype",
                    "batch",
                    "backend",
                    "step s (min-max)",
                    "samples/s",
                    "GFLOP/step",
                    "MFU",
                    "compile s",
                    "params",
                    "retraces",
                ],
                [
                    [
                        r["config"],
                        r["dtype"],
                        r["batch_size"],
                        r["backend"],
                        f"{_f(r['step_s'])} ({_f(r['min_s'])}-"
                        f"{_f(r['max_s'])})",
                        _f(r["samples_per_s"]),
                        _f(r.get("flops", 0) / 1e9 or None),
                        f"{r['mfu']:.0%}" if "mfu" in r else "-",
                        _f(r["compile_s"]),
                        f"{r['parameters'] / 1e6:.1f}M",
                        r["retraces"],
                    ]
                    for r in summary["train"]
                ],
            )
        )
    if summary["parts"]:
        parts.append(
            _table(
                [
                    "part (fwd+bwd alone)",
                    "config",
                    "backend",
                    "s (min-max)",
                    "share of parts",
                    "GFLOP",
                    "MFU",
                ],
                [
                    [
                        r["part"],
                        r["config"],
                        r["backend"],
                        f"{_f(r['fwd_bwd_s'])} ({_f(r['min_s'])}-"
                        f"{_f(r['max_s'])})",
                        f"{r['share']:.0%}",
                        _f((r["flops"] or 0) / 1e9 or None),
                        f"{r['mfu']:.0%}" if "mfu" in r else "-",
                    ]
                    for r in summary["parts"]
                ],
            )
        )
    port_train = [r for r in summary["port"] if r["kind"] == "port_train"]
    if port_train:
        parts.append(_port_table(summary, port_train))
    if summary["generate"]:
        port = {
            r["new_tokens"]: r["port_tokens_per_s"]
            for r in summary.get("against_port", [])
            if "port_tokens_per_s" in r
        }
        parts.append(
            _table(
                [
                    "backend",
                    "answer tokens",
                    "cached tok/s",
                    "uncached tok/s",
                    "cached/uncached",
                    "decode only: cached/uncached",
                    "port tok/s",
                    "cached/port",
                    "compile s",
                    "retraces",
                    "same tokens",
                ],
                [
                    [
                        r["backend"],
                        r["new_tokens"],
                        _f(r["cached_tokens_per_s"]),
                        _f(r["uncached_tokens_per_s"]),
                        f"{r['speedup']:.1f}x",
                        f"{r['decode_speedup']:.1f}x",
                        _f(port.get(r["new_tokens"])),
                        (
                            f"{r['cached_tokens_per_s'] / port[r['new_tokens']]:.1f}x"  # noqa: E501
                            if r["new_tokens"] in port
                            else "-"
                        ),
                        _f(r["cached_compile_s"]),
                        r["retraces"],
                        r["same_tokens"],
                    ]
                    for r in summary["generate"]
                ],
            )
        )
    if summary["stream"]:
        parts.append(
            _table(
                [
                    "backend",
                    "config",
                    "s per snippet, early (1..4)",
                    "late (up to 64)",
                    "late/early",
                    "compile s",
                    "traces",
                ],
                [
                    [
                        r["backend"],
                        r["config"],
                        _f(r["early_s"], 4),
                        _f(r["late_s"], 4),
                        f"{r['late_over_early']:.2f}x",
                        _f(r["compile_s"]),
                        r["traces"],
                    ]
                    for r in summary["stream"]
                ],
            )
        )
    if summary["pipeline"]:
        parts.append(
            _table(
                [
                    "backend",
                    "preset",
                    "batch",
                    "pipeline b/s",
                    "model b/s",
                    "pipeline/model",
                ],
                [
                    [
                        r["backend"],
                        r["preset"],
                        r["batch_size"],
                        _f(r["pipeline_batches_per_s"]),
                        _f(r["model_steps_per_s"]),
                        f"{r['ratio']:.2f}x",
                    ]
                    for r in summary["pipeline"]
                ],
            )
        )
    if summary.get("scaling"):
        parts.append(
            format_scaling(summary["scaling"], summary["scaling_ratios"])
        )
    for error in summary["errors"]:
        parts.append(
            f"FAILED {error['section']} {error['job']}: "
            f"{error['error'].splitlines()[0]}"
        )
    for skipped in summary.get("skipped", []):
        parts.append(f"SKIPPED {skipped['reason']}")
    return "\n\n".join(parts)


def default_memory_cap_mb(share=0.8):
    """`share` of this machine's memory in MiB (Linux), or None."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return share * pages / 2**20


def run_benchmark(
    jobs, log=print, memory_cap_mb=None, timeout=3600, on_record=None
):
    """Run `jobs` one after the other; a failed job is recorded, not fatal.

    Args:
        jobs: from `plan_jobs`.
        log: function of one str.
        memory_cap_mb: float or None. A job whose resident memory passes
            this is stopped and recorded as out of memory
            (`out_of_memory: True`). Defaults to `None` (no cap).
        timeout: float. Seconds per job. Defaults to `3600`.
        on_record: function of the records so far, called after each
            job (the CLI writes them, so a stopped run keeps what it
            measured), or None. Defaults to `None`.

    Returns:
        list of records `{section, backend, job, result | error}`.
    """
    records = []
    for i, (section, backend, job) in enumerate(jobs, 1):
        log(f"[{i}/{len(jobs)}] {section} {backend or 'torch'} {job}")
        record = {"section": section, "backend": backend, "job": job}
        try:
            record["result"] = run_job(
                job, backend, timeout=timeout, memory_cap_mb=memory_cap_mb
            )
        except JobError as error:
            record["error"] = str(error)
            record["out_of_memory"] = isinstance(error, OutOfMemory)
            log(f"  failed: {str(error).splitlines()[0]}")
        records.append(record)
        if on_record is not None:
            on_record(records)
    return records
