"""MirasolStream: answer questions about a live stream as it arrives."""

import itertools

import keras
import numpy as np
from keras import ops

from keras_mirasol.layers.clip_ops import resize_frames


def _compile(lm, fn):
    """`fn(*tensors)` compiled once per input shape, as keras-hub does it.

    JAX needs the model's variables passed in (`keras.StatelessScope`),
    TensorFlow takes a `tf.function`; torch runs eagerly without
    gradients. `fn` must not assign variables.

    Args:
        lm: the `MirasolCausalLM` whose variables `fn` reads.
        fn: callable on tensors, returning a tuple of tensors.

    Returns:
        callable with the signature of `fn`.
    """
    backend = keras.config.backend()
    if backend == "jax" and not lm.run_eagerly:
        import jax

        @jax.jit
        def stateless(state, *args):
            trainable, non_trainable = state
            mapping = itertools.chain(
                zip(lm.trainable_variables, trainable),
                zip(lm.non_trainable_variables, non_trainable),
            )
            with keras.StatelessScope(state_mapping=mapping):
                return fn(*args)

        def run(*args):
            state = (
                [v.value for v in lm.trainable_variables],
                [v.value for v in lm.non_trainable_variables],
            )
            return stateless(state, *args)

        return run
    if backend == "tensorflow" and not lm.run_eagerly:
        import tensorflow as tf

        return tf.function(fn, jit_compile=True, reduce_retracing=True)
    if backend == "torch":
        import torch

        def run(*args):
            with torch.no_grad():
                return fn(*args)

        return run
    return fn


class MirasolStream:
    """A live audio+video stream, encoded snippet by snippet.

    The time-aligned side of Mirasol is causal in time: snippet `t`'s
    latents depend on snippets `<= t` only. So a stream runs, per appended
    snippet, the encoders and the Combiner on that snippet alone (a TTM
    Combiner carries its memory from the previous snippet) and the
    time-aligned model on its `m` tokens against the key/value cache of the
    snippets before it. `generate()` answers from the latents of the
    snippets in the window. After snippets `0..t` (within the window) the
    stream's `av_latents` equal the offline model's on the same clip
    prefix, and `generate()` answers as `MirasolCausalLM.generate` on that
    prefix.

    The window holds the last `window` snippets (a ring buffer of keys,
    values and latents: memory and the cost per snippet stay flat however
    long the stream runs). When it is full, each new snippet pushes out
    the oldest: later snippets and the text no longer attend to it. The
    latents, keys and values of the snippets still in the window were
    computed when each arrived, while the older ones were still there,
    and are not recomputed: with several time-aligned blocks, what a
    snippet read from older ones reaches later snippets through its
    cached keys (the reach grows with depth, as in Transformer-XL). The
    snippet position signal is absolute (snippet 100 is
    at position 100), so a window longer than the model's `num_snippets`,
    or a stream longer than that, reaches positions the model did not see
    in training: train with clips as long as the window you stream with.

    The per-snippet step compiles once (JAX, TensorFlow); the text side
    compiles once per prompt length, as `generate()` does.

    Args:
        lm: `MirasolCausalLM`. Its preprocessor, if any, turns prompts
            into tokens and answers into strings.
        batch_size: int. Streams encoded side by side. Defaults to `1`.
        window: int or None. Snippets kept. Defaults to `None`, which
            means the backbone's `num_snippets` (the clip length it was
            trained on).

    Example:
    ```python
    lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
    stream = lm.stream()  # 4 frames and 8000 samples per snippet here
    for t in range(3):
        stream.append(
            np.random.uniform(size=(4, 32, 32, 3)), np.zeros(8000)
        )
    stream.av_latents.shape  # (1, 12, 64): 3 snippets of 4 tokens
    stream.generate("what colour is on screen now?", max_length=16)
    ```
    """

    def __init__(self, lm, batch_size=1, window=None):
        backbone = lm.backbone
        window = backbone.num_snippets if window is None else window
        if window < 1 or batch_size < 1:
            raise ValueError(
                f"`window` and `batch_size` must be >= 1, got window={window}"
                f", batch_size={batch_size}."
            )
        self.lm = lm
        self.batch_size = batch_size
        self.window = window
        self.frames_per_snippet = backbone.num_frames // backbone.num_snippets
        self.samples_per_snippet = None
        if backbone.use_audio:
            self.samples_per_snippet = (
                backbone.num_audio_samples // backbone.num_snippets
            )
        self.tokens_per_snippet = backbone.tokens_per_snippet
        self.traces = 0
        self._step = _compile(lm, self._append_step)
        self.reset()

    def reset(self):
        """Forget every snippet; the next one appended is snippet 0."""
        backbone = self.lm.backbone
        decoder = backbone.av_decoder
        dtype = backbone.compute_dtype
        slots = self.window * self.tokens_per_snippet
        self._state = {
            "cache": decoder.init_cache(self.batch_size, slots, dtype),
            "latents": ops.zeros(
                (self.batch_size, slots, decoder.hidden_dim), dtype=dtype
            ),
            "memory": ops.zeros(
                (
                    self.batch_size,
                    backbone.ttm_memory_size,
                    backbone.av_hidden_dim,
                ),
                dtype=dtype,
            ),
        }
        self.num_appended = 0

    @property
    def num_in_window(self):
        """Snippets the window holds now: `min(num_appended, window)`."""
        return min(self.num_appended, self.window)

    def _append_step(self, video, audio, cache, latents, memory, count):
        """One snippet through the whole time-aligned side; compiled."""
        self.traces += 1
        backbone = self.lm.backbone
        m = self.tokens_per_snippet
        video_tokens = backbone.video_encoder(video)
        audio_tokens = None
        if backbone.audio_encoder is not None:
            audio_tokens = backbone.audio_encoder(audio)
        if backbone.combiner_type == "ttm":
            # The memory starts at zero, as the offline Combiner's does.
            combined, memory = backbone.combiner(
                video_tokens, audio_tokens, memory=memory, return_memory=True
            )
        else:
            combined = backbone.combiner(video_tokens, audio_tokens)
        slot = count % self.window
        filled = ops.minimum(count + 1, self.window) * m
        keys = ops.arange(self.window * m, dtype="int32")
        mask = ops.broadcast_to(
            (keys < filled)[None, None, :],
            (self.batch_size, m, self.window * m),
        )
        new_latents, cache = backbone.av_decoder.call_with_cache(
            combined,
            cache,
            cache_update_index=slot * m,
            first_snippet=count,
            mask=mask,
        )
        latents = ops.slice_update(
            latents, (0, slot * m, 0), ops.cast(new_latents, latents.dtype)
        )
        return cache, latents, memory

    def _batched(self, array, shape, name, what):
        array = np.asarray(keras.ops.convert_to_numpy(array), "float32")
        if self.batch_size == 1 and array.ndim == len(shape):
            array = array[None]
        expected = (self.batch_size,) + shape
        if array.shape != expected:
            raise ValueError(
                f"MirasolStream.append: `{name}` must be {what} "
                f"{expected} (batch_size={self.batch_size}; the batch axis "
                f"may be left out when it is 1), got {array.shape}."
            )
        return array

    def append(self, video, audio=None):
        """Encode the next snippet of every stream.

        Args:
            video: `[B, F, H, W, 3]` (or `[F, H, W, 3]` when
                `batch_size=1`), uint8 or float in `[0, 1]`, the snippet's
                `F = num_frames / num_snippets` frames. Frames of another
                size are resized to the model's `image_size`.
            audio: float `[B, S]` (or `[S]`), the snippet's
                `S = num_audio_samples / num_snippets` samples at the
                model's `audio_sample_rate`; `None` for a video-only
                model. Defaults to `None`.

        Returns:
            float `[B, m, av_hidden_dim]`: this snippet's latents.
        """
        backbone = self.lm.backbone
        frames = np.asarray(keras.ops.convert_to_numpy(video))
        if frames.dtype == np.uint8:  # as the preprocessor takes frames
            frames = frames.astype("float32") / 255.0
        if frames.ndim in (4, 5) and frames.shape[-1] == 3:
            if tuple(frames.shape[-3:-1]) != tuple(backbone.image_size):
                frames = resize_frames(frames, backbone.image_size).numpy()
        video = self._batched(
            frames,
            (self.frames_per_snippet, *backbone.image_size, 3),
            "video",
            "one snippet's frames",
        )
        if backbone.use_audio:
            if audio is None:
                raise ValueError(
                    "MirasolStream.append: this model takes audio; pass "
                    f"the snippet's {self.samples_per_snippet} samples "
                    "(np.zeros for silence)."
                )
            audio = self._batched(
                audio,
                (self.samples_per_snippet,),
                "audio",
                f"one snippet's samples at {backbone.audio_sample_rate} Hz",
            )
        elif audio is not None:
            raise ValueError(
                "MirasolStream.append: this model was built with "
                "use_audio=False; pass video only."
            )
        count = self.num_appended
        self._state["cache"], self._state["latents"], self._state["memory"] = (
            self._step(
                video,
                audio,
                self._state["cache"],
                self._state["latents"],
                self._state["memory"],
                ops.convert_to_tensor(count, "int32"),
            )
        )
        self.num_appended += 1
        m = self.tokens_per_snippet
        slot = count % self.window
        return self._state["latents"][:, slot * m : (slot + 1) * m]

    def _chronological(self):
        """Ring-buffer slots of the window's snippets, oldest first."""
        start = self.num_appended - self.num_in_window
        return [t % self.window for t in range(start, self.num_appended)]

    @property
    def av_latents(self):
        """float `[B, num_in_window * m, D]`: the window's latents, oldest
        snippet first, as the offline model gives them for the clip."""
        m = self.tokens_per_snippet
        rows = np.concatenate(
            [np.arange(s * m, (s + 1) * m) for s in self._chronological()]
        )
        return ops.take(self._state["latents"], rows, axis=1)

    def generate(
        self, inputs, max_length=None, stop_token_ids="auto", strip_prompt=True
    ):
        """Answer from the snippets in the window.

        Args:
            inputs: with a preprocessor, a prompt string (asked of every
                stream) or a list of `batch_size` prompts; without one, a
                dict with `token_ids` and `padding_mask` `[B, L]`.
            max_length: int or None. Prompt plus answer length.
                Defaults to `None`, which means the preprocessor's
                `sequence_length`.
            stop_token_ids: `"auto"`, `None` or a tuple of ids, as in
                `MirasolCausalLM.generate`. Defaults to `"auto"`.
            strip_prompt: bool. Return only the answer. Defaults to `True`.

        Returns:
            A string for one prompt string and `batch_size=1`, a list of
            strings with a preprocessor, else a dict of `token_ids` and
            `padding_mask`.
        """
        if self.num_appended == 0:
            raise ValueError(
                "MirasolStream.generate: the stream is empty; append at "
                "least one snippet first."
            )
        encoded = {
            "av_latents": self._state["latents"],
            "av_padding_mask": self._window_mask(),
        }
        single = isinstance(inputs, str) and self.batch_size == 1
        if self.lm.preprocessor is None:
            if not isinstance(inputs, dict):
                raise ValueError(
                    "MirasolStream.generate: without a preprocessor, pass "
                    "a dict with `token_ids` and `padding_mask`."
                )
            inputs = dict(inputs, **encoded)
        else:
            prompts = inputs
            if isinstance(prompts, str):
                prompts = [prompts] * self.batch_size
            # `prompts` last: keras-hub reads a scalar input from the
            # last key.
            inputs = dict(encoded, prompts=list(prompts))
        outputs = self.lm.generate(
            inputs,
            max_length=max_length,
            stop_token_ids=stop_token_ids,
            strip_prompt=strip_prompt,
        )
        return outputs[0] if single else outputs

    def _window_mask(self):
        slots = self.window * self.tokens_per_snippet
        filled = self.num_in_window * self.tokens_per_snippet
        mask = np.arange(slots) < filled
        return np.broadcast_to(mask, (self.batch_size, slots))
