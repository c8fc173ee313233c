"""The benchmark runner: its plan, its ratios, its failures and its CLI."""

import json
import sys

import keras
import pytest

from keras_mirasol import cli
from keras_mirasol.benchmark import runner


def test_plan_runs_every_point_on_every_backend_and_the_port_once():
    jobs = runner.plan_jobs(
        configs=("mirasol_tiny", "peer-matched"),
        backends=("jax", "tensorflow"),
        dtypes=("float32", "mixed_bfloat16"),
    )
    train = [job for section, _, job in jobs if section == "train"]
    # tiny + two peer-matched points, two dtypes, two backends.
    assert len(train) == 3 * 2 * 2
    port = [(b, job) for section, b, job in jobs if section == "port"]
    assert {job["kind"] for _, job in port} == {"port_train", "port_generate"}
    assert all(backend is None for backend, _ in port)
    assert len([j for _, j in port if j["kind"] == "port_train"]) == 2
    peaks = [(b, j) for section, b, j in jobs if section == "peak"]
    assert [b for b, _ in peaks] == ["jax", "tensorflow"]
    # mixed_bfloat16 computes in bfloat16: its peak is measured too.
    assert all(j["dtypes"] == ["bfloat16", "float32"] for _, j in peaks)
    float32_only = runner.plan_jobs(
        configs=("mirasol_tiny",), dtypes=("float32",)
    )
    assert [j["dtypes"] for s, _, j in float32_only if s == "peak"] == [
        ["float32"],
        ["float32"],
    ]


def _record(section, backend, job, **result):
    return {
        "section": section,
        "backend": backend,
        "job": job,
        "result": result,
    }


def test_summary_derives_mfu_and_port_ratio_from_the_same_run():
    point = dict(
        config="peer-matched", frames=16, spectrogram_frames=1024, batch_size=2
    )
    step = dict(
        min_s=0.09,
        max_s=0.2,
        samples_per_s=20.0,
        compile_s=5.0,
        parameters=100,
        traces=1,
        retraces=0,
    )
    records = [
        _record("peak", "jax", {"kind": "peak"}, gflops=400.0),
        _record("peak", "tensorflow", {"kind": "peak"}, gflops=200.0),
        _record(
            "train",
            "jax",
            dict(point, kind="train", dtype="float32"),
            median_s=0.1,
            xla_flops=20e9,
            **step,
        ),
        _record(
            "train",
            "tensorflow",
            dict(point, kind="train", dtype="float32"),
            median_s=0.2,
            **step,
        ),
        _record(
            "port",
            None,
            dict(point, kind="port_train"),
            median_s=0.3,
            parameters=110,
            parameters_without_heads=101,
            flops=15e9,
        ),
        {
            "section": "train",
            "backend": "jax",
            "job": {
                "config": "mirasol_tiny",
                "dtype": "float32",
                "batch_size": 2,
            },
            "error": "boom\nmore",
        },
    ]
    summary = runner.summarize(records)
    jax_row, tf_row = summary["train"]
    # 20 GFLOP in 0.1 s = 200 GFLOP/s, half of JAX's measured 400.
    assert jax_row["mfu"] == pytest.approx(0.5)
    # TensorFlow runs the same program: JAX's count, TF's own peak.
    assert tf_row["mfu"] == pytest.approx(20 / 0.2 / 200)
    ratios = {r["backend"]: r["speedup"] for r in summary["against_port"]}
    assert ratios == pytest.approx({"jax": 3.0, "tensorflow": 1.5})
    assert summary["errors"][0]["error"].startswith("boom")
    table = runner.format_summary(summary)
    assert "3.00x" in table and "FAILED" in table
    assert "20 / 15" in table  # GFLOP per step, ours / the port's


def test_each_dtype_s_mfu_is_over_the_peak_of_its_compute_dtype():
    def peak(float32, bfloat16=None):
        dtypes = {"float32": {"gflops": float32}}
        if bfloat16:
            dtypes["bfloat16"] = {"gflops": bfloat16}
        return dict(gflops=float32, dtypes=dtypes)

    def train(backend, dtype):
        return _record(
            "train",
            backend,
            dict(
                config="mirasol_tiny", kind="train", dtype=dtype, batch_size=2
            ),
            median_s=0.1,
            min_s=0.1,
            max_s=0.1,
            samples_per_s=20.0,
            compile_s=1.0,
            parameters=100,
            retraces=0,
            **({"xla_flops": 20e9} if backend == "jax" else {}),
        )

    records = [
        _record("peak", "jax", {"kind": "peak"}, **peak(400.0, 800.0)),
        # A peak job from before bfloat16 was measured: float32 only.
        _record("peak", "tensorflow", {"kind": "peak"}, gflops=250.0),
        train("jax", "float32"),
        train("jax", "mixed_bfloat16"),
        train("tensorflow", "float32"),
        train("tensorflow", "mixed_bfloat16"),
    ]
    summary = runner.summarize(records)
    rows = {(r["backend"], r["dtype"]): r for r in summary["train"]}
    # 20 GFLOP in 0.1 s: 200 GFLOP/s.
    assert rows["jax", "float32"]["mfu"] == pytest.approx(0.5)
    assert rows["jax", "mixed_bfloat16"]["mfu"] == pytest.approx(0.25)
    assert rows["jax", "mixed_bfloat16"]["mfu_peak_dtype"] == "bfloat16"
    assert rows["tensorflow", "float32"]["mfu"] == pytest.approx(0.8)
    # No bfloat16 peak: no MFU rather than one over the float32 peak.
    assert "mfu" not in rows["tensorflow", "mixed_bfloat16"]
    assert summary["peak_gflops"] == {"jax": 400.0, "tensorflow": 250.0}
    table = runner.format_summary(summary)
    assert "jax 800 GFLOP/s bfloat16, 400 GFLOP/s float32" in table
    assert "tensorflow 250 GFLOP/s float32" in table


def test_each_train_batch_size_is_a_row_and_the_port_meets_its_own():
    jobs = runner.plan_jobs(
        configs=("peer-matched",),
        backends=("jax",),
        sections=("train", "parts", "port"),
        dtypes=("float32",),
        batch_size=2,
        train_batch_sizes=(2, 8),
        peer_points=((16, 1024),),
    )
    by_section = {}
    for section, _, job in jobs:
        by_section.setdefault(section, []).append(job.get("batch_size"))
    assert sorted(by_section["train"]) == [2, 8]
    # The other sections time the first size: the port at the step it
    # is compared with.
    assert by_section["parts"] == [2] and by_section["port"] == [2]

    point = dict(config="peer-matched", frames=16, spectrogram_frames=1024)

    def train(batch_size, median_s, flops):
        return _record(
            "train",
            "jax",
            dict(point, kind="train", dtype="float32", batch_size=batch_size),
            median_s=median_s,
            min_s=median_s,
            max_s=median_s,
            samples_per_s=batch_size / median_s,
            compile_s=1.0,
            parameters=100,
            retraces=0,
            xla_flops=flops,
        )

    records = [
        _record("peak", "jax", {"kind": "peak"}, gflops=400.0),
        train(2, 0.1, 20e9),
        train(8, 0.25, 80e9),
        _record(
            "port",
            None,
            dict(point, kind="port_train", batch_size=2),
            median_s=0.3,
            parameters=110,
            parameters_without_heads=101,
            flops=15e9,
        ),
    ]
    summary = runner.summarize(records)
    rows = {r["batch_size"]: r for r in summary["train"]}
    # Each size over its own FLOPs: 200 and 320 GFLOP/s of 400.
    assert rows[2]["mfu"] == pytest.approx(0.5)
    assert rows[8]["mfu"] == pytest.approx(0.8)
    # The port's batch-2 step against ours at batch 2 only.
    (ratio,) = summary["against_port"]
    assert ratio["ours_s"] == 0.1 and ratio["speedup"] == pytest.approx(3.0)
    table = runner.format_summary(summary)
    header, _, *lines = table.split("\n\n")[1].splitlines()
    column = [c.strip() for c in header.split("|")].index("batch")
    assert [line.split("|")[column].strip() for line in lines] == ["2", "8"]
    # port/ours: 0.3 / 0.1 at batch 2, never 0.3 / 0.25 (batch 8).
    assert "3.00x" in table and "1.20x" not in table


def test_torch_is_measured_by_default_only_where_it_is_installed(
    monkeypatch, tmp_path
):
    find_spec = runner.importlib.util.find_spec

    def without_torch(name, *args):
        return None if name == "torch" else find_spec(name, *args)

    # This suite runs on torch too: it is installed here.
    assert runner.default_backends() == ["jax", "tensorflow", "torch"]
    monkeypatch.setattr(runner.importlib.util, "find_spec", without_torch)
    assert runner.default_backends() == ["jax", "tensorflow"]
    jobs = []

    def run_benchmark(planned, **kwargs):
        jobs.extend(planned)
        return []

    monkeypatch.setattr(runner, "run_benchmark", run_benchmark)
    monkeypatch.setattr(runner, "probe_dtype", _probe(slow=()))
    out = tmp_path / "bench.json"
    code = cli.main(
        ["bench", "--sections", "train", "--config", "mirasol_tiny"]
        + ["--output", str(out)]
    )
    assert code == 0
    assert {backend for _, backend, _ in jobs} == {"jax", "tensorflow"}


def _probe(slow, calls=None):
    """A `probe_dtype` stand-in: `slow` backends' products 60x slower."""

    def probe(backend, dtype):
        if calls is not None:
            calls.append((backend, dtype))
        slowdown = 60.0 if backend in slow else 1.1
        return dict(
            dtype=dtype,
            gflops=80.0 / slowdown,
            float32_gflops=80.0,
            slowdown=slowdown,
        )

    return probe


def test_steps_in_a_dtype_a_backend_runs_far_too_slowly_leave_the_plan():
    # torch's bfloat16 products on a CPU without bfloat16 instructions:
    # its mixed_bfloat16 steps (hours) and its bfloat16 peak leave the
    # plan, with the reason; everything else stays.
    planned = runner.plan_jobs(
        configs=("mirasol_tiny", "mirasol_small"),
        backends=("jax", "torch"),
        sections=("train", "generate"),
        dtypes=("float32", "mixed_bfloat16"),
    )
    calls, lines = [], []
    kept, skipped = runner.drop_slow_dtypes(
        planned, probe=_probe(slow=("torch",), calls=calls), log=lines.append
    )
    assert sorted(calls) == [("jax", "bfloat16"), ("torch", "bfloat16")]
    removed = [job for job in planned if job not in kept]
    assert len(removed) == 2 + 1  # two configs' bfloat16 steps, the peak
    assert all(backend == "torch" for _, backend, _ in removed)
    for section, backend, job in kept:
        if section == "peak":
            expected = ["float32"] if backend == "torch" else None
            assert job["dtypes"] == (expected or ["bfloat16", "float32"])
        if section == "train" and backend == "torch":
            assert job["dtype"] == "float32"
    assert sum(s == "generate" for s, _, _ in kept) == sum(
        s == "generate" for s, _, _ in planned
    )
    (entry,) = skipped
    assert (entry["backend"], entry["dtype"], entry["jobs"]) == (
        "torch",
        "bfloat16",
        2,
    )
    assert "60x slower" in entry["reason"]
    assert "--dtypes float32" in entry["reason"]
    assert lines == [f"skipping {entry['reason']}"]
    summary = runner.summarize([])
    summary["skipped"] = skipped
    assert f"SKIPPED {entry['reason']}" in runner.format_summary(summary)
    # Only float32 steps asked for: nothing to probe.
    float32_only = runner.plan_jobs(
        configs=("mirasol_tiny",), backends=("torch",), dtypes=("float32",)
    )
    calls.clear()
    assert runner.drop_slow_dtypes(
        float32_only, probe=_probe(slow=("torch",), calls=calls)
    ) == (float32_only, [])
    assert calls == []


def test_a_probe_that_fails_keeps_the_jobs():
    planned = runner.plan_jobs(
        configs=("mirasol_tiny",),
        backends=("torch",),
        sections=("train",),
        dtypes=("float32", "mixed_bfloat16"),
    )

    def broken(backend, dtype):
        raise runner.JobError("the probe crashed")

    lines = []
    assert runner.drop_slow_dtypes(planned, probe=broken, log=lines.append) == (
        planned,
        [],
    )
    assert "the probe crashed" in lines[0] and "keeping" in lines[0]


def test_the_dtype_probe_times_both_dtypes_in_a_worker():
    probed = runner.probe_dtype(keras.backend.backend(), "bfloat16")
    assert probed["dtype"] == "bfloat16"
    assert probed["gflops"] > 0 and probed["float32_gflops"] > 0
    assert probed["slowdown"] == pytest.approx(
        probed["float32_gflops"] / probed["gflops"]
    )


def test_a_stopped_bench_keeps_the_jobs_it_finished(monkeypatch, tmp_path):
    # The JSON is rewritten after every job: stopped at its second job,
    # the run has written its first, marked incomplete.
    finished = []

    def run_job(job, backend=None, **kwargs):
        if finished:
            raise KeyboardInterrupt
        finished.append(job)
        peak = {"gflops": 100.0, "dtype": "float32"}
        return {"backend": backend, **peak, "dtypes": {"float32": peak}}

    monkeypatch.setattr(runner, "run_job", run_job)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        cli.main(
            ["bench", "--sections", "train", "--config", "mirasol_tiny"]
            + ["--backends", "jax", "--dtypes", "float32"]
            + ["--output", str(out)]
        )
    saved = json.loads(out.read_text())
    assert saved["summary"]["complete"] is False
    (record,) = saved["records"]
    assert record["job"] == finished[0] and record["section"] == "peak"
    assert saved["summary"]["peak_gflops"] == {"jax": 100.0}
    assert not (tmp_path / "bench.json.partial").exists()


def test_bench_refuses_a_batch_size_that_is_not_a_count():
    with pytest.raises(ValueError, match="--batch-size.*2,8.*'2,x'"):
        cli.main(["bench", "--sections", "train", "--batch-size", "2,x"])


def test_stream_rows_reach_the_table():
    job = dict(
        kind="stream",
        config="peer-matched",
        frames=16,
        spectrogram_frames=1024,
        snippets=64,
        batch_size=1,
    )
    summary = runner.summarize(
        [
            _record(
                "stream",
                "jax",
                job,
                early_s=0.01,
                late_s=0.011,
                late_over_early=1.1,
                compile_s=3.0,
                window=65,
                snippets=64,
                batch_size=1,
                traces=1,
            )
        ]
    )
    (row,) = summary["stream"]
    assert row["config"] == "peer-matched 16f/1024"
    assert "1.10x" in runner.format_summary(summary)
    planned = runner.plan_jobs(configs=("peer-matched",), backends=("jax",))
    assert [j for s, _, j in planned if s == "stream"] == [job]


def test_a_failing_job_names_itself():
    with pytest.raises(runner.JobError, match="no_such_kind"):
        runner.run_job({"kind": "no_such_kind"}, keras.backend.backend())


def test_bench_command_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = cli.main(
        [
            "bench",
            "--config",
            "mirasol_tiny",
            "--backends",
            keras.backend.backend(),
            "--sections",
            "train",
            "--dtypes",
            "float32",
            "--steps",
            "2",
            "--output",
            str(out),
            "--json",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    saved = json.loads(out.read_text())
    summary = json.loads(printed.strip().splitlines()[-1])
    assert summary["train"] == saved["summary"]["train"]
    assert saved["summary"]["complete"] is True
    (row,) = summary["train"]
    assert row["config"] == "mirasol_tiny"
    compiled = keras.backend.backend() != "torch"
    assert row["retraces"] == (0 if compiled else None)
    assert (row["compile_s"] > 0) if compiled else row["compile_s"] is None
    assert "mirasol_tiny" in printed and "GFLOP/s" in printed
    if keras.backend.backend() == "jax":
        assert 0 < row["mfu"] < 1


def test_part_rows_share_the_time_and_take_jax_flops():
    job = dict(
        kind="parts", config="peer-matched", frames=16, spectrogram_frames=1024
    )

    def part(median_s, flops):
        return dict(
            median_s=median_s, min_s=median_s, max_s=median_s, flops=flops
        )

    records = [
        _record("peak", "jax", {"kind": "peak"}, gflops=100.0),
        _record("peak", "tensorflow", {"kind": "peak"}, gflops=50.0),
        _record(
            "parts",
            "jax",
            job,
            parts={"combiner": part(0.3, 6e9), "text_decoder": part(0.1, 1e9)},
        ),
        _record(
            "parts",
            "tensorflow",
            job,
            parts={
                "combiner": part(0.2, None),
                "text_decoder": part(0.2, None),
            },
        ),
    ]
    rows = runner.summarize(records)["parts"]
    by_key = {(r["backend"], r["part"]): r for r in rows}
    assert by_key["jax", "combiner"]["share"] == pytest.approx(0.75)
    assert by_key["tensorflow", "combiner"]["share"] == pytest.approx(0.5)
    # 6 GFLOP in 0.3 s = 20 GFLOP/s of JAX's 100; TF: 30 of its 50.
    assert by_key["jax", "combiner"]["mfu"] == pytest.approx(0.2)
    assert by_key["tensorflow", "combiner"]["flops"] == 6e9
    assert by_key["tensorflow", "combiner"]["mfu"] == pytest.approx(0.6)
    table = runner.format_summary(runner.summarize(records))
    assert "combiner" in table and "75%" in table


def _scaling(variant, frames, step_s=None, rss=None, params=100, oom=False):
    job = dict(
        kind="scaling",
        config="peer-matched",
        frames=frames,
        variant=variant,
        batch_size=2,
        steps=3,
    )
    if oom:
        return {
            "section": "scaling",
            "backend": "jax",
            "job": job,
            "error": f"{job} passed the memory cap",
            "out_of_memory": True,
        }
    return _record(
        "scaling",
        "jax",
        job,
        median_s=step_s,
        peak_rss_mb=rss,
        start_rss_mb=1000.0,
        device_peak_mb=None,
        parameters=params,
        xla_flops=step_s * 1e9,
    )


def test_scaling_ratios_compare_a_clip_with_one_four_times_longer():
    records = [
        _scaling("transformer", 128, step_s=2.0, rss=3000.0),
        _scaling("transformer", 256, step_s=4.0, rss=5000.0),
        _scaling("transformer", 512, step_s=8.0, rss=9000.0),
        _scaling("ttm", 128, step_s=1.5, rss=2500.0),
        _scaling("ttm", 512, step_s=7.0, rss=8000.0),
        _scaling("transformer+remat", 512, step_s=10.0, rss=3600.0),
        _scaling("unchunked", 128, step_s=6.0, rss=7000.0, params=120),
        _scaling("unchunked", 256, step_s=30.0, rss=15000.0, params=140),
        _scaling("unchunked", 512, oom=True),
    ]
    summary = runner.summarize(records)
    ratios = summary["scaling_ratios"]
    assert (ratios["long"], ratios["short"]) == (512, 128)
    growth = {g["variant"]: g for g in ratios["growth"]}
    assert growth["transformer"]["time"] == pytest.approx(4.0)
    assert growth["transformer"]["memory"] == pytest.approx(3.0)
    # Without the 1000 MiB the process held before the model.
    assert growth["transformer"]["model_memory"] == pytest.approx(4.0)
    assert growth["transformer"]["same_parameters"] is True
    assert growth["unchunked"]["same_parameters"] is False
    assert growth["unchunked"]["out_of_memory_at"] == 512
    assert growth["unchunked"]["time"] is None
    compared = {(c["variant"], c["frames"]): c for c in ratios["comparisons"]}
    assert compared["ttm", 128]["time"] == pytest.approx(0.75)
    assert compared["ttm", 128]["flops"] == pytest.approx(0.75)
    assert compared["transformer+remat", 512]["memory"] == pytest.approx(0.4)
    # An out-of-memory job is a result of this section, not an error.
    assert summary["errors"] == []
    table = runner.format_summary(summary)
    assert "t(512)/t(128)" in table and "out of memory" in table


def test_a_job_over_the_memory_cap_is_stopped_and_says_so():
    # The worker's imports alone pass 50 MiB.
    job = {"kind": "peak"}
    with pytest.raises(runner.OutOfMemory, match="memory cap of 50 MiB"):
        runner.run_job(job, keras.backend.backend(), memory_cap_mb=50)
    (record,) = runner.run_benchmark(
        [("scaling", keras.backend.backend(), job)],
        log=lambda line: None,
        memory_cap_mb=50,
    )
    assert record["out_of_memory"] and "result" not in record


def test_a_backend_allocation_failure_is_reported_as_out_of_memory(tmp_path):
    """A worker whose step fails to allocate (XLA's error, as JAX raises
    it) is out of memory, not a broken job."""
    script = tmp_path / "fails.py"
    script.write_text(
        "import sys\n"
        "sys.stderr.write('jax.errors.JaxRuntimeError: INTERNAL: Error "
        "dispatching computation: Out of memory allocating 45587214224 "
        "bytes.\\n')\n"
        "sys.exit(1)\n"
    )
    with pytest.raises(
        runner.OutOfMemory, match="Out of memory allocating 45587214224"
    ):
        runner.run_job({"kind": "peak"}, command=[sys.executable, str(script)])


@pytest.mark.one_backend
def test_bench_scaling_measures_each_length(tmp_path, capsys):
    # Two short jobs; the baseline's own checks are in test_backbone.
    out = tmp_path / "bench.json"
    code = cli.main(
        [
            "bench",
            "--scaling",
            "--scaling-config",
            "mirasol_tiny",
            "--scaling-frames",
            "8,16",
            "--scaling-variants",
            "transformer+remat",
            "--steps",
            "1",
            "--output",
            str(out),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    rows = json.loads(out.read_text())["summary"]["scaling"]
    assert [(r["variant"], r["frames"]) for r in rows] == [
        ("transformer+remat", 8),
        ("transformer+remat", 16),
    ]
    assert all(r["step_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows)
    # Mirasol's parameters do not depend on the clip's length.
    assert rows[0]["parameters"] == rows[1]["parameters"]
    assert "t(16)/t(8)" in printed and "| True " in printed


def test_bench_refuses_an_unknown_section():
    with pytest.raises(ValueError, match="Unknown bench section.*scaling"):
        cli.main(["bench", "--sections", "train,scalling"])
