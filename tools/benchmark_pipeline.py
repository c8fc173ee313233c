"""Input pipeline vs model: batches per second, measured in one run.

The tf.data snippet pipeline (records -> parse -> decode -> window ->
resize -> batch -> preprocessor) must deliver batches faster than the model
trains on them. This writes a small synthetic dataset (or uses `--records`),
then times, one after the other in the same process:

- the pipeline alone: `--batches` training batches of `--batch-size`,
  through the task's preprocessor, exactly what `fit` consumes;
- the model alone: `--batches` training steps of the same preset on one
  preprocessed batch (compiled; the first step is not timed).

It prints one JSON line with both rates and their ratio (pipeline / model).

    KERAS_BACKEND=jax python tools/benchmark_pipeline.py
"""

import argparse
import json
import os
import tempfile
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mirasol_tiny")
    parser.add_argument("--records", default=None)
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")

    import keras
    import tensorflow as tf

    from keras_mirasol.data.records import convert
    from keras_mirasol.data.snippets import snippet_dataset
    from keras_mirasol.data.synthetic import write_dataset
    from keras_mirasol.models.tokenizer import MirasolTokenizer
    from keras_mirasol.models.tokenizer import train_tokenizer
    from keras_mirasol.training import build_task
    from keras_mirasol.training import record_texts

    records = args.records
    if records is None:
        workdir = tempfile.mkdtemp(prefix="mirasol_bench_")
        write_dataset(workdir, clips=args.clips, splits=(("train", 1.0),))
        records = os.path.join(workdir, "records")
        convert(
            os.path.join(workdir, "videos"),
            os.path.join(workdir, "train.jsonl"),
            records,
            verbose=False,
        )
    tokenizer = MirasolTokenizer(
        proto=train_tokenizer(record_texts(records), vocabulary_size=256)
    )
    lm = build_task(args.preset, tokenizer)
    preprocessor = lm.preprocessor
    ds = snippet_dataset(
        records, preprocessor, args.batch_size, training=True, seed=0
    ).map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
    iterator = iter(ds)
    batch = next(iterator)  # builds the pipeline and its threads
    start = time.perf_counter()
    for _ in range(args.batches):
        next(iterator)
    pipeline_seconds = time.perf_counter() - start

    x, y, sample_weight = keras.tree.map_structure(lambda t: t.numpy(), batch)
    lm.preprocessor = None  # the batch is preprocessed already
    lm.train_on_batch(x, y, sample_weight)  # compile
    start = time.perf_counter()
    for _ in range(args.batches):
        lm.train_on_batch(x, y, sample_weight)
    model_seconds = time.perf_counter() - start

    pipeline_rate = args.batches / pipeline_seconds
    model_rate = args.batches / model_seconds
    result = {
        "backend": keras.backend.backend(),
        "preset": args.preset,
        "batch_size": args.batch_size,
        "pipeline_batches_per_s": round(pipeline_rate, 2),
        "model_steps_per_s": round(model_rate, 2),
        "ratio": round(pipeline_rate / model_rate, 2),
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
