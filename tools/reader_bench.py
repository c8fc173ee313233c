"""Time the pipeline's record reading against `tf.data.TFRecordDataset`.

The pipeline checks each file once when a dataset is made
(`record_io.is_intact`). If every file is intact it reads them with
`TFRecordDataset`, as before; if one is damaged, the files are read
through `snippets._file_dataset`: `TFRecordDataset` for intact files,
`record_io.read_records` (Python, past damaged records) for damaged ones.
Timed in one process, in turn, on the same converted (intact) records:

    tf        every file intact: `TFRecordDataset` (what clean data gets)
    mixed     the reader used once a file is damaged, on intact files
    python    `read_records` for every file

each reading the raw records alone, and inside the whole training
pipeline (`snippet_dataset`: parse, PNG decode, window, resize, batch);
and the check of every file (`is_intact`). Prints one JSON line with the
best times and the ratios to `tf`.

    python tools/reader_bench.py --clips 160 --repeats 3
"""

import argparse
import json
import os
import tempfile
import time
import types

import tensorflow as tf

from keras_mirasol.data import record_io
from keras_mirasol.data import snippets
from keras_mirasol.data.records import convert
from keras_mirasol.data.synthetic import write_dataset

# The training clip of `mirasol_tiny`.
CLIP = types.SimpleNamespace(
    num_frames=16,
    frame_size=(32, 32),
    num_audio_samples=32000,
    audio_sample_rate=16000,
    use_audio=True,
)


def mixed_reader(files, damaged):
    files = list(files)
    return tf.data.Dataset.from_tensor_slices((files, [True] * len(files))), (
        lambda path, intact: snippets._file_dataset(path, intact, damaged)
    )


def python_reader(files, damaged):
    return tf.data.Dataset.from_tensor_slices(list(files)), (
        lambda path: snippets._file_records(path, damaged)
    )


def time_raw(files):
    ds, read = snippets._files_and_reader(files, record_io.DamagedRecords())
    ds = ds.interleave(
        read, cycle_length=4, num_parallel_calls=tf.data.AUTOTUNE
    )
    start = time.perf_counter()
    for _ in ds:
        pass
    return time.perf_counter() - start


def time_pipeline(records, batches, batch_size):
    ds = snippets.snippet_dataset(
        records, CLIP, batch_size, training=True, seed=0
    )
    iterator = iter(ds)
    next(iterator)  # warm up: threads started, buffers filled once
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start


def time_check(files):
    record_io._INTACT.clear()
    start = time.perf_counter()
    assert all(record_io.is_intact(path) for path in files)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=160)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    workdir = args.workdir or tempfile.mkdtemp(prefix="reader_bench_")
    records = os.path.join(workdir, "records")
    if not os.path.exists(os.path.join(records, "report.json")):
        source = os.path.join(workdir, "synthetic")
        write_dataset(source, clips=args.clips, seed=0, workers=1)
        convert(
            os.path.join(source, "videos"),
            os.path.join(source, "train.jsonl"),
            records,
            image_size=(64, 64),
            clips_per_shard=max(1, args.clips // 4),
            workers=1,
            verbose=False,
        )
    files = snippets.record_files(records)
    default = snippets._files_and_reader
    readers = {"tf": default, "mixed": mixed_reader, "python": python_reader}
    kinds = ("raw", "pipeline")
    times = {kind: {name: [] for name in readers} for kind in kinds}
    checks = []
    try:
        for _ in range(args.repeats):
            checks.append(time_check(files))
            for name, reader in readers.items():
                snippets._files_and_reader = reader
                times["raw"][name].append(time_raw(files))
                times["pipeline"][name].append(
                    time_pipeline(records, args.batches, args.batch_size)
                )
    finally:
        snippets._files_and_reader = default
    megabytes = sum(map(os.path.getsize, files)) / 1e6
    result = {
        "megabytes": round(megabytes, 1),
        "files": len(files),
        "batches": args.batches,
        "batch_size": args.batch_size,
        "check_s": round(min(checks), 3),
    }
    for kind, measured in times.items():
        best = {name: min(values) for name, values in measured.items()}
        result[kind] = {name: round(value, 3) for name, value in best.items()}
        for name in ("mixed", "python"):
            result[kind][f"{name}_over_tf"] = round(best[name] / best["tf"], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
