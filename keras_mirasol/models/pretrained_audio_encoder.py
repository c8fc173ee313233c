"""A pretrained keras-hub Whisper encoder as Mirasol's per-snippet encoder."""

import keras
import keras_hub
from keras import ops

from keras_mirasol.layers.transformer_stack import encode_snippets
from keras_mirasol.models.pretrained_text_decoder import deserialize_backbone

WHISPER_SAMPLE_RATE = 16000


def unused_decoder_layers(backbone):
    """The layers of Whisper's decoder, which Mirasol does not run.

    Args:
        backbone: `keras_hub.models.WhisperBackbone`.

    Returns:
        list of layers: the token and position embedding, the decoder
        blocks and the decoder's final norm.
    """
    return [
        backbone.decoder_embeddings,
        *backbone.decoder_transformer_layers,
        backbone.decoder_layer_norm,
    ]


@keras.saving.register_keras_serializable(package="keras_mirasol")
class PretrainedAudioEncoder(keras.layers.Layer):
    """A keras-hub `WhisperBackbone`'s encoder run on each audio snippet.

    The waveform is cut into `num_snippets` snippets, folded into the
    batch, and each snippet gets Whisper's own log-mel features (25 ms
    periodic Hann windows every 10 ms, reflect-padded, the last frame
    dropped, Whisper's mel filters, `log10` floored 8 below the snippet's
    maximum, then `(x + 4) / 4`) and goes through Whisper's encoder
    (two convolutions, the second with stride 2, the sinusoidal
    positions, the transformer, the final norm): the features of a
    snippet are those keras-hub's `WhisperAudioConverter` and
    `WhisperBackbone` compute on that snippet alone. Whisper's decoder is
    not used: its layers are frozen here, so training neither updates
    them nor keeps optimizer state for them (setting
    `backbone.trainable = True` afterwards unfreezes them with the rest).
    Audio is at 16 kHz, Whisper's rate.

    Args:
        backbone: `keras_hub.models.WhisperBackbone`. Freeze its weights
            with `encoder.backbone.trainable = False`.
        num_samples: int. Waveform samples per clip; `num_snippets`
            divides it.
        num_snippets: int. Snippets `T` per clip.
        remat: bool. Run the Whisper encoder one snippet at a time in a loop
            and recompute its activations in the backward pass
            (`keras.remat`), so training memory holds one snippet's
            activations. `MirasolBackbone(remat=...)` sets it. Defaults
            to `False`.

    Call arguments:
        audio: float `[B, S]` mono at 16 kHz, `S` a multiple of
            `num_samples / num_snippets`.
        training: bool or None.

    Returns:
        float `[B, S / samples_per_snippet, tokens_per_snippet,
        hidden_dim]`.

    Example:
    ```python
    import keras_hub

    # A tiny random Whisper; a real one comes from
    # keras_hub.models.WhisperBackbone.from_preset("whisper_tiny_en").
    whisper = keras_hub.models.WhisperBackbone(
        vocabulary_size=100, num_layers=1, num_heads=2, hidden_dim=16,
        intermediate_dim=32, num_mels=80,
    )
    encoder = keras_mirasol.models.PretrainedAudioEncoder(
        whisper, num_samples=32000, num_snippets=4
    )
    encoder(np.zeros((1, 32000))).shape  # (1, 4, 25, 16)
    ```
    """

    def __init__(
        self, backbone, num_samples, num_snippets, remat=False, **kwargs
    ):
        super().__init__(**kwargs)
        if isinstance(backbone, dict):
            backbone = deserialize_backbone(backbone)
        if not isinstance(backbone, keras_hub.models.WhisperBackbone):
            raise ValueError(
                "`audio_encoder` must be a keras_hub.models.WhisperBackbone,"
                f" got a {type(backbone).__name__}. Load one with "
                'keras_hub.models.WhisperBackbone.from_preset("whisper_tiny_en")'
                ", or build Mirasol's own audio encoder (no `audio_encoder`)."
            )
        if num_samples % num_snippets:
            raise ValueError(
                f"The clip's {num_samples} audio samples do not split into "
                f"{num_snippets} equal snippets. Change `num_frames`, "
                "`frame_rate` or `num_snippets`."
            )
        self.backbone = backbone
        # Whisper's decoder is not used: frozen, the optimizer keeps no
        # state for its weights and never changes them (AdamW's weight
        # decay would, gradient or not).
        for layer in unused_decoder_layers(backbone):
            layer.trainable = False
        self.num_samples = num_samples
        self.num_snippets = num_snippets
        self.samples_per_snippet = num_samples // num_snippets
        converter = keras_hub.layers.WhisperAudioConverter(
            num_mels=backbone.num_mels
        )
        self.fft_length = converter.num_fft_bins
        self.hop_length = converter.stride
        # `[fft_length // 2 + 1, num_mels]`, Whisper's filters.
        self.mel_filters = converter.mel_filters
        # One frame every hop, the last one dropped; stride 2 after that.
        frames = self.samples_per_snippet // self.hop_length
        self.tokens_per_snippet = (frames + 1) // 2
        max_tokens = backbone.max_encoder_sequence_length // 2
        if self.tokens_per_snippet > max_tokens:
            raise ValueError(
                f"A snippet of {self.samples_per_snippet} samples gives "
                f"{self.tokens_per_snippet} Whisper tokens, more than its "
                f"{max_tokens} positions (30 s). Use more snippets."
            )
        self.hidden_dim = backbone.hidden_dim
        self.remat = remat

    def build(self, audio_shape):
        self.built = True

    def log_mel(self, audio):
        """Whisper's log-mel features of each row of `audio`.

        Args:
            audio: float `[B, s]`.

        Returns:
            float `[B, s / hop_length, num_mels]`.
        """
        real, imag = ops.stft(
            ops.cast(audio, "float32"),
            sequence_length=self.fft_length,
            sequence_stride=self.hop_length,
            fft_length=self.fft_length,
            window="hann",
            center=True,
        )
        power = ops.square(real) + ops.square(imag)
        power = power[:, :-1, :]
        mel = ops.matmul(power, ops.convert_to_tensor(self.mel_filters))
        log_spec = ops.log(ops.maximum(mel, 1e-10)) / ops.log(10.0)
        floor = ops.max(log_spec, axis=(1, 2), keepdims=True) - 8.0
        return (ops.maximum(log_spec, floor) + 4.0) / 4.0

    def encode(self, audio, training=None):
        """Whisper's encoder on each row of `audio`.

        Args:
            audio: float `[B, s]`, one snippet's samples per row.
            training: bool or None. Defaults to `None`.

        Returns:
            float `[B, tokens_per_snippet, D]`.
        """
        whisper = self.backbone
        x = ops.cast(self.log_mel(audio), self.compute_dtype)
        x = keras.activations.gelu(
            whisper.encoder_conv_layer_1(x), approximate=False
        )
        x = whisper.encoder_padder(x)
        x = keras.activations.gelu(
            whisper.encoder_conv_layer_2(x), approximate=False
        )
        x = whisper.encoder_embeddings_add(
            (x, whisper.encoder_position_embedding(x))
        )
        x = whisper.encoder_embeddings_dropout(x, training=training)
        for layer in whisper.encoder_transformer_layers:
            x = layer(x, training=training)
        return whisper.encoder_layer_norm(x)

    def call(self, audio, training=None):
        num_snippets = audio.shape[1] // self.samples_per_snippet
        x = ops.reshape(audio, (-1, self.samples_per_snippet))
        x = encode_snippets(
            lambda s: self.encode(s, training=training),
            x,
            num_snippets,
            remat=self.remat,
        )
        return ops.reshape(
            x, (-1, num_snippets, self.tokens_per_snippet, self.hidden_dim)
        )

    def compute_output_shape(self, audio_shape):
        return (
            audio_shape[0],
            audio_shape[1] // self.samples_per_snippet,
            self.tokens_per_snippet,
            self.hidden_dim,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "backbone": keras.layers.serialize(self.backbone),
                "num_samples": self.num_samples,
                "num_snippets": self.num_snippets,
                "remat": self.remat,
            }
        )
        return config
