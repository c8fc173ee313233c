"""The built-in demo: train a preset on a fixed random batch.

A stand-in for the media-to-answers demo: it shows a model building,
compiling and learning (the losses fall) with nothing to download.
"""

import json
import time

import keras
import numpy as np

from keras_mirasol.models import MirasolBackbone


def training_model(backbone):
    """Wrap a backbone with logits for a next-token objective.

    Outputs `text` logits `[B, L, vocab]` (tied or separate projection) and
    the per-clip `latent` loss `[B]`, compiled so `fit()` logs the text
    cross-entropy (`text_loss`) and the next-snippet latent loss
    (`latent_loss`, weighted by `backbone.latent_loss_weight` in `loss`).

    Args:
        backbone: `MirasolBackbone`.

    Returns:
        A compiled `keras.Model`; targets are
        `{"text": int [B, L], "latent": zeros [B]}`.
    """
    inputs = backbone.input
    outputs = backbone(inputs)
    logits = backbone.token_embedding(outputs["sequence_output"], reverse=True)
    model = keras.Model(
        inputs,
        {
            "text": keras.layers.Identity(name="text")(logits),
            "latent": keras.layers.Identity(name="latent")(
                outputs["latent_loss"]
            ),
        },
    )

    def per_clip_loss(y_true, y_pred):
        return y_pred

    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={
            "text": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True
            ),
            "latent": per_clip_loss,
        },
        loss_weights={"text": 1.0, "latent": backbone.latent_loss_weight},
    )
    return model


def random_batch(backbone, batch_size, length, seed=0):
    """A fixed random batch for `backbone`, with next-token targets."""
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
    targets = np.roll(x["token_ids"], -1, axis=1)
    y = {"text": targets, "latent": np.zeros((batch_size,), "float32")}
    return x, y


class LossPrinter(keras.callbacks.Callback):
    """Print the logged losses every `every` epochs and at the end."""

    def __init__(self, every):
        super().__init__()
        self.every = every

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every == 0 or epoch == self.params["epochs"] - 1:
            parts = [f"{k} {v:.4f}" for k, v in sorted(logs.items())]
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
    model = training_model(backbone)
    x, y = random_batch(backbone, batch_size, length, seed)
    history = model.fit(
        x,
        y,
        batch_size=batch_size,
        epochs=steps,
        verbose=0,
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
