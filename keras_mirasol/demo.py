"""The built-in demo: train a preset on a fixed random batch.

A stand-in for the media-to-answers demo: it shows a `MirasolCausalLM`
building, compiling and learning (the losses fall) with nothing to
download.
"""

import json
import time

import keras
import numpy as np

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM


def random_batch(backbone, batch_size, length, seed=0):
    """A fixed random batch of backbone inputs and next-token targets."""
    rng = np.random.default_rng(seed)
    height, width = backbone.image_size
    x = {
        "video": rng.uniform(
            size=(batch_size, backbone.num_frames, height, width, 3)
        ).astype("float32"),
        "token_ids": rng.integers(
            1, backbone.vocabulary_size, size=(batch_size, length)
        ).astype("int32"),
        "padding_mask": np.ones((batch_size, length), "int32"),
    }
    if backbone.use_audio:
        x["audio"] = rng.normal(
            scale=0.1, size=(batch_size, backbone.num_audio_samples)
        ).astype("float32")
    y = np.roll(x["token_ids"], -1, axis=1)
    return x, y


class LossPrinter(keras.callbacks.Callback):
    """Print the logged losses every `every` epochs and at the end."""

    def __init__(self, every):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every == 0 or epoch == self.params["epochs"] - 1:
            parts = [
                f"{k} {v:.4f}" for k, v in sorted(logs.items()) if "loss" in k
            ]
            print(f"step {epoch + 1:4d}: " + ", ".join(parts), flush=True)


def run_demo(preset="mirasol_tiny", steps=100, batch_size=8, length=16, seed=0):
    """Build `preset`, fit it `steps` steps on one random batch.

    Returns:
        dict with the first and last loss, how much it fell, and seconds.
    """
    start = time.time()
    keras.utils.set_random_seed(seed)
    backbone = MirasolBackbone.from_preset(preset)
    print(
        f"{preset}: {backbone.count_params():,} parameters, "
        f"backend {keras.backend.backend()}",
        flush=True,
    )
    lm = MirasolCausalLM(backbone)
    lm.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = random_batch(backbone, batch_size, length, seed)
    history = lm.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=steps,
        verbose=0,
        shuffle=False,  # one fixed batch
        callbacks=[LossPrinter(max(1, steps // 10))],
    )
    losses = history.history["loss"]
    result = {
        "preset": preset,
        "steps": steps,
        "first_loss": round(float(losses[0]), 4),
        "last_loss": round(float(losses[-1]), 4),
        "fell_by": round(1 - float(losses[-1]) / float(losses[0]), 4),
        "seconds": round(time.time() - start, 1),
    }
    print(json.dumps(result), flush=True)
    return result
