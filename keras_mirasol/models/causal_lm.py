"""MirasolCausalLM: answers and captions for clips, with cached generate()."""

import itertools
import os

import keras
import keras_hub
import numpy as np
from keras import ops

from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.preprocessor import MirasolCausalLMPreprocessor
from keras_mirasol.models.presets import backbone_presets
from keras_mirasol.models.safe_loading import check_config
from keras_mirasol.models.safe_loading import check_preset
from keras_mirasol.models.safe_loading import saved_mixed_policy
from keras_mirasol.models.stream import MirasolStream

DEFAULT_VOCABULARY = os.path.join(
    os.path.dirname(__file__), "assets", "default_vocabulary.spm"
)


@keras.saving.register_keras_serializable(package="keras_mirasol")
class WeightedLatentLoss(keras.layers.Layer):
    """Pass logits through; add `weight * mean(latent_loss)` as a loss.

    Call arguments:
        logits: float `[B, L, vocab]`.
        latent_loss: float `[B]`, the backbone's per-clip latent loss.

    Returns:
        `logits`, unchanged.
    """

    def __init__(self, weight, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, logits, latent_loss):
        if self.weight:
            # float32 under any dtype policy: Keras sums the added losses
            # with the float32 text loss, and TensorFlow does not promote
            # a bfloat16 term.
            latent_loss = ops.cast(latent_loss, "float32")
            self.add_loss(self.weight * ops.mean(latent_loss))
        return logits

    def compute_output_shape(self, logits_shape, latent_loss_shape):
        return logits_shape

    def get_config(self):
        config = super().get_config()
        config.update({"weight": self.weight})
        return config


def _any_equal(token_ids, values, where):
    """`where & (token_ids in values)`, elementwise."""
    found = ops.zeros_like(token_ids, dtype="bool")
    for value in values:
        found = ops.logical_or(found, ops.equal(token_ids, value))
    return ops.logical_and(found, where)


TEXT_LOSS_REDUCTIONS = ("token", "response")


@keras.saving.register_keras_serializable(package="keras_mirasol")
class MirasolCausalLM(keras_hub.models.CausalLM):
    """Mirasol3B for video question answering and captioning.

    A keras-hub `CausalLM`: `fit()` trains on dict batches, `generate()`
    answers with any `keras_hub.samplers` sampler (greedy by default; set
    another with `compile(sampler=...)`). The loss is the masked
    cross-entropy of the response tokens (weight `text_loss_weight`) plus
    the backbone's next-snippet latent loss (weight
    `backbone.latent_loss_weight`); `fit()` logs both as `text_loss` and
    `latent_loss`. With `text_loss_weight=0` it pretrains the
    time-aligned model on unlabelled clips (latent prediction only).

    Generation encodes the clip once (encoders, Combiner, time-aligned
    model), computes the cross-attention keys and values of `av_latents`
    once, and then decodes token by token with a self-attention key/value
    cache updated in place. It compiles once per input shape.

    Args:
        backbone: `MirasolBackbone`.
        preprocessor: `MirasolCausalLMPreprocessor` or `None`. Without it,
            inputs are backbone inputs (token ids, prepared media).
            Defaults to `None`.
        text_loss_weight: float. Weight of the text cross-entropy.
            Defaults to `1.0`.
        text_loss_reduction: str. How the default text loss averages the
            response tokens' cross-entropy: `"token"` (over every response
            token of the batch, so a long response, e.g. a caption,
            weighs as much as many one-word answers) or `"response"`
            (each response's mean, then the mean over responses: every
            question counts the same, as in exact-match evaluation).
            Defaults to `"token"`.

    Example:
    ```python
    lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
    video = np.random.uniform(size=(16, 32, 32, 3))  # frames, in [0, 1]
    audio = np.zeros(32000)  # 2 s at 16 kHz
    lm.generate(
        {"video": video, "audio": audio, "prompts": ["what colour?"]},
        max_length=16,
    )
    ```
    """

    backbone_cls = MirasolBackbone
    preprocessor_cls = MirasolCausalLMPreprocessor

    def __init__(
        self,
        backbone,
        preprocessor=None,
        text_loss_weight=1.0,
        text_loss_reduction="token",
        **kwargs,
    ):
        if text_loss_reduction not in TEXT_LOSS_REDUCTIONS:
            raise ValueError(
                f"`text_loss_reduction` must be one of "
                f"{TEXT_LOSS_REDUCTIONS}, got {text_loss_reduction!r}."
            )
        # A preset's tokenizer gets its vocabulary after the task is built.
        tokenizer = getattr(preprocessor, "tokenizer", None)
        # SentencePiece tokenizers hold `proto`, BPE ones `vocabulary`.
        loaded = getattr(tokenizer, "proto", None) or getattr(
            tokenizer, "vocabulary", None
        )
        if loaded:
            vocabulary = preprocessor.tokenizer.vocabulary_size()
            if vocabulary > backbone.vocabulary_size:
                raise ValueError(
                    f"The tokenizer has {vocabulary} tokens but the backbone "
                    f"was built with vocabulary_size="
                    f"{backbone.vocabulary_size}. Build the backbone with "
                    f"vocabulary_size >= {vocabulary}."
                )

        # === Layers ===
        self.backbone = backbone
        self.preprocessor = preprocessor
        self.latent_loss_layer = WeightedLatentLoss(
            backbone.latent_loss_weight,
            dtype=backbone.dtype_policy,
            name="weighted_latent_loss",
        )

        # === Functional Model ===
        inputs = backbone.input
        outputs = backbone(inputs)
        logits = backbone.token_embedding(
            outputs["sequence_output"], reverse=True
        )
        logits = self.latent_loss_layer(logits, outputs["latent_loss"])
        super().__init__(inputs=inputs, outputs=logits, **kwargs)

        # === Config ===
        self.text_loss_weight = text_loss_weight
        self.text_loss_reduction = text_loss_reduction

        self.text_loss_tracker = keras.metrics.Mean(name="text_loss")
        self.latent_loss_tracker = keras.metrics.Mean(name="latent_loss")
        # `score()`'s compiled function, made on first use.
        self.score_function = None

    def compile(
        self,
        optimizer="auto",
        loss="auto",
        *,
        weighted_metrics="auto",
        sampler="greedy",
        **kwargs,
    ):
        """keras-hub `CausalLM.compile`, with a masked-mean text loss.

        The default loss averages the cross-entropy over the tokens whose
        `sample_weight` is non-zero (the response), not over every
        position, so its scale does not depend on padding.

        Args:
            optimizer: `"auto"`, an optimizer name, or a `keras.Optimizer`.
                Defaults to `"auto"`, which is keras-hub's
                `keras.optimizers.Adam(2e-5)`.
            loss: `"auto"`, a loss name, or a `keras.losses.Loss`.
                Defaults to `"auto"`, which is a from-logits
                `keras.losses.SparseCategoricalCrossentropy` whose
                `sample_weight`-weighted sum is divided by the sum of the
                weights (the mean over the response tokens).
            weighted_metrics: `"auto"` or a list of metrics. Defaults to
                `"auto"`, which is keras-hub's
                `keras.metrics.SparseCategoricalAccuracy`.
            sampler: str or `keras_hub.samplers.Sampler`. The sampler that
                `generate()` uses. Defaults to `"greedy"`.
            **kwargs: passed to `keras.Model.compile`.
        """
        if loss == "auto":
            loss = keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight"
            )
        super().compile(
            optimizer=optimizer,
            loss=loss,
            weighted_metrics=weighted_metrics,
            sampler=sampler,
            **kwargs,
        )
        # `run_eagerly` and `jit_compile` may have changed.
        self.score_function = None

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        """`text_loss_weight * text_loss + latent_loss` of one batch.

        Logs `text_loss` (the compiled loss over the response tokens, as
        `text_loss_reduction` averages it) and `latent_loss` (the
        backbone's next-snippet latent loss before its weight).

        Args:
            x: dict. Backbone inputs. Defaults to `None`.
            y: int `[B, L]`. Next-token labels. Defaults to `None`.
            y_pred: float `[B, L, vocab]`. Logits. Defaults to `None`.
            sample_weight: float `[B, L]`. 1 on response tokens.
                Defaults to `None`.
            training: bool. Whether the loss is computed for a training
                step. Defaults to `True`.

        Returns:
            float scalar.
        """
        if self.text_loss_reduction == "response" and sample_weight is not None:
            # Each row's weights sum to 1, so the masked mean over tokens
            # becomes the mean over responses of each response's mean.
            sample_weight = ops.cast(sample_weight, "float32")
            per_row = ops.sum(sample_weight, axis=-1, keepdims=True)
            sample_weight = sample_weight / ops.maximum(per_row, 1e-9)
        # The parent adds the compiled text loss and the layers' losses
        # (here only the weighted latent loss).
        total = super().compute_loss(
            x=x,
            y=y,
            y_pred=y_pred,
            sample_weight=sample_weight,
            training=training,
        )
        latent = ops.zeros((), dtype="float32")
        for loss in self.losses:
            latent = latent + ops.cast(loss, "float32")
        text = ops.cast(total, "float32") - latent
        weight = self.backbone.latent_loss_weight
        self.text_loss_tracker.update_state(text)
        self.latent_loss_tracker.update_state(latent / weight if weight else 0)
        return self.text_loss_weight * text + latent

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "text_loss_weight": self.text_loss_weight,
                "text_loss_reduction": self.text_loss_reduction,
            }
        )
        return config

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build from a built-in preset name or a `save_to_preset` dir.

        No pretrained Mirasol weights exist: a built-in name (see
        `keras_mirasol.models.backbone_presets`) builds a randomly
        initialised backbone (and says so once) with the bundled default
        vocabulary (its `vocabulary_size` set to that vocabulary's), which
        spells any text but is no substitute for one trained on your data
        (`keras-mirasol tokenizer`). A directory
        written by `save_to_preset()` restores backbone, weights,
        tokenizer and preprocessor, with the checks of
        `MirasolBackbone.from_preset` (no code in a config, no unknown
        key, every file there; see `keras_mirasol.models.safe_loading`).

        Args:
            preset: str. Built-in name or local directory.
            load_weights: bool. Load weights from a directory (built-in
                names have none). Defaults to `True`.
            **kwargs: passed to the task, e.g. `text_loss_weight=0`.
        """
        if preset in backbone_presets:
            from keras_mirasol.models.preprocessor import (
                MirasolCausalLMPreprocessor,
            )
            from keras_mirasol.models.tokenizer import MirasolTokenizer

            tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
            backbone = MirasolBackbone.from_preset(
                preset, vocabulary_size=tokenizer.vocabulary_size()
            )
            preprocessor = MirasolCausalLMPreprocessor.from_backbone(
                backbone, tokenizer
            )
            return cls(backbone=backbone, preprocessor=preprocessor, **kwargs)
        check_preset(preset, cls, load_weights=load_weights)
        policy = None if kwargs.get("dtype") else saved_mixed_policy(preset)
        if policy:
            kwargs["dtype"] = policy
        return super().from_preset(preset, load_weights=load_weights, **kwargs)

    @classmethod
    def from_config(cls, config):
        # Keras' Functional constructor drops keyword arguments it does not
        # know: refuse them (and code) here, for `.keras` files and presets.
        check_config(cls, config)
        return super().from_config(config)

    def encode_media(self, inputs):
        """Run the media side once per clip.

        Args:
            inputs: dict with `video` (and `audio`) as the backbone takes.

        Returns:
            float `[B, T * m, av_hidden_dim]` `av_latents`.
        """
        _, av_latents = self.backbone.encode_media(
            inputs["video"], inputs.get("audio")
        )
        return av_latents

    def call_with_cache(
        self,
        token_ids,
        cache,
        cache_update_index,
        cross_attention_cache_update_index=None,
    ):
        """Decode `token_ids` at `cache_update_index` with key/value caches.

        Args:
            token_ids: int `[B, l]`, the tokens at positions
                `[cache_update_index, cache_update_index + l)`.
            cache: dict from `build_cache()`: the text decoder's caches
                (`self_attention`, `cross_attention`; see its
                `init_cache()`), `av_latents`, and optionally
                `av_padding_mask` `[B, T * m]` (latents the text may read;
                a stream's window before it fills).
            cache_update_index: int or int tensor. Position of
                `token_ids[:, 0]`.
            cross_attention_cache_update_index: `0` to compute the
                cross-attention keys/values of `av_latents` into the cache
                (done once per clip by `build_cache`); `None` to reuse them.
                Defaults to `None`.

        Returns:
            `(logits [B, l, vocab], hidden_states [B, l, D_t], cache)`.
        """
        decoder = self.backbone.text_decoder
        hidden_states, cache = decoder.call_with_cache(
            token_ids,
            cache,
            cache_update_index,
            cross_attention_cache_update_index,
        )
        logits = decoder.token_embedding(hidden_states, reverse=True)
        return logits, hidden_states, cache

    def build_cache(self, token_ids, av_latents, av_padding_mask=None):
        """Seed the caches with a pass over the whole prompt.

        Args:
            token_ids: int `[B, max_length]`.
            av_latents: float `[B, T * m, av_hidden_dim]`.
            av_padding_mask: bool `[B, T * m]` or None. Latents the text
                may read. Defaults to `None` (all of them).

        Returns:
            `(hidden_states [B, max_length, D_t], cache)`.
        """
        batch_size, max_length = ops.shape(token_ids)
        cache = self.backbone.text_decoder.init_cache(
            batch_size,
            max_length,
            ops.shape(av_latents)[1],
            self.compute_dtype,
        )
        cache["av_latents"] = av_latents
        if av_padding_mask is not None:
            cache["av_padding_mask"] = av_padding_mask
        _, hidden_states, cache = self.call_with_cache(
            token_ids,
            cache,
            cache_update_index=0,
            cross_attention_cache_update_index=0,
        )
        return hidden_states, cache

    def generate_step(self, inputs, stop_token_ids=None):
        """Generate for one batch; compilable (see keras-hub `CausalLM`).

        Args:
            inputs: dict of backbone inputs: `video`, `audio`, `token_ids`
                (prompts padded to the generation length), `padding_mask`;
                or, for clips already encoded (a `MirasolStream`),
                `av_latents` and `av_padding_mask` in place of the media.
            stop_token_ids: tuple of int or None. Token ids that end a
                row's generation; `None` generates up to `max_length`.
                Defaults to `None`.

        Returns:
            dict with `token_ids` and `padding_mask` `[B, max_length]`.
        """
        if "av_latents" in inputs:
            av_latents = inputs["av_latents"]
        else:
            av_latents = self.encode_media(inputs)
        return self.generate_from_latents(
            av_latents,
            inputs["token_ids"],
            inputs["padding_mask"],
            stop_token_ids=stop_token_ids,
            av_padding_mask=inputs.get("av_padding_mask"),
        )

    def generate_from_latents(
        self,
        av_latents,
        token_ids,
        padding_mask,
        stop_token_ids=None,
        av_padding_mask=None,
    ):
        """Decode answers for clips already encoded by `encode_media`.

        The text half of `generate_step`: the clip's latents are given,
        so several prompts about one clip need one media encoding.

        Args:
            av_latents: float `[B, T * m, av_hidden_dim]`.
            token_ids: int `[B, max_length]`, prompts padded.
            padding_mask: the prompts' mask, the shape of `token_ids`.
            stop_token_ids: tuple of int or None. Token ids that end a
                row's generation; `None` generates up to `max_length`.
                Defaults to `None`.
            av_padding_mask: bool `[B, T * m]` or None. Latents the text
                may read. Defaults to `None` (all of them).

        Returns:
            dict with `token_ids` and `padding_mask` `[B, max_length]`.
        """
        hidden_states, cache = self.build_cache(
            token_ids, av_latents, av_padding_mask
        )
        row_lengths = ops.sum(ops.cast(padding_mask, "int32"), axis=-1)
        index = ops.min(row_lengths)

        def next(prompt, cache, index):
            batch_size = ops.shape(prompt)[0]
            prompt = ops.slice(prompt, [0, index - 1], [batch_size, 1])
            logits, hidden_states, cache = self.call_with_cache(
                prompt, cache, cache_update_index=index - 1
            )
            return (
                ops.squeeze(logits, axis=1),
                ops.squeeze(hidden_states, axis=1),
                cache,
            )

        token_ids = self.sampler(
            next=next,
            prompt=token_ids,
            cache=cache,
            index=index,
            mask=padding_mask,
            stop_token_ids=stop_token_ids,
            hidden_states=hidden_states,
            model=self,
        )
        if stop_token_ids is not None:
            end_locations = ops.cast(
                _any_equal(
                    token_ids,
                    stop_token_ids,
                    ops.logical_not(ops.cast(padding_mask, "bool")),
                ),
                "int32",
            )
            # Everything after the first generated stop token is padding.
            overflow = ops.cumsum(end_locations, axis=-1) - end_locations
            padding_mask = ops.logical_not(ops.cast(overflow, "bool"))
        else:
            padding_mask = ops.ones_like(token_ids, dtype="bool")
        return {"token_ids": token_ids, "padding_mask": padding_mask}

    def stream(self, batch_size=1, window=None):
        """A `MirasolStream`: encode a live stream snippet by snippet.

        Args:
            batch_size: int. Streams side by side. Defaults to `1`.
            window: int or None. Snippets kept. Defaults to `None`, which
                means the backbone's `num_snippets`.

        Returns:
            `MirasolStream`.

        Example:
        ```python
        lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
        stream = lm.stream()
        stream.append(np.zeros((4, 32, 32, 3)), np.zeros(8000))
        stream.generate("what is on screen?", max_length=12)
        ```
        """
        return MirasolStream(self, batch_size=batch_size, window=window)

    def with_num_snippets(self, num_snippets):
        """This model for clips of `num_snippets` snippets, same weights.

        See `MirasolBackbone.with_num_snippets`: the snippets keep their
        length and every weight is copied. The preprocessor is rebuilt for
        the new clip length with the same tokenizer, prompt template and
        window setting, so `generate`, `fit` and `evaluate` take the longer
        (or shorter) clips at once: train on short clips, fine-tune or
        answer on long ones.

        Args:
            num_snippets: int. Snippets per clip of the new model.

        Returns:
            A new `MirasolCausalLM`, not compiled (this one is unchanged).

        Example:
        ```python
        lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
        longer = lm.with_num_snippets(8)  # 4 s clips instead of 2 s
        longer.preprocessor.num_frames  # 32
        ```
        """
        backbone = self.backbone.with_num_snippets(num_snippets)
        preprocessor = None
        if self.preprocessor is not None:
            preprocessor = type(self.preprocessor).from_backbone(
                backbone,
                self.preprocessor.tokenizer,
                random_window=self.preprocessor.random_window,
                prompt_template=self.preprocessor.prompt_template,
            )
        return type(self)(
            backbone,
            preprocessor,
            text_loss_weight=self.text_loss_weight,
            text_loss_reduction=self.text_loss_reduction,
        )

    def generate(
        self,
        inputs,
        max_length=None,
        stop_token_ids="auto",
        strip_prompt=True,
    ):
        """Answer or caption clips.

        Args:
            inputs: with a preprocessor, a dict with `video`, `audio` and
                `prompts` (a list of strings, one per clip); without one,
                backbone inputs with prompts packed into `token_ids`.
            max_length: int or None. Prompt plus answer length, with a
                preprocessor (without one, the width of `token_ids`).
                Defaults to `None`, which means the preprocessor's
                `sequence_length`.
            stop_token_ids: `"auto"` (the tokenizer's end token; needs a
                preprocessor), `None` (generate up to `max_length`) or a
                tuple of ids. Defaults to `"auto"`.
            strip_prompt: bool. Return only the generated answer, not the
                prompt before it. Defaults to `True`.

        Returns:
            A list of strings with a preprocessor, else a dict of
            `token_ids` and `padding_mask`.
        """
        return super().generate(
            inputs,
            max_length=max_length,
            stop_token_ids=stop_token_ids,
            strip_prompt=strip_prompt,
        )

    def score(self, x, normalize=False):
        """Log-likelihood of each response given its clip and prompt.

        Scores candidate answers, e.g. of multiple-choice questions: give
        each candidate as a row (the clip once with `k` prompts about it,
        or the clip repeated) and take the highest score. The text is
        packed as for training (`[start] prompt response [end]`), one
        forward pass covers the batch, and a row's score is the sum, over
        its response tokens and the end token, of the float32
        log-softmax of the logits at that token:
        `log p(response, end | clip, prompt)`. A prompt and response
        longer than the preprocessor's `sequence_length` are truncated as
        for training (it warns), and the truncated response is scored.
        The clip window is the preprocessor's: the centred one unless it
        was built with `random_window=True`.

        Args:
            x: dict of raw inputs, as the preprocessor takes them to
                train: `video` float `[B, N, H, W, 3]` in `[0, 1]` (or one
                clip, `[N, H, W, 3]`), `audio` `[B, S]` (when the
                preprocessor's `use_audio`), `prompts` and `responses`,
                lists of `B` strings (or of `B * k`: rows
                `i * k ... i * k + k - 1` about clip `i`).
            normalize: bool. Divide each score by its number of scored
                tokens (the response's and the end token), giving the mean
                log-probability per token, which does not favour short
                responses. Defaults to `False`.

        Returns:
            float32 numpy array `[B]` (or `[B * k]`), one score per row,
            each `<= 0`.

        Raises:
            ValueError: if the task has no preprocessor, or `x` has no
                `responses`.

        Example:
        ```python
        lm = keras_mirasol.models.MirasolCausalLM.from_preset("mirasol_tiny")
        choices = ["a red square", "a blue circle", "nothing"]
        scores = lm.score(
            {
                "video": np.random.uniform(size=(16, 32, 32, 3)),
                "audio": np.zeros(32000),
                "prompts": ["what is on screen?"] * len(choices),
                "responses": choices,
            }
        )
        scores  # (3,)
        answer = choices[int(np.argmax(scores))]
        ```
        """
        if self.preprocessor is None:
            raise ValueError(
                "`score()` takes raw clips and text, so it needs the task's "
                "preprocessor, but this MirasolCausalLM has none. Build it "
                "with `preprocessor=MirasolCausalLMPreprocessor."
                "from_backbone(backbone, tokenizer)` (or load it with "
                "`MirasolCausalLM.from_preset`)."
            )
        if not isinstance(x, dict) or "responses" not in x:
            got = sorted(x) if isinstance(x, dict) else type(x).__name__
            raise ValueError(
                "`score()` needs the candidate answers to score: pass a dict "
                "with `video`, `audio`, `prompts` and `responses` (one "
                f"response per prompt); got {got}."
            )
        if len(np.shape(x["video"])) == 4:
            # One clip: score a batch of one clip.
            x = dict(x, video=np.asarray(x["video"])[None])
            if "audio" in x:
                x["audio"] = np.asarray(x["audio"])[None]
        inputs, labels, weights = self.preprocessor(x)
        scores = self.make_score_function()(inputs, labels, weights)
        scores = ops.convert_to_numpy(scores).astype("float32")
        if normalize:
            counts = np.sum(np.asarray(weights) > 0, axis=-1)
            scores = scores / np.maximum(counts, 1).astype("float32")
        return scores

    def score_step(self, inputs, labels, sample_weight):
        """Summed log-probabilities of the weighted labels, per row.

        Args:
            inputs: dict of backbone inputs.
            labels: int `[B, L]`. Next-token labels.
            sample_weight: float `[B, L]`, non-zero on the tokens to score.

        Returns:
            float32 `[B]`.
        """
        logits = ops.cast(self(inputs, training=False), "float32")
        labels = ops.cast(labels, "int32")
        picked = ops.take_along_axis(logits, labels[..., None], axis=-1)
        # log_softmax(logits)[label], without the [B, L, vocab] result.
        log_probs = picked[..., 0] - ops.logsumexp(logits, axis=-1)
        scored = ops.cast(ops.greater(sample_weight, 0), "float32")
        return ops.sum(log_probs * scored, axis=-1)

    def make_score_function(self):
        """Create or return the compiled `score_step`.

        Compiled as `generate()`'s function is: jitted on JAX, a
        `tf.function` (with the model's `jit_compile`) on TensorFlow, run
        under `torch.no_grad()` on PyTorch; eager with `run_eagerly`.

        Returns:
            A function of `(inputs, labels, sample_weight)`.
        """
        if self.score_function is not None:
            return self.score_function
        backend = keras.config.backend()
        self.score_function = self.score_step
        if backend == "torch":
            import torch

            def no_grad_score(inputs, labels, sample_weight):
                with torch.no_grad():
                    return self.score_step(inputs, labels, sample_weight)

            self.score_function = no_grad_score
        elif backend == "tensorflow" and not self.run_eagerly:
            import tensorflow as tf

            self.score_function = tf.function(
                self.score_step, jit_compile=getattr(self, "jit_compile", True)
            )
        elif backend == "jax" and not self.run_eagerly:
            import jax

            @jax.jit
            def compiled(state, inputs, labels, sample_weight):
                trainable, non_trainable = state
                mapping = itertools.chain(
                    zip(self.trainable_variables, trainable),
                    zip(self.non_trainable_variables, non_trainable),
                )
                with keras.StatelessScope(state_mapping=mapping):
                    return self.score_step(inputs, labels, sample_weight)

            def jax_score(inputs, labels, sample_weight):
                # The variables' values (with their sharding) as arguments.
                state = (
                    [v.value for v in self.trainable_variables],
                    [v.value for v in self.non_trainable_variables],
                )
                return compiled(state, inputs, labels, sample_weight)

            self.score_function = jax_score
        return self.score_function
