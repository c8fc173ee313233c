"""Input pipeline vs model: batches per second, measured in one process.

The tf.data snippet pipeline (records -> parse -> decode -> window ->
resize -> batch -> preprocessor) must deliver batches faster than the
model trains on them.
"""

import os
import tempfile
import time

import keras

from keras_mirasol.data.records import convert
from keras_mirasol.data.snippets import snippet_dataset
from keras_mirasol.data.synthetic import write_dataset
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY
from keras_mirasol.models.causal_lm import MirasolCausalLM
from keras_mirasol.models.preprocessor import MirasolCausalLMPreprocessor
from keras_mirasol.models.tokenizer import MirasolTokenizer


def pipeline_vs_model(
    preset="mirasol_tiny",
    records=None,
    clips=200,
    batch_size=64,
    batches=30,
    questions_per_clip=None,
):
    """Time the training pipeline alone, then the model alone.

    Args:
        preset: str. Backbone preset.
        records: str or None. A `convert` output folder; by default
            `clips` synthetic clips are written and converted first.
        clips: int. Synthetic clips when `records` is None.
        batch_size: int. Questions per batch.
        batches: int. Timed batches (and timed training steps).
        questions_per_clip: int or None. As in `snippet_dataset`.

    Returns:
        dict with `pipeline_batches_per_s`, `model_steps_per_s` and their
        `ratio` (above 1: the pipeline keeps up).
    """
    import tensorflow as tf

    if records is None:
        workdir = tempfile.mkdtemp(prefix="mirasol_bench_")
        write_dataset(workdir, clips=clips, splits=(("train", 1.0),))
        records = os.path.join(workdir, "records")
        convert(
            os.path.join(workdir, "videos"),
            os.path.join(workdir, "train.jsonl"),
            records,
            verbose=False,
        )
    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    backbone = MirasolBackbone.from_preset(
        preset, vocabulary_size=tokenizer.vocabulary_size()
    )
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    ds = snippet_dataset(
        records,
        preprocessor,
        batch_size,
        training=True,
        seed=0,
        questions_per_clip=questions_per_clip,
    ).map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
    iterator = iter(ds)
    batch = next(iterator)  # builds the pipeline and its threads
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    pipeline_seconds = time.perf_counter() - start

    x, y, sample_weight = keras.tree.map_structure(lambda t: t.numpy(), batch)
    lm = MirasolCausalLM(backbone, preprocessor=None)
    lm.compile(optimizer=keras.optimizers.AdamW(1e-4))
    lm.train_on_batch(x, y, sample_weight)  # compile
    start = time.perf_counter()
    for _ in range(batches):
        lm.train_on_batch(x, y, sample_weight)
    model_seconds = time.perf_counter() - start

    pipeline_rate = batches / pipeline_seconds
    model_rate = batches / model_seconds
    return {
        "preset": preset,
        "batch_size": batch_size,
        "questions_per_clip": questions_per_clip,
        "pipeline_batches_per_s": pipeline_rate,
        "model_steps_per_s": model_rate,
        "ratio": pipeline_rate / model_rate,
    }
