"""
Title: Long videos and live streams
Author: keras_mirasol developers
Date created: 2026/12/02
Last modified: 2026/12/03
Description: More frames, same parameters, linear cost; Combiners; streams.
Accelerator: None
"""

"""
## Setup

Mirasol cuts a clip into snippets, squeezes each snippet into a few tokens
and models the snippets in time, causally. This guide shows what that buys
for long inputs: the same parameters for any clip length, a cost that
grows with the length (not its square), and a live stream answered as it
arrives, at a flat cost per snippet. Everything runs on a CPU at
`mirasol_tiny` size in a few minutes; the times printed are this
machine's.
"""

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import time  # noqa: E402

import numpy as np  # noqa: E402

from keras_mirasol import plots  # noqa: E402
from keras_mirasol.models import MirasolBackbone  # noqa: E402
from keras_mirasol.models import MirasolCausalLM  # noqa: E402
from keras_mirasol.models import backbone_presets  # noqa: E402
from keras_mirasol.models import count_parameters  # noqa: E402

rng = np.random.default_rng(0)

"""
## More frames, the same parameters

A longer clip is more snippets of the same size: `mirasol_tiny` takes 16
frames in 4 snippets of 4 frames; 256 frames are 64 such snippets (32 s
at 8 fps, with 32 s of audio). The encoders and the Combiner work on one
snippet at a time, and the time-aligned model's snippet positions are
computed, not learned per position, so the parameter count does not move.
"""

TINY = backbone_presets["mirasol_tiny"]["config"]


def tiny_config(frames, **overrides):
    return dict(TINY, num_frames=frames, num_snippets=frames // 4, **overrides)


for frames in (16, 64, 256):
    total = count_parameters(tiny_config(frames))["total"]
    print(f"{frames:>4} frames: {total:,} parameters")

"""
## The cost grows with the length

Time one forward pass of the backbone (compiled once per shape, then the
fastest of five) at 32 to 256 frames. Within a snippet, attention is
quadratic in the snippet's tokens, whose number does not change; across
snippets, only the `m` tokens of each snippet meet, block-causally. If
the cost grew with the square of the length, the time per frame would
double with each doubling of frames; it does not. (At this tiny size a
call's fixed overhead weighs on the shortest clips; on a busy machine the
times wander.)
"""


def inputs_for(backbone, batch=4):
    return {
        "video": rng.uniform(
            size=(batch, backbone.num_frames, 32, 32, 3)
        ).astype("float32"),
        "audio": rng.normal(
            scale=0.1, size=(batch, backbone.num_audio_samples)
        ).astype("float32"),
        "token_ids": rng.integers(1, 1024, size=(batch, 16)).astype("int32"),
        "padding_mask": np.ones((batch, 16), "int32"),
    }


def seconds_per_call(backbone, x, repeats=5):
    backbone.predict_on_batch(x)  # compiles
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        backbone.predict_on_batch(x)
        seconds.append(time.perf_counter() - start)
    return min(seconds)


timings = {}
for frames in (32, 64, 128, 256):
    backbone = MirasolBackbone(**tiny_config(frames))
    timings[frames] = seconds_per_call(backbone, inputs_for(backbone))
for frames, seconds in timings.items():
    print(
        f"{frames:>4} frames: {1e3 * seconds:7.1f} ms, "
        f"{1e6 * seconds / frames:6.0f} us per frame"
    )
# As a figure (matplotlib, the `guides` extra); `keras-mirasol plot --bench`
# draws `bench --scaling`'s training steps and memory the same way.
plots.plot_scaling(
    [
        dict(variant="transformer", frames=f, step_s=s)
        for f, s in timings.items()
    ],
    "scaling.png",
    time_label="seconds per forward pass",
)

"""
## Transformer or Token Turing Machine

The Combiner turns a snippet's video and audio tokens into `m` tokens. The
Transformer Combiner attends over the snippet's tokens and keeps `m` of
them; the Token Turing Machine Combiner (`combiner_type="ttm"`) also reads
from and writes to a memory of tokens carried from snippet to snippet, so
each snippet's tokens can hold what came before. Both have about the same
parameters and cost.
"""

for combiner in ("transformer", "ttm"):
    config = tiny_config(64, combiner_type=combiner)
    backbone = MirasolBackbone(**config)
    seconds = seconds_per_call(backbone, inputs_for(backbone))
    total = count_parameters(config)["total"]
    print(f"{combiner:<12} {total:,} parameters, {1e3 * seconds:.1f} ms")

"""
## A live stream

`lm.stream()` encodes one snippet at a time as it arrives: only that
snippet goes through the encoders and the Combiner, and its tokens go
through the time-aligned model against a cache of the snippets before it.
With `window=w` the stream keeps the last `w` snippets, so memory and the
cost per snippet stay flat however long it runs. Here a random
`mirasol_tiny` stands in for a trained run.
"""

lm = MirasolCausalLM.from_preset("mirasol_tiny")
stream = lm.stream(batch_size=1, window=4)
per_snippet = []
for index in range(32):
    video = rng.uniform(size=(4, 32, 32, 3)).astype("float32")  # 0.5 s
    audio = rng.normal(scale=0.1, size=(8000,)).astype("float32")
    start = time.perf_counter()
    stream.append(video, audio)
    per_snippet.append(time.perf_counter() - start)
early = 1e3 * np.median(per_snippet[1:5])  # the first one compiles
late = 1e3 * np.median(per_snippet[-4:])
print(f"append: {early:.1f} ms at snippets 2-5, {late:.1f} ms at 29-32")
# A random model's answer: noise, but from the last 4 snippets only.
print(stream.generate("what is on screen now?", max_length=16))

"""
## Train short, then go long: the same weights

Since no weight depends on the number of snippets, a model trained on
short clips takes long ones as it is: `lm.with_num_snippets(32)` is the
same model (weights, tokenizer, prompt template, frozen parts and LoRA
adapters) with a preprocessor for 16 s clips. The time-aligned model is
block-causal, so the long clip's first 4 snippets get exactly the latents
the short model gives those 2 s. Fine-tuning the copy on long clips
starts from what the short clips taught, which is how `keras-mirasol demo
--long` trains; `keras-mirasol train --preset runs/demo --config
'{"num_snippets": 32}'` does the same with your own run.
"""

longer = lm.with_num_snippets(32)
print("clip:", longer.preprocessor.num_frames, "frames")
clip = inputs_for(longer.backbone, batch=1)
long_latents = np.asarray(longer.encode_media(clip))
short_latents = np.asarray(
    lm.encode_media(
        {
            "video": clip["video"][:, : lm.backbone.num_frames],
            "audio": clip["audio"][:, : lm.backbone.num_audio_samples],
        }
    )
)
first = short_latents.shape[1]
gap = np.abs(long_latents[:, :first] - short_latents).max()
print(f"first 4 snippets' latents, 16 s clip vs 2 s clip: {gap:.1e} apart")

"""
## Training on long clips

Training memory grows with the clip too: activations of every snippet are
kept for the backward pass. `MirasolBackbone(remat=True)` recomputes the
transformer blocks' activations in the backward pass instead, one
snippet at a time (512 frames: 9886 -> 3873 MiB peak RSS, README
"Performance"); the weights move exactly as without it.
"""

backbone = MirasolBackbone(**tiny_config(64, remat=True))
print("remat:", backbone.remat)

"""
To see a model learn from long clips end to end, from mp4 files to
answers, run the long-clip demo: 16 s clips of 32 snippets whose 4
events sit anywhere in the clip, trained and evaluated like the main
demo (first on the main demo's 2 s clips, then with the same weights on
the 16 s ones), with either Combiner or as the unchunked baseline
(README, "Long clips"):

```shell
keras-mirasol demo --long                     # Transformer Combiner
keras-mirasol demo --long --combiner ttm
keras-mirasol demo --long --unchunked         # the baseline, 16 s only
```
"""
