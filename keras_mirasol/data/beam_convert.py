"""`convert` as an Apache Beam pipeline: the same shards on many machines.

`convert(..., runner="DirectRunner")` here (or `keras-mirasol convert
--runner DirectRunner`) plans the shards as the single-machine
`keras_mirasol.data.records.convert` does (`plan_conversion`), then runs
one Beam pipeline:

    Create(decoding jobs) -> Reshuffle -> ParDo(decode and serialize)
        -> GroupByKey(shard) -> ParDo(write the shard)

Each decoding job is one video file with its clips' time ranges. A worker
decodes it in a child process of its own (`IsolatedPool`): a file that
raises, crashes its decoder or runs past `timeout` is skipped with its
reason, as in the single-machine `convert`, instead of failing the
worker's bundle. The records of a shard are written in the order the
single-machine `convert` writes them, so both write byte-identical
`shard-SSSSS-of-NNNNN.tfrecord` files and the same `report.json`;
finished shards are kept when a run is started again, whichever way they
were written.

The same code runs on Dataflow, Flink or Spark (`runner` and
`pipeline_options`); `videos_dir` and the output folder must then be paths
every worker reads and writes (a shared file system, e.g. a Cloud Storage
FUSE or NFS mount), and the workers need this package with its `beam`
extra (for Dataflow: `--requirements_file` or a custom container).
"""

import functools
import time

try:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as error:  # pragma: no cover - depends on the install
    raise ImportError(
        "convert with a Beam runner needs Apache Beam: pip install "
        "'keras-mirasol[beam]' (or apache-beam==2.77.0); without a runner, "
        "convert uses this machine's cores."
    ) from error

from keras_mirasol.data.records import decode_job
from keras_mirasol.data.records import encode_job
from keras_mirasol.data.records import final_report
from keras_mirasol.data.records import finished_shard_report
from keras_mirasol.data.records import plan_conversion
from keras_mirasol.data.records import write_shard_items
from keras_mirasol.data.workers import IsolatedPool


class DecodeAndSerialize(beam.DoFn):
    """Decode one job in an isolated child process; serialize its clips.

    Args:
        decode: callable. The decoder of one job (`decode_job`).
        timeout: float or None. Seconds one job may decode.
    """

    def __init__(self, decode, timeout):
        super().__init__()
        self._decode = decode
        self._timeout = timeout
        self._pool = None

    def setup(self):
        self._pool = IsolatedPool(self._decode, 1, self._timeout)

    def process(self, element):
        shard, position, job = element
        result, failure = next(iter(self._pool.imap([job["job"]])))
        items = encode_job(
            job["entries"], job["job"][0], result, failure, self._timeout
        )
        yield shard, (position, items)

    def teardown(self):
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def _write(element, bases):
    """Write one shard from its jobs' items, in the planned order."""
    shard, jobs = element
    write_shard_items(
        bases[shard], (item for _, job in sorted(jobs) for item in job)
    )
    return shard


def run_pipeline(shards, runner, pipeline_options, decode, timeout, verbose):
    """Write the planned shards with a Beam pipeline.

    Args:
        shards: list of dict. `plan_conversion`'s shards.
        runner: str. A Beam runner name, e.g. `"DirectRunner"`.
        pipeline_options: list of str or None. More Beam flags.
        decode: callable. The decoder of one job (`decode_job`), a
            module-level function or a `functools.partial` of one.
        timeout: float or None. Seconds one job may decode before its
            child process is killed and its clips skipped.
        verbose: bool. Print what runs where.

    Returns:
        list of dict: each shard's report (`resumed` True for the shards
        already finished before this run).
    """
    todo = []
    for index, shard in enumerate(shards):
        if finished_shard_report(shard["base"]) is None:
            todo.append(index)
    if verbose:
        print(
            f"convert: {len(todo)} of {len(shards)} shards to write with "
            f"Beam's {runner}",
            flush=True,
        )
    if todo:
        jobs = [
            (index, position, job)
            for index in todo
            for position, job in enumerate(shards[index]["jobs"])
        ]
        bases = {index: shards[index]["base"] for index in todo}
        options = PipelineOptions(
            [f"--runner={runner}", *(pipeline_options or [])]
        )
        with beam.Pipeline(options=options) as pipeline:
            _ = (
                pipeline
                | "Jobs" >> beam.Create(jobs)
                | "Spread" >> beam.Reshuffle()
                | "Decode" >> beam.ParDo(DecodeAndSerialize(decode, timeout))
                | "ByShard" >> beam.GroupByKey()
                | "Write" >> beam.Map(functools.partial(_write, bases=bases))
            )
    reports = []
    for index, shard in enumerate(shards):
        report = finished_shard_report(shard["base"])
        if report is None:
            raise RuntimeError(
                f"The Beam pipeline ended without writing {shard['base']}"
                ".tfrecord; run convert again to write the missing shards."
            )
        report["resumed"] = index not in todo
        reports.append(report)
    return reports


def convert(
    videos_dir,
    annotation_paths,
    out_dir,
    fps=8,
    image_size=(32, 32),
    sample_rate=16000,
    clips_per_shard=256,
    timeout=120,
    verbose=True,
    splits=None,
    max_seconds=None,
    runner="DirectRunner",
    pipeline_options=None,
    _read_clip=None,
):
    """Decode videos and write TFRecord shards with an Apache Beam pipeline.

    The same shards, records and `report.json` as
    `keras_mirasol.data.records.convert` (see it for the arguments they
    share and the report), written by a Beam runner: decoding and
    serializing spread over the runner's workers, one shard written per
    worker at the end.

    Args:
        videos_dir: str. Folder of the video files annotations name.
        annotation_paths: str or list of str. JSONL, CSV or JSON files.
        out_dir: str. Output folder (created).
        fps: float. Frame rate to store. Defaults to `8`.
        image_size: int or `(height, width)`. Size of the stored frames.
            Defaults to `(32, 32)`.
        sample_rate: int. Audio rate to store in Hz. Defaults to `16000`.
        clips_per_shard: int. Clips per TFRecord file. Defaults to `256`.
        timeout: float or None. Seconds one file may take to decode
            before its child process is killed and the file skipped; None:
            no limit. Defaults to `120`.
        verbose: bool. Say how many shards run on which runner. Defaults
            to `True`.
        splits: str, list of str or None. Keep only annotations whose
            `split` field is one of these. Defaults to `None` (all).
        max_seconds: float or None. Store at most this many seconds of
            each clip. Defaults to `None` (whole clips).
        runner: str. The Beam runner: `"DirectRunner"` (this machine),
            `"DataflowRunner"`, `"FlinkRunner"`, `"SparkRunner"`, ...
            Defaults to `"DirectRunner"`.
        pipeline_options: list of str or None. More Beam flags, e.g.
            `["--direct_num_workers=4",
            "--direct_running_mode=multi_processing"]` or a Dataflow
            project, region and temp location. Defaults to `None`.
        _read_clip: for tests only: a module-level function used in place
            of `read_clip`. Defaults to `None`, which means `read_clip`.

    Returns:
        The report dict, as `keras_mirasol.data.records.convert`'s.

    Raises:
        SettingsChanged: `out_dir` holds shards written with other
            settings (a `ValueError`).
        ValueError: no annotation could be read at all.
    """
    start_time = time.time()
    shards, skipped = plan_conversion(
        videos_dir,
        annotation_paths,
        out_dir,
        fps,
        image_size,
        sample_rate,
        clips_per_shard,
        splits,
        max_seconds,
    )
    decode = decode_job
    if _read_clip is not None:
        decode = functools.partial(decode_job, read=_read_clip)
    shard_reports = run_pipeline(
        shards, runner, pipeline_options, decode, timeout, verbose
    )
    return final_report(out_dir, shards, skipped, shard_reports, start_time)
