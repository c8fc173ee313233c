import keras
import numpy as np
import pytest

from keras_mirasol.layers.framed_mel_spectrogram import FramedMelSpectrogram
from tests.conftest import assert_config_round_trip


@pytest.mark.parametrize(
    "fft, hop, window_length, samples",
    [(512, 160, 400, 8000), (512, 31, 400, 8000), (256, 64, 256, 4001)],
)
def test_equals_keras_mel_spectrogram(fft, hop, window_length, samples):
    kwargs = dict(
        fft_length=fft,
        sequence_stride=hop,
        sequence_length=window_length,
        sampling_rate=16000,
        num_mel_bins=32,
        power_to_db=False,
    )
    audio = np.random.default_rng(0).normal(size=(3, samples))
    audio = audio.astype("float32")
    ours = keras.ops.convert_to_numpy(FramedMelSpectrogram(**kwargs)(audio))
    keras_layer = keras.layers.MelSpectrogram(**kwargs)
    expected = keras.ops.convert_to_numpy(keras_layer(audio))
    assert ours.shape == expected.shape == (3, 32, 1 + samples // hop)
    np.testing.assert_allclose(ours, expected, rtol=2e-4, atol=1e-3)


def test_db_scale_and_magnitude_options_follow_keras():
    kwargs = dict(
        fft_length=256, sequence_stride=64, num_mel_bins=16, mag_exp=1.0
    )
    audio = np.random.default_rng(1).normal(size=(2, 2000))
    audio = audio.astype("float32")
    ours = keras.ops.convert_to_numpy(FramedMelSpectrogram(**kwargs)(audio))
    expected = keras.ops.convert_to_numpy(
        keras.layers.MelSpectrogram(**kwargs)(audio)
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-3, atol=1e-3)


def test_config_round_trip():
    assert_config_round_trip(
        FramedMelSpectrogram(fft_length=256, sequence_stride=64)
    )
