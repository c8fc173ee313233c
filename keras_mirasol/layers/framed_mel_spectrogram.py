"""`keras.layers.MelSpectrogram` with the STFT as a gather and an rFFT."""

import keras
import numpy as np
import scipy.signal


@keras.saving.register_keras_serializable(package="keras_mirasol")
class FramedMelSpectrogram(keras.layers.MelSpectrogram):
    """`keras.layers.MelSpectrogram`, computing its STFT by framing.

    The same arguments, mel filters and outputs as the Keras layer (tested
    equal on every backend); only `_spectrogram` differs. Keras's JAX
    backend takes STFT frames with `jax.scipy.signal.stft`, which cuts
    the frames with a convolution against a `fft_length x fft_length`
    identity kernel: `2 * fft_length**2` multiply-adds per frame, which on
    a CPU made the log-mel front end cost more than the audio transformer
    behind it. Here the frames are one constant-index gather
    (`ops.take`), windowed and transformed with `ops.rfft`: the same
    centred (reflect-padded), periodic-Hann-windowed STFT.

    Args:
        fft_length: int. FFT size, and the frame length. Defaults to `2048`.
        sequence_stride: int. Samples between successive frames (the hop).
            Defaults to `512`.
        sequence_length: int or None. Length of the window applied to each
            frame, centred in it and zero-padded to `fft_length`. Defaults
            to `None`, which means `fft_length`.
        window: str or None. `"hann"` or `"hamming"` (periodic), or `None`
            for no window. Defaults to `"hann"`.
        sampling_rate: int. Sample rate of the input in Hz.
            Defaults to `16000`.
        num_mel_bins: int. Mel bands of the output. Defaults to `128`.
        min_freq: float. Lowest mel band edge in Hz. Defaults to `20.0`.
        max_freq: float or None. Highest mel band edge in Hz. Defaults to
            `None`, which means `sampling_rate / 2`.
        power_to_db: bool. Convert the mel power to decibels.
            Defaults to `True`.
        top_db: float. With `power_to_db`, clip values more than `top_db`
            below the maximum of the whole input. Defaults to `80.0`.
        mag_exp: float. Exponent of the STFT magnitude: 1 for magnitude, 2
            for power. Defaults to `2.0`.
        min_power: float. Floor of the power and of `ref_power` before the
            log. Defaults to `1e-10`.
        ref_power: float. Decibels are `10 * log10(S / ref_power)`.
            Defaults to `1.0`.

    Call arguments:
        inputs: float `[..., samples]`.

    Returns:
        float `[..., num_mel_bins, frames]`, `frames = 1 + samples //
        sequence_stride`.
    """

    def _frame_indices(self, num_samples):
        padded = num_samples + 2 * (self.fft_length // 2)
        frames = 1 + (padded - self.fft_length) // self.sequence_stride
        starts = self.sequence_stride * np.arange(frames)[:, None]
        return (starts + np.arange(self.fft_length)[None, :]).astype("int32")

    def _window(self):
        if self.window is None:
            window = np.ones(self.sequence_length)
        else:
            window = scipy.signal.get_window(self.window, self.sequence_length)
        left = (self.fft_length - self.sequence_length) // 2
        right = self.fft_length - self.sequence_length - left
        return np.pad(window, (left, right)).astype("float32")

    def _spectrogram(self, inputs):
        # `self.backend`, as in the Keras layer: TensorFlow inside tf.data.
        np_ops = self.backend.numpy
        num_samples = inputs.shape[-1]
        half = self.fft_length // 2
        pad = [(0, 0)] * (len(inputs.shape) - 1) + [(half, half)]
        x = np_ops.pad(inputs, pad, mode="reflect")
        frames = np_ops.take(x, self._frame_indices(num_samples), axis=-1)
        frames = frames * self.backend.convert_to_tensor(
            self._window(), frames.dtype
        )
        real, imag = self.backend.math.rfft(frames, fft_length=self.fft_length)
        power = np_ops.add(np_ops.square(real), np_ops.square(imag))
        if self.mag_exp == 2.0:
            return power
        return np_ops.power(np_ops.sqrt(power), self.mag_exp)
