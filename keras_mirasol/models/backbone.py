"""MirasolBackbone: the whole Mirasol3B model as a Functional Keras model."""

import inspect
import warnings

import keras
import keras_hub

from keras_mirasol.models.audio_encoder import AudioEncoder
from keras_mirasol.models.av_decoder import NextSnippetLatentLoss
from keras_mirasol.models.av_decoder import TimeAlignedDecoder
from keras_mirasol.models.combiner import AllTokensCombiner
from keras_mirasol.models.combiner import TransformerCombiner
from keras_mirasol.models.combiner import TTMCombiner
from keras_mirasol.models.config_checks import check_divisible
from keras_mirasol.models.input_checks import check_backbone_inputs
from keras_mirasol.models.layouts import check_layouts
from keras_mirasol.models.layouts import layout_map
from keras_mirasol.models.presets import backbone_presets
from keras_mirasol.models.pretrained_audio_encoder import WHISPER_SAMPLE_RATE
from keras_mirasol.models.pretrained_parts import FREEZABLE_PARTS
from keras_mirasol.models.pretrained_parts import check_pretrained_parts
from keras_mirasol.models.pretrained_parts import freeze_parts
from keras_mirasol.models.pretrained_parts import is_pretrained_part
from keras_mirasol.models.pretrained_parts import pretrained_audio_encoder
from keras_mirasol.models.pretrained_parts import pretrained_text_decoder
from keras_mirasol.models.pretrained_parts import pretrained_video_encoder
from keras_mirasol.models.safe_loading import check_config
from keras_mirasol.models.safe_loading import check_config_keys
from keras_mirasol.models.safe_loading import check_preset
from keras_mirasol.models.safe_loading import saved_mixed_policy
from keras_mirasol.models.safe_loading import weight_mismatch_error
from keras_mirasol.models.shape_only import shape_only_weights
from keras_mirasol.models.text_decoder import TextDecoder
from keras_mirasol.models.video_encoder import VideoEncoder

COMBINER_TYPES = ("transformer", "ttm", "all_tokens")
_announced_random_presets = set()


def _check_distribution(config):
    """Under `ModelParallel`, check its layout map before allocating.

    Args:
        config: dict. The constructor's arguments.
    """
    distribution = keras.distribution.distribution()
    if not isinstance(distribution, keras.distribution.ModelParallel):
        return
    # `ModelParallel` keeps its `LayoutMap` private; the check needs its
    # keys to find those that match no variable.
    layouts = getattr(distribution, "_layout_map", None)
    if isinstance(layouts, keras.distribution.LayoutMap):
        check_layouts(
            layouts, shape_only_weights(lambda: MirasolBackbone(**config))
        )


def unchunked_config(config):
    """The unchunked baseline of a `MirasolBackbone` config.

    The same layers and widths without the snippets: one snippet spanning
    the whole clip (`num_snippets=1`), so each encoder attends over all
    of the clip's tokens, and the `"all_tokens"` Combiner, which keeps
    every audio and video token; the time-aligned model is then full
    attention over all of them and the text decoder cross-attends to all
    of them. Its cost grows with the square of the clip's tokens where
    Mirasol's grows with the number of snippets: the comparison
    `keras-mirasol bench --sections scaling` makes.

    Args:
        config: dict. A `MirasolBackbone` config.

    Returns:
        dict. The baseline's config.

    Example:
    ```python
    config = keras_mirasol.models.backbone_presets["mirasol_tiny"]["config"]
    baseline = keras_mirasol.models.MirasolBackbone(
        **keras_mirasol.models.unchunked_config(config)
    )
    baseline.tokens_per_snippet  # 116: every token of the clip
    ```
    """
    return dict(config, num_snippets=1, combiner_type="all_tokens")


def audio_samples_per_clip(num_frames, frame_rate, audio_sample_rate):
    """Waveform samples spanning `num_frames` video frames."""
    samples = num_frames * audio_sample_rate / frame_rate
    if samples != int(samples):
        raise ValueError(
            f"The clip spans num_frames / frame_rate = {num_frames} / "
            f"{frame_rate} s, which is not a whole number of samples at "
            f"audio_sample_rate={audio_sample_rate}. Change one of "
            "`num_frames`, `frame_rate`, `audio_sample_rate`."
        )
    return int(samples)


@keras.saving.register_keras_serializable(package="keras_mirasol")
class MirasolBackbone(keras_hub.models.Backbone):
    """Mirasol3B: time-aligned audio+video and contextual text.

    Video and audio are cut into `num_snippets` consecutive snippets; each
    snippet is encoded on its own (`VideoEncoder`, `AudioEncoder`) and
    compressed to `combiner_tokens` tokens by a Combiner
    (`TransformerCombiner` or `TTMCombiner`). A block-causal
    `TimeAlignedDecoder` models the snippets in time; its outputs
    `av_latents` are the latent space that the `TextDecoder`
    cross-attends to. A next-snippet latent prediction loss is returned
    per clip for a task to add with weight `latent_loss_weight`.

    Args:
        vocabulary_size: int. Text vocabulary size.
        max_sequence_length: int. Longest token sequence.
        num_frames: int. Video frames `N` per clip.
        image_size: int or `(H, W)`. Frame size.
        num_snippets: int. Snippets `T` per clip; `N % T == 0`.
        frame_rate: float. Frames per second of the sampled clip; with
            `num_frames` it sets the clip span and so the audio length.
        tubelet_size: `(t, p, p)`. Video tubelet size: `t` frames by
            `p x p` pixels per video token.
        video_hidden_dim: int. Token width `D_v` of the video encoder.
        video_num_layers: int. Transformer blocks `L_v` of the video
            encoder.
        video_num_heads: int. Attention heads of the video encoder;
            divides `video_hidden_dim`.
        video_intermediate_dim: int. MLP width of the video encoder.
        audio_sample_rate: int. Waveform sample rate in Hz.
        audio_num_mel_bins: int. Mel bands of the log-mel spectrogram.
        audio_fft_length: int. FFT size of the spectrogram.
        audio_window_length: int. STFT window in samples.
        audio_hop_length: int. STFT hop in samples.
        audio_patch_size: `(time, freq)`. Spectrogram patch size.
        audio_hidden_dim: int. Token width `D_a` of the audio encoder.
        audio_num_layers: int. Transformer blocks `L_a` of the audio
            encoder.
        audio_num_heads: int. Attention heads of the audio encoder;
            divides `audio_hidden_dim`.
        audio_intermediate_dim: int. MLP width of the audio encoder.
        combiner_tokens: int. Tokens `m` per snippet.
        combiner_num_layers: int. Combiner blocks `L_c`.
        av_hidden_dim: int. Width `D` of the Combiner's output and of the
            time-aligned model (`av_latents`).
        av_num_layers: int. Blocks `L_av` of the time-aligned model.
        av_num_heads: int. Attention heads of the Combiner and the
            time-aligned model; divides `av_hidden_dim`.
        av_intermediate_dim: int. MLP width of the Combiner and the
            time-aligned model.
        text_hidden_dim: int. Width `D_t` of the text decoder.
        text_num_layers: int. Blocks `L_t` of the text decoder.
        text_num_heads: int. Attention heads of the text decoder; divides
            `text_hidden_dim`.
        text_intermediate_dim: int. MLP width of the text decoder.
        use_audio: bool. `False` builds the video-only model (no `audio`
            input). Defaults to `True`.
        combiner_type: str. `"transformer"`, `"ttm"` or `"all_tokens"`
            (no compression: every token of a snippet is kept and
            `combiner_tokens` is not used; with `num_snippets=1` the
            unchunked baseline, see `unchunked_config`).
            Defaults to `"transformer"`.
        ttm_memory_size: int. TTM memory tokens (used by `"ttm"`).
            Defaults to `8`.
        cross_attention_every: int. Cross-attend in every k-th text block,
            starting with the first. Defaults to `1`.
        tie_word_embeddings: bool. Tie input and output text embeddings.
            Defaults to `True`.
        latent_loss_weight: float. Weight of the next-snippet latent loss,
            which `MirasolCausalLM` adds to its loss. Defaults to `0.1`.
        latent_loss_type: str. `"mse"` or `"cosine"`.
            Defaults to `"mse"`.
        dropout: float. Dropout rate in every block (training only).
            Defaults to `0.0`.
        layer_norm_epsilon: float. Epsilon of every layer normalization.
            Defaults to `1e-6`.
        remat: bool. Rematerialisation: the transformer blocks of the
            encoders, the Combiner and the time-aligned model keep only
            their inputs for the backward pass and compute their
            activations again there (`keras.remat`), and the encoders
            and the Transformer Combiner run one snippet at a time in a
            loop (`keras.ops.scan`, on JAX and torch), so training
            memory holds one snippet's activations, not the clip's, at
            the cost of about one more forward pass of those parts.
            Pretrained keras-hub parts follow it: a VideoPrism or
            Whisper encoder runs one snippet at a time, recomputed, and
            a pretrained text decoder recomputes each block. Outputs and
            gradients are unchanged; inference is unaffected.
            Defaults to `False`.
        video_encoder: a `PretrainedVideoEncoder` (or its serialized
            config) in place of Mirasol's own video encoder; `num_frames`
            and `image_size` must fit it. Usually set by
            `from_components()`. Defaults to `None` (Mirasol's own).
        audio_encoder: a `PretrainedAudioEncoder` (or its serialized
            config) in place of Mirasol's own audio encoder;
            `audio_sample_rate` must be 16000. Usually set by
            `from_components()`. Defaults to `None` (Mirasol's own).
        text_decoder: a `PretrainedTextDecoder` (or its serialized
            config) in place of Mirasol's own text decoder;
            `vocabulary_size` must be its vocabulary size. Usually set by
            `from_components()`. Defaults to `None` (Mirasol's own).
        dtype: string or `keras.mixed_precision.DTypePolicy`. The dtype to
            use for model computations and weights. Softmax and layer
            normalization always compute in float32. Defaults to `None`,
            which uses `keras.config.dtype_policy()`.

    Inputs (a dict):
        video: float `[B, N, H, W, 3]`, values in `[0, 1]`.
        audio: float `[B, S]` mono waveform, `S = N / frame_rate *
            audio_sample_rate` (absent when `use_audio=False`).
        token_ids: int `[B, L]`, or `[B * k, L]` for `k` questions per
            clip (rows `i * k ... i * k + k - 1` ask about clip `i`; the
            clip is encoded once for all of them).
        padding_mask: int, the shape of `token_ids`, 1 for real tokens.

    Outputs (a dict):
        sequence_output: float `[B * k, L, text_hidden_dim]`.
        av_latents: float `[B, T * m, av_hidden_dim]`.
        latent_loss: float32 `[B]`, the unweighted next-snippet loss.

    Example:
    ```python
    backbone = keras_mirasol.models.MirasolBackbone.from_preset(
        "mirasol_tiny"
    )
    outputs = backbone({
        "video": np.random.uniform(size=(1, 16, 32, 32, 3)),
        "audio": np.random.normal(size=(1, 32000)),
        "token_ids": np.ones((1, 8), "int32"),
        "padding_mask": np.ones((1, 8), "int32"),
    })
    outputs["sequence_output"].shape  # (1, 8, 64)
    ```
    """

    def __init__(
        self,
        vocabulary_size,
        max_sequence_length,
        num_frames,
        image_size,
        num_snippets,
        frame_rate,
        tubelet_size,
        video_hidden_dim,
        video_num_layers,
        video_num_heads,
        video_intermediate_dim,
        audio_sample_rate,
        audio_num_mel_bins,
        audio_fft_length,
        audio_window_length,
        audio_hop_length,
        audio_patch_size,
        audio_hidden_dim,
        audio_num_layers,
        audio_num_heads,
        audio_intermediate_dim,
        combiner_tokens,
        combiner_num_layers,
        av_hidden_dim,
        av_num_layers,
        av_num_heads,
        av_intermediate_dim,
        text_hidden_dim,
        text_num_layers,
        text_num_heads,
        text_intermediate_dim,
        use_audio=True,
        combiner_type="transformer",
        ttm_memory_size=8,
        cross_attention_every=1,
        tie_word_embeddings=True,
        latent_loss_weight=0.1,
        latent_loss_type="mse",
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        remat=False,
        video_encoder=None,
        audio_encoder=None,
        text_decoder=None,
        dtype=None,
        **kwargs,
    ):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        image_size = tuple(image_size)
        video_encoder = pretrained_video_encoder(video_encoder, num_snippets)
        num_samples = audio_samples_per_clip(
            num_frames, frame_rate, audio_sample_rate
        )
        audio_encoder = pretrained_audio_encoder(
            audio_encoder, num_samples, num_snippets
        )
        text_decoder = pretrained_text_decoder(
            text_decoder, cross_attention_every, dropout, layer_norm_epsilon
        )
        check_pretrained_parts(
            video_encoder,
            audio_encoder,
            text_decoder,
            num_frames=num_frames,
            image_size=image_size,
            use_audio=use_audio,
            audio_sample_rate=audio_sample_rate,
            vocabulary_size=vocabulary_size,
        )
        # The layout check builds Mirasol's own parts shape-only; it does
        # not apply to pretrained parts, whose weights already exist.
        if all(p is None for p in (video_encoder, audio_encoder, text_decoder)):
            _check_distribution(
                {k: v for k, v in locals().items() if k in _CONFIG_ARGS}
            )
        if combiner_type not in COMBINER_TYPES:
            raise ValueError(
                f"`combiner_type` must be one of {COMBINER_TYPES}, got "
                f"{combiner_type!r}."
            )
        pretrained = {
            "video": video_encoder,
            "audio": audio_encoder,
            "text": text_decoder,
        }
        for prefix, dim, heads in (
            ("video", video_hidden_dim, video_num_heads),
            ("audio", audio_hidden_dim, audio_num_heads),
            ("av", av_hidden_dim, av_num_heads),
            ("text", text_hidden_dim, text_num_heads),
        ):
            own = pretrained.get(prefix) is None
            if own and (prefix != "audio" or use_audio):
                check_divisible(
                    f"{prefix}_hidden_dim",
                    dim,
                    f"{prefix}_num_heads",
                    heads,
                    f"MirasolBackbone {prefix} transformer",
                )

        # The pretrained parts follow the model's remat switch.
        for part in pretrained.values():
            if part is not None:
                part.remat = remat

        # === Layers ===
        self.video_encoder = video_encoder
        if video_encoder is None:
            self.video_encoder = VideoEncoder(
                num_frames=num_frames,
                num_snippets=num_snippets,
                image_size=image_size,
                tubelet_size=tubelet_size,
                hidden_dim=video_hidden_dim,
                num_layers=video_num_layers,
                num_heads=video_num_heads,
                intermediate_dim=video_intermediate_dim,
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                remat=remat,
                dtype=dtype,
                name="video_encoder",
            )
        self.audio_encoder = audio_encoder
        if use_audio and audio_encoder is None:
            self.audio_encoder = AudioEncoder(
                num_samples=num_samples,
                num_snippets=num_snippets,
                sample_rate=audio_sample_rate,
                num_mel_bins=audio_num_mel_bins,
                fft_length=audio_fft_length,
                window_length=audio_window_length,
                hop_length=audio_hop_length,
                patch_size=audio_patch_size,
                hidden_dim=audio_hidden_dim,
                num_layers=audio_num_layers,
                num_heads=audio_num_heads,
                intermediate_dim=audio_intermediate_dim,
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                remat=remat,
                dtype=dtype,
                name="audio_encoder",
            )
        combiner_kwargs = dict(
            num_tokens=combiner_tokens,
            hidden_dim=av_hidden_dim,
            num_layers=combiner_num_layers,
            num_heads=av_num_heads,
            intermediate_dim=av_intermediate_dim,
            use_audio=use_audio,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            remat=remat,
            dtype=dtype,
            name="combiner",
        )
        if combiner_type == "ttm":
            self.combiner = TTMCombiner(
                memory_size=ttm_memory_size, **combiner_kwargs
            )
        elif combiner_type == "all_tokens":
            self.combiner = AllTokensCombiner(**combiner_kwargs)
        else:
            self.combiner = TransformerCombiner(**combiner_kwargs)
        self.av_decoder = TimeAlignedDecoder(
            hidden_dim=av_hidden_dim,
            num_layers=av_num_layers,
            num_heads=av_num_heads,
            intermediate_dim=av_intermediate_dim,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            remat=remat,
            dtype=dtype,
            name="av_decoder",
        )
        self.latent_prediction = NextSnippetLatentLoss(
            hidden_dim=av_hidden_dim,
            loss_type=latent_loss_type,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
            name="latent_prediction",
        )
        self.text_decoder = text_decoder
        if text_decoder is None:
            self.text_decoder = TextDecoder(
                vocabulary_size=vocabulary_size,
                max_sequence_length=max_sequence_length,
                hidden_dim=text_hidden_dim,
                num_layers=text_num_layers,
                num_heads=text_num_heads,
                intermediate_dim=text_intermediate_dim,
                cross_attention_every=cross_attention_every,
                tie_word_embeddings=tie_word_embeddings,
                dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name="text_decoder",
            )

        # === Functional Model ===
        inputs = {
            "video": keras.Input(
                shape=(num_frames, *image_size, 3),
                dtype="float32",
                name="video",
            )
        }
        if use_audio:
            inputs["audio"] = keras.Input(
                shape=(num_samples,), dtype="float32", name="audio"
            )
        inputs["token_ids"] = keras.Input(
            shape=(None,), dtype="int32", name="token_ids"
        )
        inputs["padding_mask"] = keras.Input(
            shape=(None,), dtype="int32", name="padding_mask"
        )
        combined, av_latents = self.encode_media(
            inputs["video"], inputs.get("audio")
        )
        latent_loss = self.latent_prediction(av_latents, combined)
        sequence_output = self.text_decoder(
            inputs["token_ids"], av_latents, inputs["padding_mask"]
        )
        # The Functional constructor would set a `trainable` argument (a
        # saved config's) on every layer, unfreezing frozen pretrained
        # parts and making trainable what a part keeps fixed (Whisper's
        # positions): only a `False` is applied, after.
        trainable = kwargs.pop("trainable", True)
        super().__init__(
            inputs=inputs,
            outputs={
                "sequence_output": sequence_output,
                "av_latents": av_latents,
                "latent_loss": latent_loss,
            },
            dtype=dtype,
            **kwargs,
        )
        if not trainable:
            self.trainable = False

        # === Config ===
        self.vocabulary_size = vocabulary_size
        self.max_sequence_length = max_sequence_length
        self.num_frames = num_frames
        self.image_size = image_size
        self.num_snippets = num_snippets
        self.frame_rate = frame_rate
        self.tubelet_size = tuple(tubelet_size)
        self.video_hidden_dim = video_hidden_dim
        self.video_num_layers = video_num_layers
        self.video_num_heads = video_num_heads
        self.video_intermediate_dim = video_intermediate_dim
        self.use_audio = use_audio
        self.audio_sample_rate = audio_sample_rate
        self.audio_num_mel_bins = audio_num_mel_bins
        self.audio_fft_length = audio_fft_length
        self.audio_window_length = audio_window_length
        self.audio_hop_length = audio_hop_length
        self.audio_patch_size = tuple(audio_patch_size)
        self.audio_hidden_dim = audio_hidden_dim
        self.audio_num_layers = audio_num_layers
        self.audio_num_heads = audio_num_heads
        self.audio_intermediate_dim = audio_intermediate_dim
        self.combiner_type = combiner_type
        self.combiner_tokens = combiner_tokens
        self.combiner_num_layers = combiner_num_layers
        self.ttm_memory_size = ttm_memory_size
        self.av_hidden_dim = av_hidden_dim
        self.av_num_layers = av_num_layers
        self.av_num_heads = av_num_heads
        self.av_intermediate_dim = av_intermediate_dim
        self.text_hidden_dim = text_hidden_dim
        self.text_num_layers = text_num_layers
        self.text_num_heads = text_num_heads
        self.text_intermediate_dim = text_intermediate_dim
        self.cross_attention_every = cross_attention_every
        self.tie_word_embeddings = tie_word_embeddings
        self.latent_loss_weight = latent_loss_weight
        self.latent_loss_type = latent_loss_type
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.remat = remat
        self.num_audio_samples = num_samples
        # `m`: `combiner_tokens`, or every token for "all_tokens".
        self.tokens_per_snippet = combined.shape[2]
        self.token_embedding = self.text_decoder.token_embedding

    @staticmethod
    def get_layout_map(
        device_mesh,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """A `keras.distribution.LayoutMap` sharding every weight.

        Attention heads, MLP widths and embedding widths of every component
        go over `model_parallel_dim_name`, the other matrix dimension over
        `data_parallel_dim_name`; see `keras_mirasol.models.layouts`.

        Args:
            device_mesh: `keras.distribution.DeviceMesh`.
            model_parallel_dim_name: str. Mesh axis that shards weights
                tensor-parallel. Defaults to `"model"`.
            data_parallel_dim_name: str. Mesh axis that splits the batch.
                Defaults to `"batch"`.

        Returns:
            `keras.distribution.LayoutMap`.

        Example:
        ```python
        mesh = keras.distribution.DeviceMesh(
            (2, 4), ("batch", "model"), keras.distribution.list_devices()
        )
        distribution = keras.distribution.ModelParallel(
            layout_map=MirasolBackbone.get_layout_map(mesh),
            batch_dim_name="batch",
        )
        with distribution.scope():
            backbone = MirasolBackbone.from_preset("mirasol_tiny")
        ```
        """
        return layout_map(
            device_mesh,
            model_parallel_dim_name=model_parallel_dim_name,
            data_parallel_dim_name=data_parallel_dim_name,
        )

    def enable_lora(self, rank, target_layer_names=None):
        """Freeze the backbone and train low-rank adapters (LoRA).

        keras-hub's LoRA: every layer named in `target_layer_names` (the
        query and value projections of every attention layer, in every
        part) gets a rank-`rank` adapter and everything else is frozen.
        Keras leaves the adapted layers' biases trainable; they are frozen
        here too, so only the adapters train and `save_lora_weights`
        holds everything training changed. `save_to_preset` saves the
        adapters merged into the kernels (a plain model loads it).

        Args:
            rank: int. Rank of each adapter.
            target_layer_names: list of str or None. Names of the layers
                to adapt. Defaults to `None`, which means
                `default_lora_layer_names()`.

        Example:
        ```python
        backbone = keras_mirasol.models.MirasolBackbone.from_preset(
            "mirasol_tiny"
        )
        backbone.enable_lora(4)
        len(backbone.trainable_weights)  # the adapters' two kernels each
        ```
        """
        super().enable_lora(rank, target_layer_names=target_layer_names)
        names = set(target_layer_names or self.default_lora_layer_names())
        for weight in self.trainable_weights:
            layer_name = weight.path.split("/")[-2]
            if layer_name in names and weight.path.endswith("/bias"):
                weight.trainable = False

    def with_num_snippets(self, num_snippets):
        """This model for clips of `num_snippets` snippets, same weights.

        Snippets keep their length (`num_frames / num_snippets` frames and
        the audio of those frames); the clip grows or shrinks by whole
        snippets. No Mirasol weight depends on the number of snippets (the
        paper's "no new parameters"), so a model trained on short clips
        takes long ones as it is: the block-causal time-aligned model
        gives the first snippets of a longer clip the latents it gave the
        shorter clip. The copy keeps which weights train (frozen parts,
        LoRA adapters with their rank) and the dtype policy. Not for the
        unchunked baseline (`unchunked_config`), whose one snippet is the
        whole clip.

        Args:
            num_snippets: int. Snippets per clip of the new model.

        Returns:
            A new `MirasolBackbone` (not compiled; this one is unchanged).

        Raises:
            ValueError: the unchunked baseline, or `num_snippets < 1`.

        Example:
        ```python
        backbone = keras_mirasol.models.MirasolBackbone.from_preset(
            "mirasol_tiny"
        )
        longer = backbone.with_num_snippets(32)
        (longer.num_frames, longer.num_snippets)  # (128, 32)
        longer.count_params() == backbone.count_params()  # True
        ```
        """
        if self.combiner_type == "all_tokens":
            raise ValueError(
                "The unchunked baseline (combiner_type='all_tokens') is one "
                "snippet spanning the clip: its encoders' position weights "
                "are sized by the clip's length, so it cannot take another "
                "length with the same weights. Build and train it at the "
                "new length (`unchunked_config` with another num_frames)."
            )
        if int(num_snippets) != num_snippets or num_snippets < 1:
            raise ValueError(
                f"num_snippets must be a positive integer, got "
                f"{num_snippets!r}."
            )
        num_snippets = int(num_snippets)
        frames = self.num_frames // self.num_snippets
        config = dict(
            self.get_config(),
            num_frames=frames * num_snippets,
            num_snippets=num_snippets,
        )
        # Pretrained encoders (`from_components`) are serialized with their
        # own snippet count (and the audio one with its samples).
        for name in ("video_encoder", "audio_encoder"):
            part = config.get(name)
            if isinstance(part, dict):
                part_config = dict(part["config"], num_snippets=num_snippets)
                if "num_samples" in part_config:
                    per_snippet = part_config["num_samples"] // (
                        self.num_snippets
                    )
                    part_config["num_samples"] = per_snippet * num_snippets
                config[name] = dict(part, config=part_config)
        resized = type(self).from_config(config)
        lora = getattr(self, "_lora_enabled_layers", [])
        if lora:
            # keras-hub numbers the layers that hold weights.
            layers = self._flatten_layers(include_self=False)
            layers = [layer for layer in layers if layer.weights]
            resized.enable_lora(
                self._lora_rank,
                target_layer_names=sorted({layers[i].name for i in lora}),
            )
        pairs = list(zip(self.weights, resized.weights))
        if len(self.weights) != len(resized.weights) or any(
            tuple(a.shape) != tuple(b.shape) for a, b in pairs
        ):
            raise ValueError(
                f"The model at num_snippets={num_snippets} does not have "
                "this model's weights; its config has a length-dependent "
                "weight, which `with_num_snippets` cannot copy."
            )
        for old, new in pairs:
            # A copy: the two models must not share buffers, which a
            # backend may donate to a compiled step.
            new.assign(keras.ops.copy(old.value))
        # Layers first (a layer's flag sets its weights'), then weights
        # (LoRA freezes single weights of a trainable layer).
        for old, new in zip(
            self._flatten_layers(include_self=False),
            resized._flatten_layers(include_self=False),
        ):
            new.trainable = old.trainable
        for old, new in pairs:
            new.trainable = old.trainable
        return resized

    def encode_media(self, video, audio=None):
        """The time-aligned side: encoders, Combiner, time-aligned model.

        Builds the Functional graph here, and `MirasolCausalLM.generate()`
        calls it once per clip.

        Args:
            video: float `[B, N, H, W, 3]`.
            audio: float `[B, S]`, or `None` for a video-only model.
                Defaults to `None`.

        Returns:
            `(combined_tokens [B, T, m, D], av_latents [B, T * m, D])`.
        """
        video_tokens = self.video_encoder(video)
        audio_tokens = None
        if self.audio_encoder is not None:
            audio_tokens = self.audio_encoder(audio)
        combined = self.combiner(video_tokens, audio_tokens)
        return combined, self.av_decoder(combined)

    @property
    def input_names(self):
        """Keys of the input dict, in order."""
        names = ["video", "audio", "token_ids", "padding_mask"]
        return [n for n in names if n != "audio" or self.use_audio]

    def validate_inputs(self, inputs):
        """Check the input dict's keys and static shapes.

        Raises a `ValueError` naming the expected shape and the config key
        to change, before anything is traced or compiled
        (`input_checks.check_backbone_inputs`).

        Args:
            inputs: dict. The backbone inputs, keyed by `input_names`.
        """
        audio_samples = self.num_audio_samples if self.use_audio else None
        check_backbone_inputs(
            inputs,
            self.input_names,
            num_frames=self.num_frames,
            image_size=self.image_size,
            num_snippets=self.num_snippets,
            num_audio_samples=audio_samples,
            audio_sample_rate=self.audio_sample_rate,
            max_sequence_length=self.max_sequence_length,
        )

    # Both entry points validate: `__call__` for eager and nested calls,
    # `call` for the stateless path `fit()` and `predict()` take on JAX.
    def __call__(self, inputs, *args, **kwargs):
        self.validate_inputs(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        self.validate_inputs(inputs)
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_sequence_length": self.max_sequence_length,
                "num_frames": self.num_frames,
                "image_size": self.image_size,
                "num_snippets": self.num_snippets,
                "frame_rate": self.frame_rate,
                "tubelet_size": self.tubelet_size,
                "video_hidden_dim": self.video_hidden_dim,
                "video_num_layers": self.video_num_layers,
                "video_num_heads": self.video_num_heads,
                "video_intermediate_dim": self.video_intermediate_dim,
                "use_audio": self.use_audio,
                "audio_sample_rate": self.audio_sample_rate,
                "audio_num_mel_bins": self.audio_num_mel_bins,
                "audio_fft_length": self.audio_fft_length,
                "audio_window_length": self.audio_window_length,
                "audio_hop_length": self.audio_hop_length,
                "audio_patch_size": self.audio_patch_size,
                "audio_hidden_dim": self.audio_hidden_dim,
                "audio_num_layers": self.audio_num_layers,
                "audio_num_heads": self.audio_num_heads,
                "audio_intermediate_dim": self.audio_intermediate_dim,
                "combiner_type": self.combiner_type,
                "combiner_tokens": self.combiner_tokens,
                "combiner_num_layers": self.combiner_num_layers,
                "ttm_memory_size": self.ttm_memory_size,
                "av_hidden_dim": self.av_hidden_dim,
                "av_num_layers": self.av_num_layers,
                "av_num_heads": self.av_num_heads,
                "av_intermediate_dim": self.av_intermediate_dim,
                "text_hidden_dim": self.text_hidden_dim,
                "text_num_layers": self.text_num_layers,
                "text_num_heads": self.text_num_heads,
                "text_intermediate_dim": self.text_intermediate_dim,
                "cross_attention_every": self.cross_attention_every,
                "tie_word_embeddings": self.tie_word_embeddings,
                "latent_loss_weight": self.latent_loss_weight,
                "latent_loss_type": self.latent_loss_type,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "remat": self.remat,
            }
        )
        # Pretrained parts carry their own configs (and the keras-hub
        # backbones inside them); Mirasol's own parts are built from the
        # values above.
        for name in FREEZABLE_PARTS:
            part = getattr(self, name)
            if is_pretrained_part(part):
                config[name] = keras.layers.serialize(part)
        return config

    @classmethod
    def from_config(cls, config):
        # Keras' Functional constructor drops keyword arguments it does not
        # know: refuse them (and code) here, for `.keras` files and configs.
        check_config(cls, config)
        return super().from_config(config)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        """Load weights saved by `save_weights` (or a preset's weights).

        A weights file that does not fit this backbone (a weight of
        another shape, or one the backbone does not have, which Keras
        would skip silently) raises a `ValueError` that lists each such
        weight by its path, with both shapes.

        Args:
            filepath: str. A `.weights.h5` file (or `.weights.json` for
                sharded weights).
            skip_mismatch: bool. Skip the weights that do not fit instead
                of raising. Defaults to `False`.
            **kwargs: passed to `keras.Model.load_weights`.
        """
        try:
            super().load_weights(
                filepath, skip_mismatch=skip_mismatch, **kwargs
            )
        except ValueError as error:
            clear = weight_mismatch_error(self, filepath)
            if clear is None:
                raise
            raise clear from error
        if not skip_mismatch:
            clear = weight_mismatch_error(self, filepath)
            if clear is not None:
                raise clear

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Build a backbone from a built-in preset name or a preset dir.

        No pretrained Mirasol weights exist: a built-in name (see
        `keras_mirasol.models.backbone_presets`) builds a randomly
        initialised model from that config and says so once per name. A
        local directory written by `save_to_preset()` loads its config
        and, with `load_weights=True`, its weights.

        Loading is safe and says what is wrong: a config that holds code
        (a `Lambda` layer, Python bytecode) is refused whatever
        `keras.config.enable_unsafe_deserialization()` says; a config key
        that `MirasolBackbone` does not take, a missing file or a weight
        of another shape raises an error that names it (see
        `keras_mirasol.models.safe_loading`).

        Args:
            preset: str. A built-in preset name or a local directory.
            load_weights: bool. Load weights from a preset directory
                (built-in names have none). Defaults to `True`.
            **kwargs: config overrides, e.g. `combiner_type="ttm"`.
        """
        check_config_keys(cls, kwargs, "in the arguments of from_preset()")
        if preset in backbone_presets:
            if preset not in _announced_random_presets:
                _announced_random_presets.add(preset)
                warnings.warn(
                    f"'{preset}' is a configuration only: no pretrained "
                    "Mirasol weights exist, so the model is randomly "
                    "initialised. Train it, or load your own weights with "
                    "from_preset(<directory written by save_to_preset>).",
                    stacklevel=2,
                )
            config = {**backbone_presets[preset]["config"], **kwargs}
            return cls(**config)
        check_preset(preset, cls, load_weights=load_weights)
        policy = None if kwargs.get("dtype") else saved_mixed_policy(preset)
        if policy:
            kwargs["dtype"] = policy
        return super().from_preset(preset, load_weights=load_weights, **kwargs)

    @classmethod
    def from_components(
        cls,
        video_encoder=None,
        audio_encoder=None,
        text_decoder=None,
        base="mirasol_small",
        video_spatial_pool=1,
        freeze=(),
        **kwargs,
    ):
        """A Mirasol model around pretrained keras-hub parts.

        The parts given replace Mirasol's own: a `VideoPrismBackbone` runs
        on each snippet (`PretrainedVideoEncoder`), a decoder-only language
        model becomes the text decoder with gated cross-attention to the
        latents inserted (`PretrainedTextDecoder`: at initialisation its
        logits are exactly the language model's). The other parts (audio
        encoder, Combiner, time-aligned model, and any part not given) are
        Mirasol's own, sized by the built-in preset `base` and `kwargs`.
        The config values that describe a pretrained part (`num_frames`,
        `image_size`, `vocabulary_size`, `video_*`, `text_*`) are taken
        from it. `save_to_preset` saves the whole model, the parts'
        weights included, and `from_preset` loads it without keras-hub
        downloads.

        Args:
            video_encoder: a video-only `keras_hub.models.VideoPrismBackbone`
                or None. Its `num_frames` frames make one snippet, so a
                clip has `num_snippets * num_frames` frames. Defaults to
                `None` (Mirasol's own `VideoEncoder`).
            audio_encoder: a `keras_hub.models.WhisperBackbone` or None.
                Its encoder runs on each snippet of 16 kHz audio
                (`PretrainedAudioEncoder`). Defaults to `None` (Mirasol's
                own `AudioEncoder`, or none with `use_audio=False`).
            text_decoder: a text-only keras-hub backbone among
                `SUPPORTED_TEXT_BACKBONES` (`Gemma3Backbone`,
                `Qwen3Backbone`, ...) or None. Its tokenizer is the one to
                build the preprocessor with. Defaults to `None` (Mirasol's
                own `TextDecoder`).
            base: str. Built-in preset that sizes Mirasol's own parts.
                Defaults to `"mirasol_small"`.
            video_spatial_pool: int. Average-pool the video model's patch
                grid by this factor (see `PretrainedVideoEncoder`).
                Defaults to `1`.
            freeze: tuple of str. Parts whose pretrained weights do not
                train: `"video_encoder"`, `"audio_encoder"`,
                `"text_decoder"` (the language
                model; its inserted cross-attention blocks still train).
                Defaults to `()`.
            **kwargs: other config values, e.g. `num_snippets=8`,
                `combiner_type="ttm"`, `cross_attention_every=2`,
                `use_audio=False`, `max_sequence_length=64`.

        Returns:
            `MirasolBackbone`.

        Example:
        ```python
        import keras_hub

        # Tiny random parts; real ones come from
        # VideoPrismBackbone.from_preset("videoprism_public_v1_base") and
        # Gemma3Backbone.from_preset("gemma3_instruct_270m").
        video = keras_hub.models.VideoPrismBackbone(
            num_frames=2, patch_size=8, hidden_dim=16, intermediate_dim=32,
            num_heads=2, num_spatial_layers=1, num_temporal_layers=1,
            num_auxiliary_layers=0, image_shape=(32, 32, 3),
        )
        text = keras_hub.models.Gemma3Backbone(
            vocabulary_size=100, image_size=16, num_layers=2,
            num_query_heads=2, num_key_value_heads=1, hidden_dim=32,
            intermediate_dim=64, head_dim=16,
        )
        backbone = keras_mirasol.models.MirasolBackbone.from_components(
            video_encoder=video,
            text_decoder=text,
            base="mirasol_tiny",
            num_snippets=4,
            combiner_type="ttm",
            freeze=("video_encoder", "text_decoder"),
        )
        # 4 snippets of 2 frames, each 2 x 4 x 4 VideoPrism patch tokens.
        video_clip = np.zeros((1, 8, 32, 32, 3))
        backbone.video_encoder(video_clip).shape  # (1, 4, 32, 16)
        ```
        """
        if base not in backbone_presets:
            raise ValueError(
                f"Unknown base preset {base!r}; built-in presets are "
                f"{sorted(backbone_presets)}."
            )
        check_config_keys(cls, kwargs, "in the arguments of from_components()")
        config = {**backbone_presets[base]["config"], **kwargs}
        if video_encoder is not None:
            video_encoder = pretrained_video_encoder(
                video_encoder, config["num_snippets"], video_spatial_pool
            )
            prism = video_encoder.backbone
            config.update(
                num_frames=video_encoder.num_frames,
                image_size=video_encoder.image_size,
                video_hidden_dim=prism.hidden_dim,
                video_num_layers=(
                    prism.num_spatial_layers + prism.num_temporal_layers
                ),
                video_num_heads=prism.num_heads,
                video_intermediate_dim=prism.intermediate_dim,
                video_encoder=video_encoder,
            )
        if audio_encoder is not None:
            num_samples = audio_samples_per_clip(
                config["num_frames"], config["frame_rate"], WHISPER_SAMPLE_RATE
            )
            audio_encoder = pretrained_audio_encoder(
                audio_encoder, num_samples, config["num_snippets"]
            )
            whisper = audio_encoder.backbone
            config.update(
                audio_sample_rate=WHISPER_SAMPLE_RATE,
                audio_num_mel_bins=whisper.num_mels,
                audio_fft_length=audio_encoder.fft_length,
                audio_window_length=audio_encoder.fft_length,
                audio_hop_length=audio_encoder.hop_length,
                audio_hidden_dim=whisper.hidden_dim,
                audio_num_layers=whisper.num_layers,
                audio_num_heads=whisper.num_heads,
                audio_intermediate_dim=whisper.intermediate_dim,
                audio_encoder=audio_encoder,
            )
        if text_decoder is not None:
            text_decoder = pretrained_text_decoder(
                text_decoder,
                config["cross_attention_every"],
                config["dropout"],
                config["layer_norm_epsilon"],
            )
            language_model = text_decoder.backbone
            config.update(
                vocabulary_size=language_model.vocabulary_size,
                text_hidden_dim=language_model.hidden_dim,
                text_num_layers=language_model.num_layers,
                text_num_heads=language_model.num_query_heads,
                text_intermediate_dim=language_model.intermediate_dim,
                tie_word_embeddings=getattr(
                    language_model, "tie_word_embeddings", True
                ),
                text_decoder=text_decoder,
            )
        backbone = cls(**config)
        freeze_parts(backbone, freeze)
        return backbone


# The constructor arguments that make up a backbone's config.
_CONFIG_ARGS = set(inspect.signature(MirasolBackbone.__init__).parameters) - {
    "self",
    "kwargs",
}
