"""
Title: From media files to answers: records, the snippet pipeline, training
Author: keras_mirasol developers
Date created: 2026/11/21
Last modified: 2026/11/21
Description: mp4 files and questions to TFRecords, tf.data, training.
Accelerator: None
"""

"""
## Setup

This guide runs the steps of `keras-mirasol demo` at toy size, from Python:
write a few real mp4 files, convert them (one of them damaged) into
TFRecords, build the tf.data snippet pipeline, train for a few steps,
evaluate with exact match per question type and answer a question about a
file. With your own data, start at "Convert".
"""

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

# TensorFlow's C++ log lines off (they must be set before it loads).
from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import keras  # noqa: E402

from keras_mirasol.data import convert  # noqa: E402
from keras_mirasol.data import read_clip  # noqa: E402
from keras_mirasol.data import snippet_dataset  # noqa: E402
from keras_mirasol.data import write_dataset  # noqa: E402
from keras_mirasol.evaluation import evaluate  # noqa: E402
from keras_mirasol.training import train  # noqa: E402

workdir = tempfile.mkdtemp()

"""
## Media files and annotations

`write_dataset` writes H.264 + AAC mp4 files of moving coloured shapes and
tones, and JSONL annotations (`video`, `question`, `answer`, `type`). Any
folder of mp4/mkv/webm/avi files with JSONL, CSV or MSRVTT-QA json
annotations works the same way.
"""

avqa = os.path.join(workdir, "avqa")
print(write_dataset(avqa, clips=12, seed=0, workers=1))
with open(os.path.join(avqa, "train.jsonl")) as f:
    print(f.readline())

# A damaged file: `convert` reports it and keeps going.
with open(os.path.join(avqa, "videos", "clip_00000.mp4"), "r+b") as f:
    f.truncate(1000)

"""
## Convert

`convert` decodes every video on all cores, stores frames (PNG) and mono
PCM audio with the clip's questions in `tf.train.SequenceExample` shards,
and lists every annotation it could not use in `report.json`, with the
reason. Run it again and finished shards are kept.
"""

records = {}
for split in ("train", "val", "test"):
    records[split] = os.path.join(workdir, "records", split)
    report = convert(
        os.path.join(avqa, "videos"),
        os.path.join(avqa, f"{split}.jsonl"),
        records[split],
        fps=8,
        image_size=(32, 32),
        workers=1,
        verbose=False,
    )
    print(split, report["clips"], "clips,", report["annotations"], "questions")
    for skipped in report["skipped"][:1]:
        print("  skipped", skipped["input"], "-", skipped["reason"][:60])

"""
## The snippet pipeline

`snippet_dataset` chains small tf.data ops (parse, decode, cut the model's
time window from video and audio alike, resize) and batches raw dicts that
`MirasolCausalLM.fit` takes: its preprocessor tokenizes the text. Training
batches are shuffled and windowed from a seed, so a run is repeatable.
"""


class ModelShape:
    """What the pipeline needs to know of a model (a preprocessor works)."""

    num_frames, frame_size = 16, (32, 32)
    num_audio_samples, audio_sample_rate = 32000, 16000


ds = snippet_dataset(records["train"], ModelShape, 4, training=True, seed=0)
batch = next(iter(ds))
print({k: (tuple(v.shape), v.dtype.name) for k, v in batch.items()})

"""
## Train

`train` fits a preset with AdamW, checkpoints every epoch, keeps a backup
that a killed run resumes from, and saves the run folder as a preset.
`questions_per_clip=2` puts 2 questions about each clip in a batch and
encodes the clip once for both (`batch_size` counts questions: here 2
clips per step). Here a few steps only: `keras-mirasol demo` trains 2,000
steps of 16 clips x 6 questions.
"""

lm, history = train(
    records["train"],
    os.path.join(workdir, "run"),
    preset="mirasol_tiny",
    val_data=records["val"],
    steps=4,
    epochs=2,
    batch_size=4,
    questions_per_clip=2,
    verbose=0,
)
print({k: round(v[-1], 3) for k, v in history.items()})

"""
## Evaluate and answer

Exact match per question type; `zero_video=True` or `zero_audio=True`
measures what each modality contributes. A trained run folder loads with
`MirasolCausalLM.from_preset`.
"""

result = evaluate(lm, records["test"], batch_size=4)
result.pop("predictions")
print(json.dumps(result))

clip = read_clip(
    os.path.join(avqa, "videos", "clip_00011.mp4"), fps=8, image_size=(32, 32)
)
print(
    lm.generate(
        {
            "video": clip["video"][None],
            "audio": clip["audio"][None],
            "prompts": ["what colour is shown first?"],
        },
        max_length=32,
    )
)
print(keras.backend.backend())
