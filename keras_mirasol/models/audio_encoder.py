"""Per-snippet audio encoder: log-mel front end, patches, transformer."""

import math

import keras
from keras import ops

from keras_mirasol.layers.framed_mel_spectrogram import FramedMelSpectrogram
from keras_mirasol.models.config_checks import check_divisible
from keras_mirasol.models.input_checks import validate_audio_shape
from keras_mirasol.models.snippet_encoder import SnippetEncoder

# Floor added before the log, so silence maps to log(1e-6), not -inf.
LOG_MEL_FLOOR = 1e-6
# Fixed standardisation of the log-mel values (AST's constants, Gong et
# al. 2021): log power spans about -14 (silence) to +8, which would
# otherwise reach the patch embedding at ten times the video's scale.
LOG_MEL_MEAN = -4.27
LOG_MEL_STD = 2 * 4.57


@keras.saving.register_keras_serializable(package="keras_mirasol")
class AudioEncoder(SnippetEncoder):
    """Encode each audio snippet on its own into a set of tokens.

    The waveform is cut into `num_snippets` contiguous chunks BEFORE the
    spectrogram, so snippet `t` holds exactly the samples
    `[t * S / T, (t + 1) * S / T)`, the time span of video snippet `t`, and
    no STFT window reaches across a snippet boundary. Each chunk becomes a
    log-mel spectrogram (`keras.layers.MelSpectrogram`'s, with the STFT
    framed by a gather: `FramedMelSpectrogram`), is cut into
    `patch_size` patches and runs through an AST-style transformer
    (`SnippetEncoder`).

    Args:
        num_samples: int. Waveform samples `S` per clip.
        num_snippets: int. Snippets `T` per clip; `S % T == 0`.
        sample_rate: int. Sample rate of the waveform in Hz.
        num_mel_bins: int. Mel bands of the spectrogram.
        fft_length: int. FFT size.
        window_length: int. STFT window in samples.
        hop_length: int. STFT hop in samples.
        patch_size: tuple `(time, freq)`. Spectrogram patch size.
        hidden_dim: int. Token width `D_a`.
        num_layers: int. Transformer blocks `L_a`.
        num_heads: int. Attention heads.
        intermediate_dim: int. MLP width.
        dropout: float. Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.

    Call arguments:
        audio: float `[B, S]` mono waveform. After the layer is built,
            any whole number of snippets `[B, k * S / T]` (a stream
            passes one snippet at a time).

    Returns:
        float `[B, T, n_a, D_a]` with
        `n_a = ceil(F / patch_time) * (num_mel_bins / patch_freq)` and
        `F = 1 + (S / T) // hop_length` spectrogram frames per snippet.

    Example:
    ```python
    encoder = keras_mirasol.models.AudioEncoder(
        num_samples=16000, num_snippets=2, sample_rate=16000,
        num_mel_bins=32, fft_length=512, window_length=400,
        hop_length=160, patch_size=(8, 8), hidden_dim=64, num_layers=1,
        num_heads=4, intermediate_dim=128,
    )
    encoder(np.zeros((1, 16000)))  # [1, 2, 28, 64]
    ```
    """

    def __init__(
        self,
        num_samples,
        num_snippets,
        sample_rate,
        num_mel_bins,
        fft_length,
        window_length,
        hop_length,
        patch_size,
        hidden_dim,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        super().__init__(
            num_snippets=num_snippets,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            **kwargs,
        )
        self.num_samples = num_samples
        self.sample_rate = sample_rate
        self.num_mel_bins = num_mel_bins
        self.fft_length = fft_length
        self.window_length = window_length
        self.hop_length = hop_length
        self.patch_size = tuple(patch_size)

        check_divisible(
            "audio samples per clip",
            num_samples,
            "num_snippets",
            num_snippets,
            self.name,
        )
        check_divisible(
            "audio_num_mel_bins",
            num_mel_bins,
            "audio_patch_size[1]",
            self.patch_size[1],
            self.name,
        )
        self.samples_per_snippet = num_samples // num_snippets
        # STFT with centre padding: one frame per hop, plus one.
        self.frames_per_snippet = 1 + self.samples_per_snippet // hop_length
        patch_time, patch_freq = self.patch_size
        self.padded_frames = patch_time * math.ceil(
            self.frames_per_snippet / patch_time
        )
        self.make_token_layers(
            (self.padded_frames // patch_time) * (num_mel_bins // patch_freq)
        )

        # power_to_db=False: the layer's dB scale clips against the maximum
        # of the whole batch, which would let one snippet (or one clip)
        # change another's features. The log below is per element.
        self.mel_spectrogram = FramedMelSpectrogram(
            fft_length=fft_length,
            sequence_stride=hop_length,
            sequence_length=window_length,
            sampling_rate=sample_rate,
            num_mel_bins=num_mel_bins,
            power_to_db=False,
            dtype=self.dtype_policy,
            name="mel_spectrogram",
        )
        self.patch_embedding = keras.layers.Conv2D(
            hidden_dim,
            kernel_size=self.patch_size,
            strides=self.patch_size,
            padding="valid",
            dtype=self.dtype_policy,
            name="patch_embedding",
        )

    def build(self, audio_shape):
        validate_audio_shape(audio_shape, self.num_samples, self.sample_rate)
        self.mel_spectrogram.build((None, self.samples_per_snippet))
        self.patch_embedding.build(
            (None, self.padded_frames, self.num_mel_bins, 1)
        )
        self.build_token_layers()
        self.built = True

    def log_mel(self, audio):
        """Log-mel spectrogram of every snippet.

        Args:
            audio: float `[B, S]`.

        Returns:
            float `[B * T, F_padded, num_mel_bins]`, snippet-major,
            `(log(mel) - LOG_MEL_MEAN) / LOG_MEL_STD`.
        """
        chunks = ops.reshape(audio, (-1, self.samples_per_snippet))
        mel = self.mel_spectrogram(chunks)  # [B * T, mels, F]
        mel = ops.transpose(mel, (0, 2, 1))
        mel = ops.log(ops.maximum(ops.cast(mel, "float32"), LOG_MEL_FLOOR))
        pad = self.padded_frames - self.frames_per_snippet
        if pad:
            mel = ops.pad(
                mel,
                ((0, 0), (0, pad), (0, 0)),
                constant_values=math.log(LOG_MEL_FLOOR),
            )
        mel = (mel - LOG_MEL_MEAN) / LOG_MEL_STD
        return ops.cast(mel, self.compute_dtype)

    def call(self, audio, training=None):
        x = self.log_mel(audio)
        x = self.patch_embedding(ops.expand_dims(x, -1))
        x = ops.reshape(x, (-1, self.tokens_per_snippet, self.hidden_dim))
        return self.encode_snippets(
            x, audio.shape[1] // self.samples_per_snippet, training=training
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_samples": self.num_samples,
                "sample_rate": self.sample_rate,
                "num_mel_bins": self.num_mel_bins,
                "fft_length": self.fft_length,
                "window_length": self.window_length,
                "hop_length": self.hop_length,
                "patch_size": self.patch_size,
            }
        )
        return config
