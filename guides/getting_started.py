"""
Title: Getting started with keras_mirasol
Author: keras_mirasol developers
Date created: 2026/11/21
Last modified: 2026/12/02
Description: What Mirasol3B is; build it, check it is causal, train, ask.
Accelerator: None
"""

"""
## What Mirasol is

Mirasol3B (Piergiovanni et al., CVPR 2024) answers questions about video
with sound. It splits its inputs in two:

- the **time-aligned** part, video and audio, which say what happens when:
  a clip is cut into `T` consecutive **snippets**; each snippet's frames
  and audio are encoded, and a **Combiner** (a Transformer or a Token
  Turing Machine) squeezes the snippet into `m` tokens; a block-causal
  transformer then models the snippets in time, each seeing only itself
  and the snippets before it;
- the **contextual** part, text (a question, a caption prompt): a decoder
  that cross-attends to those latents and generates the answer.

Because the time-aligned model is causal, a long clip costs time linear in
its length, and a live stream can be answered as it arrives.

## Setup

Pick the Keras backend before Keras is imported. Everything here runs on a
CPU in well under a minute.
"""

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

# TensorFlow's C++ log lines off (they must be set before it loads).
from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import numpy as np  # noqa: E402

import keras_mirasol  # noqa: E402

"""
## Build a model from a preset

No pretrained Mirasol weights exist, so a built-in preset name builds a
randomly initialised model (and says so once). `mirasol_tiny` takes clips
of 16 frames of 32x32 pixels, cut into 4 snippets, with 2 s of 16 kHz audio.
"""

backbone = keras_mirasol.models.MirasolBackbone.from_preset("mirasol_tiny")
print(f"{backbone.count_params():,} parameters")

"""
## Run a clip and a question through it

Inputs are a dict: `video` `[B, N, H, W, 3]` in `[0, 1]`, `audio` `[B, S]`
(a mono waveform spanning the same time as the video), `token_ids` and
`padding_mask` `[B, L]`.
"""

rng = np.random.default_rng(0)
inputs = {
    "video": rng.uniform(size=(1, 16, 32, 32, 3)).astype("float32"),
    "audio": rng.normal(scale=0.1, size=(1, 32000)).astype("float32"),
    "token_ids": rng.integers(1, 1024, size=(1, 12)).astype("int32"),
    "padding_mask": np.ones((1, 12), "int32"),
}
outputs = backbone.predict_on_batch(inputs)
for name, value in outputs.items():
    print(name, value.shape)

"""
`av_latents` holds `T * m = 4 * 4` tokens: each snippet compressed by the
Combiner to 4 tokens, then modelled in time by the block-causal
time-aligned decoder. The text decoder cross-attends to them.

## The time-aligned part is causal

Change the last snippet of the video (frames 12 to 15): the latents of the
first three snippets stay exactly the same. This is what lets a live stream
be answered as it arrives.
"""

changed = dict(inputs, video=inputs["video"].copy())
changed["video"][:, 12:] = rng.uniform(size=(1, 4, 32, 32, 3))
new = backbone.predict_on_batch(changed)["av_latents"]
diff = np.abs(new - outputs["av_latents"]).max(axis=(0, 2)).reshape(4, 4)
print("largest change per snippet:", diff.max(axis=1))
assert np.all(diff[:3] == 0) and diff[3].max() > 0

"""
## Train on a toy task and ask

A `MirasolCausalLM` bundles the backbone with a preprocessor that fits
clips to the model (frame sampling, resizing, audio padding) and tokenizes
prompts and responses; `fit` takes the raw dict. Here each clip shows one
colour and the question asks which; the built-in preset comes with a small
bundled vocabulary (train your own with `keras-mirasol tokenizer`).
"""

import keras  # noqa: E402

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def colour_clips(count):
    names = rng.choice(sorted(COLOURS), size=count)
    video = np.zeros((count, 20, 40, 40, 3), "uint8")  # any size and length
    for i, name in enumerate(names):
        video[i] = COLOURS[name]
    return {
        "video": video,
        "audio": rng.normal(scale=0.1, size=(count, 32000)).astype("float32"),
        "prompts": ["what colour is the video?"] * count,
        "responses": list(names),
    }


keras.utils.set_random_seed(0)
lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
lm.compile(optimizer=keras.optimizers.Adam(1e-3))
history = lm.fit(colour_clips(48), batch_size=8, epochs=6, verbose=2)

"""
With matplotlib (`pip install 'keras-mirasol[guides]'`), `keras_mirasol.plots`
draws what a run wrote; here the training curves, saved next to this guide's
outputs (`keras-mirasol plot --run DIR` does the same for a saved run).
"""

from keras_mirasol import plots  # noqa: E402

print(plots.plot_history(history.history, "training.png", metrics=["loss"]))

"""
`generate()` encodes each clip once, caches the cross-attention keys and
values of its latents, and decodes greedily.
"""

test = colour_clips(6)
answers = lm.generate(
    {k: v for k, v in test.items() if k != "responses"}, max_length=12
)
for truth, answer in zip(test["responses"], answers):
    print(f"truth: {truth:<6} answer: {answer!r}")

"""
Which snippets did the answer read? `snippet_attention` runs the text
decoder once and returns, per text position, its cross-attention weight
on each snippet (`[B, L, T]`, rows summing to 1). A clip of one colour
has the answer in every snippet, so the weight may sit anywhere.
"""

x, _, _ = lm.preprocessor(test)
weights = keras_mirasol.models.snippet_attention(lm.backbone, x)
print(
    plots.plot_snippet_attention(
        keras.ops.convert_to_numpy(weights)[0], "snippet_attention.png"
    )
)

"""
## The paper-sized model, counted without allocating it

`count_parameters` builds the model abstractly (shapes only) in a child
process, so the 3B configuration is counted in seconds on a laptop.
"""

counts = keras_mirasol.models.count_parameters("mirasol_3b")
for name, value in counts.items():
    print(f"{name:<18} {value / 1e6:10.1f}M")
