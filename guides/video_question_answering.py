"""
Title: Video question answering with MirasolCausalLM
Author: keras_mirasol developers
Date created: 2026/11/21
Last modified: 2026/11/21
Description: Fine-tune a tiny Mirasol model to answer a question about clips.
Accelerator: None
"""

"""
## Setup

A `MirasolCausalLM` bundles the backbone with a preprocessor that fits
clips to the model (frame sampling, resizing, audio padding) and tokenizes
prompts and responses. Everything here runs on a CPU in a minute or two.
"""

import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

# TensorFlow's C++ log lines off (they must be set before it loads).
from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_mirasol  # noqa: E402

keras.utils.set_random_seed(0)

"""
## A toy task

Each clip shows one colour for its whole length and plays a quiet tone;
the question asks for the colour. Clips come as uint8 frames of any size
and length: the preprocessor samples and resizes them.
"""

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
rng = np.random.default_rng(0)


def make_clips(count):
    names = rng.choice(sorted(COLOURS), size=count)
    video = np.zeros((count, 20, 40, 40, 3), "uint8")
    for i, name in enumerate(names):
        video[i] = COLOURS[name]
    audio = 0.1 * rng.normal(size=(count, 32000)).astype("float32")
    return {
        "video": video,
        "audio": audio,
        "prompts": ["what colour is the video?"] * count,
        "responses": list(names),
    }


train = make_clips(48)

"""
## Build the model

No pretrained Mirasol weights exist: presets are configurations. Here we
shrink `mirasol_tiny` further and pair it with the bundled default
vocabulary (train your own with `keras-mirasol tokenizer`).
"""

tokenizer = keras_mirasol.models.MirasolTokenizer(
    proto=keras_mirasol.models.causal_lm.DEFAULT_VOCABULARY
)
backbone = keras_mirasol.models.MirasolBackbone.from_preset(
    "mirasol_tiny",
    vocabulary_size=tokenizer.vocabulary_size(),
    max_sequence_length=16,
    video_num_layers=1,
    audio_num_layers=1,
    text_num_layers=1,
)
preprocessor = keras_mirasol.models.MirasolCausalLMPreprocessor.from_backbone(
    backbone, tokenizer
)
lm = keras_mirasol.models.MirasolCausalLM(backbone, preprocessor)
lm.compile(optimizer=keras.optimizers.Adam(1e-3))

"""
## Train

`fit()` takes the raw dict; the loss is the cross-entropy of the answer
tokens plus the next-snippet latent loss, logged separately.
"""

history = lm.fit(train, batch_size=8, epochs=8, verbose=2)

"""
## Answer questions

`generate()` encodes each clip once, caches the cross-attention keys and
values of its latents, and decodes greedily.
"""

test = make_clips(6)
answers = lm.generate(
    {k: v for k, v in test.items() if k != "responses"}, max_length=12
)
for truth, answer in zip(test["responses"], answers):
    print(f"truth: {truth:<6} answer: {answer!r}")
accuracy = np.mean([a.strip() == t for a, t in zip(answers, test["responses"])])
print(f"exact match: {accuracy:.0%}")

"""
## Save and reload

`save_to_preset` writes the weights, the config, the tokenizer and the
preprocessor; `from_preset` brings the whole task back.
"""

preset_dir = os.path.join(tempfile.mkdtemp(), "colour_qa")
lm.save_to_preset(preset_dir)
restored = keras_mirasol.models.MirasolCausalLM.from_preset(preset_dir)
print(restored.generate({k: v[:1] for k, v in test.items()}, max_length=12))
