"""Time the record reader: `record_dataset` vs `tf.data.TFRecordDataset`.

`record_dataset` checks each record's checksums in Python and reads past
damaged records; TensorFlow's reader does it in C++ and stops at the first.
Both are timed in one process, alternately, on the same converted records:
reading the raw records alone, and the whole training pipeline
(`snippet_dataset`: parse, PNG decode, window, resize, batch) with each
reader. Prints one JSON line with the best times and their ratios.

    python tools/reader_bench.py --clips 160 --repeats 3
"""

import argparse
import json
import os
import tempfile
import time
import types

import tensorflow as tf

from keras_mirasol.data import snippets
from keras_mirasol.data.record_io import DamagedRecords
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


def tensorflow_reader(path, damaged):
    return tf.data.TFRecordDataset(path)


def time_raw(files, reader):
    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        lambda path: reader(path, DamagedRecords()),
        cycle_length=4,
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    start = time.perf_counter()
    for _ in ds:
        pass
    return time.perf_counter() - start


def time_pipeline(records, reader, batches, batch_size):
    snippets._file_records = reader
    ds = snippet_dataset(records, batch_size)
    iterator = iter(ds)
    next(iterator)  # warm up: threads started, buffers filled once
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return time.perf_counter() - start


def snippet_dataset(records, batch_size):
    return snippets.snippet_dataset(
        records, CLIP, batch_size, training=True, seed=0
    )


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
    ours = snippets._file_records
    times = {"raw": {"ours": [], "tf": []}, "pipeline": {"ours": [], "tf": []}}
    try:
        for _ in range(args.repeats):
            for name, reader in (("tf", tensorflow_reader), ("ours", ours)):
                times["raw"][name].append(time_raw(files, reader))
                times["pipeline"][name].append(
                    time_pipeline(
                        records, reader, args.batches, args.batch_size
                    )
                )
    finally:
        snippets._file_records = ours
    result = {
        "megabytes": round(sum(map(os.path.getsize, files)) / 1e6, 1),
        "files": len(files),
        "batches": args.batches,
        "batch_size": args.batch_size,
    }
    for kind, measured in times.items():
        best = {name: min(values) for name, values in measured.items()}
        result[kind] = {name: round(value, 3) for name, value in best.items()}
        result[kind]["ours_over_tf"] = round(best["ours"] / best["tf"], 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
