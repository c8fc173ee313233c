"""MirasolCausalLMPreprocessor: clips and text to model inputs."""

import warnings

import keras
import keras_hub
import numpy as np
import tensorflow as tf

from keras_mirasol.layers.clip_ops import fit_clip
from keras_mirasol.layers.clip_ops import resample_audio
from keras_mirasol.layers.clip_ops import resize_frames
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.input_checks import check_preprocessor_inputs
from keras_mirasol.models.tokenizer import MirasolTokenizer


@keras.saving.register_keras_serializable(package="keras_mirasol")
class MirasolCausalLMPreprocessor(keras_hub.models.CausalLMPreprocessor):
    """Tokenize and pack prompts and responses, and fit clips to the model.

    Text: `[start] prompt response [end] [pad]...`, `sequence_length + 1`
    long, shifted by one into `token_ids` and the target `y`; the loss
    `sample_weight` covers the response and its end token only. A prompt
    and response that do not fit are truncated, the prompt first (its
    end), then the response (its end), with a warning the first time this
    happens eagerly. Empty prompts or responses are allowed: clips without
    any text train the latent loss only (`text_loss_weight=0`).

    Media (see `keras_mirasol.layers.clip_ops` for the sampling rule):
    `video` `[F, H, W, 3]` (uint8 or float in `[0, 1]`) is cut to the
    model's span, sampled to `num_frames` frames and resized; `audio` `[S]`
    is resampled from `audio_sample_rate` (an optional input key, default
    the model's rate; a batch is resampled with its first clip's rate, so
    map the preprocessor before batching clips of mixed rates) and cut or
    padded to the same span. Evaluation and generation take the centred
    window; training (`random_window=True`) a random one. A clip already
    cut to the model's shapes (by `keras_mirasol.data.snippet_dataset`)
    is kept as it is.

    Works eagerly on numpy/Python data and inside `tf.data.Dataset.map`,
    batched or unbatched.

    Args:
        tokenizer: `MirasolTokenizer`, or the keras-hub tokenizer of a
            pretrained text decoder (`Gemma3Tokenizer`, ...). It needs end
            and padding tokens; a start token is used when it has one.
        sequence_length: int. Packed text length. Defaults to `32`.
        num_frames: int. Frames per clip. Defaults to `16`.
        frame_size: int or `(H, W)`. The backbone's `image_size`.
            Defaults to `(32, 32)`.
        num_audio_samples: int. Samples per clip. Defaults to `32000`.
        audio_sample_rate: int. The model's audio rate in Hz.
            Defaults to `16000`.
        use_audio: bool. Whether the model takes audio. Defaults to `True`.
        random_window: bool. Random clip window in `call()` (training).
            Defaults to `False`.
        prompt_template: str or None. A template with one `{prompt}`,
            wrapped around every prompt before tokenizing: a pretrained
            instruction-tuned text decoder's chat format (for Gemma, the
            prompt as the user's turn followed by the start of the
            model's turn), which `chat_template(tokenizer)` gives.
            Defaults to `None` (prompts as they are).

    Call arguments:
        x: dict with `video`, `audio` (if `use_audio`), `prompts`,
            optionally `responses` and `audio_sample_rate`. A batch of `B`
            clips takes `B` prompts, or `B * k` (prompts `i * k ... i * k +
            k - 1` about clip `i`; see `MirasolBackbone`).

    Returns:
        `(x, y, sample_weight)`: `x` has `video`, `audio`, `token_ids`,
        `padding_mask`.
    """

    backbone_cls = MirasolBackbone
    tokenizer_cls = MirasolTokenizer

    def __init__(
        self,
        tokenizer,
        sequence_length=32,
        num_frames=16,
        frame_size=(32, 32),
        num_audio_samples=32000,
        audio_sample_rate=16000,
        use_audio=True,
        random_window=False,
        prompt_template=None,
        **kwargs,
    ):
        super().__init__(
            tokenizer=tokenizer, sequence_length=sequence_length, **kwargs
        )
        if prompt_template is not None and (
            prompt_template.count("{prompt}") != 1
        ):
            raise ValueError(
                "`prompt_template` must contain `{prompt}` exactly once, "
                f"got {prompt_template!r}."
            )
        self.prompt_template = prompt_template
        if isinstance(frame_size, int):
            frame_size = (frame_size, frame_size)
        self.num_frames = num_frames
        self.frame_size = tuple(frame_size)
        self.num_audio_samples = num_audio_samples
        self.audio_sample_rate = audio_sample_rate
        self.use_audio = use_audio
        self.random_window = random_window
        self._eager_functions = {}
        self._warned_truncation = False

    @classmethod
    def from_backbone(cls, backbone, tokenizer, **kwargs):
        """A preprocessor matching `backbone`'s clip shape and text length.

        Args:
            backbone: `MirasolBackbone`. Gives `sequence_length`
                (`max_sequence_length`), `num_frames`, `frame_size`
                (`image_size`), `num_audio_samples`, `audio_sample_rate`
                and `use_audio`.
            tokenizer: `MirasolTokenizer`, or the keras-hub tokenizer of
                a pretrained text decoder (e.g. `Gemma3Tokenizer`).
            **kwargs: other constructor arguments, e.g.
                `random_window=True`, `prompt_template=chat_template(
                tokenizer)`.
        """
        return cls(
            tokenizer=tokenizer,
            sequence_length=backbone.max_sequence_length,
            num_frames=backbone.num_frames,
            frame_size=backbone.image_size,
            num_audio_samples=backbone.num_audio_samples,
            audio_sample_rate=backbone.audio_sample_rate,
            use_audio=backbone.use_audio,
            **kwargs,
        )

    def build(self, input_shape):
        self.built = True

    # --- media -----------------------------------------------------------

    def prepare_media(self, x, offset):
        """Fit `x["video"]` (and `x["audio"]`) to the model's shapes.

        Args:
            x: dict with `video` `[..., F, H, W, 3]`, `audio` `[..., S]`
                (if `use_audio`) and optionally `audio_sample_rate`.
            offset: float or scalar tensor in `[0, 1]`. Where the window
                sits in a longer clip (0.5 = centre; see `fit_clip`).

        Returns:
            dict with float32 `video` `[..., num_frames, H', W', 3]` and
            `audio` `[..., num_audio_samples]` (if `use_audio`).
        """
        audio = None
        if self.use_audio:
            # NumPy arrays are float64 by default: cast, do not refuse.
            audio = tf.cast(tf.convert_to_tensor(x["audio"]), tf.float32)
            if "audio_sample_rate" in x:
                # One rate per call: a batch shares its first clip's rate.
                rate = tf.reshape(x["audio_sample_rate"], [-1])[0]
                audio = resample_audio(audio, rate, self.audio_sample_rate)
        video, audio = fit_clip(
            x["video"], audio, self.num_frames, self.num_audio_samples, offset
        )
        media = {"video": resize_frames(video, self.frame_size)}
        if self.use_audio:
            media["audio"] = audio
        return media

    # --- text ------------------------------------------------------------

    def pack(self, prompts, responses, sequence_length, add_end):
        """Pack ragged token ids; returns `(token_ids, segment_ids, cut)`.

        `segment_ids` is 1 on response and end tokens; `cut` is True where
        a row had to be truncated.

        Args:
            prompts: int `tf.RaggedTensor` `[B, None]`. Prompt token ids.
            responses: int `tf.RaggedTensor` `[B, None]`. Response token
                ids (rows may be empty).
            sequence_length: int. Length of the packed rows.
            add_end: bool. Whether to append the end token (training).

        Returns:
            `(token_ids [B, sequence_length], segment_ids
            [B, sequence_length], cut [B])`.
        """
        tokenizer = self.tokenizer
        batch = prompts.nrows()
        # Tokenizers without a start token (Qwen's) start with the prompt.
        start_id = getattr(tokenizer, "start_token_id", None)
        specials = int(start_id is not None) + int(add_end)
        response_room = sequence_length - specials
        response_lengths = responses.row_lengths()
        responses = responses[:, :response_room]
        prompt_room = sequence_length - specials - responses.row_lengths()
        positions = tf.ragged.range(prompts.row_lengths())
        kept = tf.ragged.boolean_mask(
            prompts, positions < tf.expand_dims(prompt_room, 1)
        )
        cut = tf.logical_or(
            kept.row_lengths() < prompts.row_lengths(),
            response_lengths > response_room,
        )
        pieces = [tf.cast(kept, "int32"), tf.cast(responses, "int32")]
        segments = [
            tf.zeros_like(tf.cast(kept, "int32")),
            tf.ones_like(tf.cast(responses, "int32")),
        ]
        if start_id is not None:
            start = tf.fill([batch, 1], tf.cast(start_id, "int32"))
            pieces.insert(0, start)
            segments.insert(0, tf.zeros_like(start))
        if add_end:
            end = tf.fill([batch, 1], tf.cast(tokenizer.end_token_id, "int32"))
            pieces.append(end)
            segments.append(tf.ones_like(end))
        token_ids = tf.concat(pieces, axis=1).to_tensor(
            default_value=tokenizer.pad_token_id,
            shape=[None, sequence_length],
        )
        segment_ids = tf.concat(segments, axis=1).to_tensor(
            default_value=0, shape=[None, sequence_length]
        )
        return token_ids, segment_ids, cut

    def tokenize(self, texts, batch_size):
        """Token ids of `texts`, one row per example.

        Args:
            texts: str or list of str. One string is repeated for every
                row.
            batch_size: int or scalar int tensor. Rows to return.

        Returns:
            int `tf.RaggedTensor` `[batch_size, None]`.
        """
        texts = tf.convert_to_tensor(texts, tf.string)
        texts = tf.broadcast_to(tf.reshape(texts, [-1]), [batch_size])
        tokens = self.tokenizer(texts)
        if isinstance(tokens, tf.Tensor):
            tokens = tf.RaggedTensor.from_tensor(tokens)
        return tokens

    def format_prompts(self, prompts):
        """`prompts` inside `prompt_template` (as they are without one).

        Args:
            prompts: str, list of str or string tensor.

        Returns:
            string tensor of the shape of `prompts`.
        """
        prompts = tf.convert_to_tensor(prompts, tf.string)
        if self.prompt_template is None:
            return prompts
        before, after = self.prompt_template.split("{prompt}")
        return tf.strings.join([before, prompts, after])

    # --- entry points ----------------------------------------------------

    def check_inputs(self, x):
        """`input_checks.check_preprocessor_inputs` for this model.

        Args:
            x: dict. The preprocessor's input, as `call()` takes it.
        """
        check_preprocessor_inputs(x, self.use_audio)

    def _preprocess(self, x, sequence_length, training):
        video = tf.convert_to_tensor(x["video"])
        batched = len(video.shape) == 5
        if not batched:
            x = dict(x, video=video[None])
            if self.use_audio:
                x["audio"] = tf.convert_to_tensor(x["audio"])[None]
        clips = tf.shape(x["video"])[0]
        prompts = tf.convert_to_tensor(x["prompts"], tf.string)
        batch_size = clips
        if batched or len(prompts.shape) > 0:
            batch_size = tf.size(prompts)
            tf.debugging.assert_equal(
                batch_size % clips,
                0,
                message="Mismatched batch sizes: the number of prompts must "
                "equal the number of clips in `video`, or be k times it.",
            )
        offset = 0.5
        if training and self.random_window:
            offset = tf.random.uniform([])
        media = self.prepare_media(x, offset)
        prompts = self.tokenize(self.format_prompts(x["prompts"]), batch_size)
        responses = self.tokenize(x.get("responses", ""), batch_size)
        token_ids, segment_ids, cut = self.pack(
            prompts, responses, sequence_length, add_end=training
        )
        padding_mask = token_ids != self.tokenizer.pad_token_id
        outputs = dict(media, token_ids=token_ids, padding_mask=padding_mask)
        if training:
            outputs["token_ids"] = token_ids[:, :-1]
            outputs["padding_mask"] = padding_mask[:, :-1]
            outputs["y"] = token_ids[:, 1:]
            outputs["sample_weight"] = tf.cast(segment_ids[:, 1:], "float32")
        if not batched:
            outputs = {k: v[0] for k, v in outputs.items()}
        outputs["_cut"] = tf.reduce_any(cut)
        return outputs

    def _run(self, x, sequence_length, training):
        if tf.inside_function():
            return self._preprocess(x, sequence_length, training)
        key = (sequence_length, training)
        if key not in self._eager_functions:
            self._eager_functions[key] = tf.function(
                lambda inputs: self._preprocess(
                    inputs, sequence_length, training
                ),
                reduce_retracing=True,
            )
        inputs = {k: tf.convert_to_tensor(v) for k, v in x.items()}
        outputs = self._eager_functions[key](inputs)
        outputs = {k: v.numpy() for k, v in outputs.items()}
        self._warn_if_cut(outputs["_cut"], sequence_length)
        return outputs

    def _warn_if_cut(self, cut, sequence_length):
        if cut and not self._warned_truncation:
            self._warned_truncation = True
            warnings.warn(
                "Some prompts or responses were longer than "
                f"sequence_length={sequence_length} and were truncated "
                "(prompt first, then response). Raise `sequence_length` "
                "(and the backbone's `max_sequence_length`) to keep them.",
                stacklevel=4,
            )

    def _pack_prompts(self, prompts, sequence_length):
        """Packed prompts (no end token) as numpy, eagerly.

        Args:
            prompts: list of str.
            sequence_length: int.

        Returns:
            dict with `token_ids` and `padding_mask` `[B, sequence_length]`.
        """
        key = ("prompts", sequence_length)
        if key not in self._eager_functions:

            def pack_prompts(texts):
                batch_size = tf.size(texts)
                token_ids, _, cut = self.pack(
                    self.tokenize(self.format_prompts(texts), batch_size),
                    self.tokenize("", batch_size),
                    sequence_length,
                    add_end=False,
                )
                return token_ids, tf.reduce_any(cut)

            self._eager_functions[key] = tf.function(
                pack_prompts, reduce_retracing=True
            )
        token_ids, cut = self._eager_functions[key](
            tf.constant(prompts, tf.string)
        )
        self._warn_if_cut(bool(cut), sequence_length)
        token_ids = token_ids.numpy()
        return {
            "token_ids": token_ids,
            "padding_mask": token_ids != self.tokenizer.pad_token_id,
        }

    def call(self, x, y=None, sample_weight=None, sequence_length=None):
        self.check_inputs(x)
        sequence_length = (sequence_length or self.sequence_length) + 1
        outputs = self._run(x, sequence_length, training=True)
        outputs.pop("_cut")
        y = outputs.pop("y")
        sample_weight = outputs.pop("sample_weight")
        return keras.utils.pack_x_y_sample_weight(outputs, y, sample_weight)

    def generate_preprocess(self, x, sequence_length=None):
        """Prepare media and prompts (no end token) for `generate()`.

        Args:
            x: dict with `video`, `audio` (if `use_audio`) and `prompts`,
                for one clip or a batch; or, for clips already encoded (a
                `MirasolStream`), `av_latents` `[B, S, D]`,
                `av_padding_mask` `[B, S]` and `B` `prompts`.
            sequence_length: int or None. Packed text length. Defaults to
                `None`, which means `self.sequence_length`.

        Returns:
            dict with `video`, `audio`, `token_ids`, `padding_mask`,
            batched (`av_latents` and `av_padding_mask` in place of the
            media when given).
        """
        if "av_latents" in x:
            prompts = list(x["prompts"])
            if len(prompts) != len(x["av_latents"]):
                raise ValueError(
                    f"Got {len(prompts)} prompts for "
                    f"{len(x['av_latents'])} encoded clips; give one "
                    "prompt per clip."
                )
            packed = self._pack_prompts(
                prompts, sequence_length or self.sequence_length
            )
            return dict(
                packed,
                av_latents=x["av_latents"],
                av_padding_mask=x["av_padding_mask"],
            )
        self.check_inputs(x)
        x = {k: v for k, v in x.items() if k != "responses"}
        if len(np.shape(x["video"])) == 4:
            # One clip: generate() always decodes a batch.
            x["video"] = np.asarray(x["video"])[None]
            if self.use_audio:
                x["audio"] = np.asarray(x["audio"])[None]
        outputs = self._run(
            x, sequence_length or self.sequence_length, training=False
        )
        outputs.pop("_cut")
        return outputs

    def generate_postprocess(self, x):
        """Token ids of generated answers to strings.

        Ids the tokenizer does not know (a backbone vocabulary padded past
        the tokenizer's) decode as the unknown token.

        Args:
            x: dict with `token_ids` and `padding_mask` `[B, L]`, as
                `generate_step` returns them.

        Returns:
            The `B` decoded strings, without start, end and padding
            tokens.
        """
        token_ids = np.asarray(keras.ops.convert_to_numpy(x["token_ids"]))
        known = token_ids < self.tokenizer.vocabulary_size()
        if not known.all():
            unknown = self.tokenizer.token_to_id("<unk>")
            token_ids = np.where(known, token_ids, unknown)
        x = {
            "token_ids": token_ids,
            "padding_mask": np.asarray(
                keras.ops.convert_to_numpy(x["padding_mask"])
            ),
        }
        return super().generate_postprocess(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_frames": self.num_frames,
                "frame_size": self.frame_size,
                "num_audio_samples": self.num_audio_samples,
                "audio_sample_rate": self.audio_sample_rate,
                "use_audio": self.use_audio,
                "random_window": self.random_window,
                "prompt_template": self.prompt_template,
            }
        )
        return config
