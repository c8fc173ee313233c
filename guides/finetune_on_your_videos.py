"""
Title: Fine-tune Mirasol on your own videos
Author: keras_mirasol developers
Date created: 2026/11/21
Last modified: 2026/12/02
Description: mp4 files and questions to records, training, LoRA, evaluation.
Accelerator: None
"""

"""
## Setup

What a fine-tuning job does, at toy size, from Python: a folder of mp4
files and a JSONL file of questions become TFRecords; a first run trains
a model and its vocabulary on them; that run is fine-tuned on new
questions with LoRA adapters; the result is evaluated per question type,
asked about a file, saved and reloaded. With your own data, start at
"Convert". `keras-mirasol demo` runs the same job at demo size.
"""

import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

# TensorFlow's C++ log lines off (they must be set before it loads).
from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_mirasol import plots  # noqa: E402
from keras_mirasol.data import convert  # noqa: E402
from keras_mirasol.data import read_clip  # noqa: E402
from keras_mirasol.data import snippet_dataset  # noqa: E402
from keras_mirasol.data import write_dataset  # noqa: E402
from keras_mirasol.evaluation import evaluate  # noqa: E402
from keras_mirasol.models import MirasolCausalLM  # noqa: E402
from keras_mirasol.training import train  # noqa: E402

workdir = tempfile.mkdtemp()

"""
## Your videos and questions

Any folder of mp4, mkv, webm, avi or mov files, with annotations in JSONL
(`video`, `question`, `answer`, optional `type`, `clip_id` and a `start`
/ `end` time range), CSV, or the layouts of MSRVTT-QA, VGGSound,
ActivityNet-QA, ActivityNet Captions and NExT-QA (see the README). Here
`write_dataset` writes such a folder: H.264 + AAC files of coloured shapes
and tones, and train/val/test JSONL files whose questions are about what
is seen, heard, or both at once.
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

`convert` decodes every video once (on all cores; a file that crashes or
hangs its decoder costs only itself), stores the frames (PNG) and mono PCM
audio with all of the clip's questions in `tf.train.SequenceExample`
shards, and lists every annotation it could not use in `report.json`, with
the reason. Run it again and finished shards are kept. The command line:
`keras-mirasol convert --videos DIR --annotations train.jsonl --out DIR`.
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
## A first run: a model and its vocabulary

No pretrained Mirasol weights exist, so the first run trains from a
preset's configuration. `train` trains a SentencePiece vocabulary on the
records' text, fits the model (AdamW, warmup and cosine decay),
checkpoints so that a killed run resumes exactly, and saves the run folder
as a preset. `questions_per_clip=2` puts two questions about each clip in
a batch and encodes the clip once for both. A few steps only here;
`keras-mirasol demo` trains 2,000.
"""

base_dir = os.path.join(workdir, "runs", "base")
lm, history = train(
    records["train"],
    base_dir,
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
## The snippet pipeline

`snippet_dataset` turns records into the batches `fit` takes: it parses
and decodes each clip, cuts the model's time window from video and audio
alike (random for training, centred for evaluation) and resizes the
frames. The batches are raw dicts; the task's preprocessor tokenizes the
text and cuts the window into snippets inside the model. A seed fixes the
order and the windows.
"""

lm = MirasolCausalLM.from_preset(base_dir)
ds = snippet_dataset(
    records["val"], lm.preprocessor, batch_size=4, training=True, seed=1
)
batch = next(iter(ds))
print({k: (tuple(v.shape), v.dtype.name) for k, v in batch.items()})

"""
## Fine-tune with LoRA

`enable_lora(rank)` freezes the backbone and adds low-rank adapters to the
query and value projections of every attention layer: only those train.
This is plain Keras: compile, then `fit` on the pipeline. Here the new
questions are the validation split's.
"""

total = lm.backbone.count_params()
lm.backbone.enable_lora(4)
trainable = sum(int(np.prod(w.shape)) for w in lm.backbone.trainable_weights)
print(f"trainable: {trainable:,} of {total:,} parameters")
lm.compile(optimizer=keras.optimizers.AdamW(1e-3))
lm.fit(ds, steps_per_epoch=4, epochs=2, shuffle=False, verbose=2)

# The adapters alone: everything this fine-tuning changed.
lora_path = os.path.join(workdir, "runs", "colours.lora.h5")
lm.backbone.save_lora_weights(lora_path)
print(f"adapters: {os.path.getsize(lora_path) / 1e3:.0f} kB")

"""
## Evaluate per question type

Exact match after lowercasing and trimming punctuation, overall and per
question type. `zero_video=True` or `zero_audio=True` replaces one
modality with zeros: how much each contributes. The command line:
`keras-mirasol evaluate --model DIR --data DIR`. After this toy run's few
steps the answers are not right yet (scores near 0); the demo's 2,000
steps answer nearly every test question, and its ablations show which
question types need the audio.
"""

accuracies = {}
for label, ablation in (
    ("full input", {}),
    ("audio zeroed", {"zero_audio": 1}),
):
    result = evaluate(lm, records["test"], batch_size=4, **ablation)
    per_type = {k: v["accuracy"] for k, v in result["per_type"].items()}
    print(label, result["accuracy"], per_type)
    accuracies[label] = per_type
# The bars, with matplotlib (the `guides` extra): `accuracy_by_type.png`.
plots.plot_accuracy_by_type(accuracies, "accuracy_by_type.png")

"""
## Ask about a file

`read_clip` decodes a media file at the model's frame and sample rates;
`prepare_media` takes the model's time window (0.5: the centred one).
"""

backbone = lm.backbone
clip = read_clip(
    os.path.join(avqa, "videos", "clip_00011.mp4"),
    fps=backbone.frame_rate,
    sample_rate=backbone.audio_sample_rate,
)
media = lm.preprocessor.prepare_media(clip, 0.5)
question = "what colour is shown first?"
answer = lm.generate(
    {
        "video": np.asarray(media["video"])[None],
        "audio": np.asarray(media["audio"])[None],
        "prompts": [question],
    },
    max_length=32,
)
print(question, "->", answer)

"""
## Save and reload

`save_to_preset` writes a run folder with the adapters merged into the
kernels: a plain `from_preset` loads it, and `keras-mirasol evaluate`,
`generate` and `export` take it.
"""

tuned_dir = os.path.join(workdir, "runs", "colours")
lm.save_to_preset(tuned_dir)
restored = MirasolCausalLM.from_preset(tuned_dir)
again = restored.generate(
    {
        "video": np.asarray(media["video"])[None],
        "audio": np.asarray(media["audio"])[None],
        "prompts": [question],
    },
    max_length=32,
)
print(
    json.dumps({"saved": tuned_dir, "same answer": list(again) == list(answer)})
)

"""
## Start from pretrained keras-hub parts

keras-hub ships pretrained video and text models, and
`MirasolBackbone.from_components` builds a Mirasol model around them: a
`VideoPrismBackbone` runs on each snippet, a `Gemma3Backbone` (or Qwen3,
Llama) becomes the text decoder with gated cross-attention inserted (its
logits are the language model's until training opens the gates), and
`freeze=` keeps a part's pretrained weights. With real weights:

```python
video = keras_hub.models.VideoPrismBackbone.from_preset(
    "videoprism_public_v1_base")
text = keras_hub.models.Gemma3Backbone.from_preset("gemma3_instruct_270m")
tokenizer = keras_hub.tokenizers.Gemma3Tokenizer.from_preset(
    "gemma3_instruct_270m")
```

Tiny random parts of the same classes stand in here (nothing to
download), with this run's vocabulary. Saved with `save_to_preset`, the
model is fine-tuned by `train` (or `keras-mirasol train --preset DIR`)
with its weights, tokenizer and frozen parts kept.
"""

import keras_hub  # noqa: E402

from keras_mirasol.models import MirasolBackbone  # noqa: E402
from keras_mirasol.models import MirasolCausalLMPreprocessor  # noqa: E402

tokenizer = restored.preprocessor.tokenizer
video = keras_hub.models.VideoPrismBackbone(
    num_frames=2, patch_size=8, hidden_dim=16, intermediate_dim=32,
    num_heads=2, num_spatial_layers=1, num_temporal_layers=1,
    num_auxiliary_layers=0, image_shape=(16, 16, 3),
)  # fmt: skip
text = keras_hub.models.Gemma3Backbone(
    vocabulary_size=tokenizer.vocabulary_size(), image_size=16,
    num_layers=2, num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
    intermediate_dim=64, head_dim=16,
)  # fmt: skip
backbone = MirasolBackbone.from_components(
    video_encoder=video,
    text_decoder=text,
    base="mirasol_tiny",
    num_snippets=4,  # 4 snippets of VideoPrism's 2 frames
    max_sequence_length=32,
    freeze=("video_encoder",),
)
parts = MirasolCausalLM(
    backbone, MirasolCausalLMPreprocessor.from_backbone(backbone, tokenizer)
)
start_dir = os.path.join(workdir, "runs", "from_parts")
parts.save_to_preset(start_dir)
frozen = backbone.count_params() - sum(
    int(np.prod(w.shape)) for w in backbone.trainable_weights
)
print(f"frozen: {frozen:,} of {backbone.count_params():,} parameters")
lm, history = train(
    records["train"],
    os.path.join(workdir, "runs", "from_parts_tuned"),
    preset=start_dir,
    steps=2,
    epochs=1,
    batch_size=4,
    verbose=0,
)
print({k: round(v[-1], 3) for k, v in history.items()})
