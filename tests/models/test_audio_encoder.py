import numpy as np
import pytest

from keras_mirasol.models import AudioEncoder
from keras_mirasol.models.audio_encoder import LOG_MEL_STD
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import jit
from tests.conftest import to_numpy

SAMPLE_RATE = 8000


def make_encoder(**overrides):
    kwargs = dict(
        num_samples=8000,
        num_snippets=4,
        sample_rate=SAMPLE_RATE,
        num_mel_bins=16,
        fft_length=256,
        window_length=200,
        hop_length=100,
        patch_size=(8, 8),
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
        intermediate_dim=32,
        name="audio_encoder",
    )
    kwargs.update(overrides)
    return AudioEncoder(**kwargs)


def test_shape_and_config():
    encoder = make_encoder()
    out = encoder(np.random.normal(size=(2, 8000)).astype("float32"))
    # 2000 samples per snippet -> 21 frames -> padded to 24 -> 3 x 2 patches.
    assert tuple(out.shape) == (2, 4, 6, 16)
    assert encoder.tokens_per_snippet == 6
    assert_config_round_trip(encoder)


def test_audio_of_a_time_span_reaches_only_its_snippet():
    encoder = make_encoder()
    run = jit(encoder)
    audio = np.random.normal(size=(1, 8000)).astype("float32")
    # Seconds [0.25, 0.5) are samples [2000, 4000): snippet 1 exactly,
    # including its first and last samples (next to the boundaries).
    for start, stop in [(2000, 2010), (3990, 4000), (2000, 4000)]:
        changed = audio.copy()
        changed[:, start:stop] = np.random.normal(size=(1, stop - start))
        diff = np.abs(to_numpy(run(audio)) - to_numpy(run(changed)))
        per_snippet = diff.max(axis=(0, 2, 3))
        assert per_snippet[1] > CHANGED
        np.testing.assert_allclose(per_snippet[[0, 2, 3]], 0.0, atol=UNCHANGED)


def test_clips_in_a_batch_do_not_affect_each_other():
    # A spectrogram normalised by the batch maximum would fail this.
    encoder = make_encoder()
    run = jit(encoder)
    audio = np.random.normal(size=(2, 8000)).astype("float32")
    loud = audio.copy()
    loud[1] *= 1000.0
    np.testing.assert_allclose(
        to_numpy(run(audio))[0], to_numpy(run(loud))[0], atol=1e-5
    )


def test_log_mel_is_contiguous_in_time():
    encoder = make_encoder()
    tone = np.zeros((1, 8000), "float32")
    t = np.arange(2000) / SAMPLE_RATE
    tone[0, 6000:] = np.sin(2 * np.pi * 1000 * t)  # only the last 0.25 s
    mel = to_numpy(encoder.log_mel(tone)).reshape(4, -1, 16)
    energy = mel.max(axis=(1, 2))
    # Five natural-log units louder, on the standardised scale.
    assert energy[3] > energy[:3].max() + 5.0 / LOG_MEL_STD


@pytest.mark.parametrize(
    "shape, words",
    [
        ((2, 4000), ["too short", "8000", "audio_sample_rate"]),
        ((2, 9000), ["too long", "8000"]),
        ((2, 8000, 2), ["mono", "average the channels"]),
    ],
)
def test_bad_audio_shapes(shape, words):
    encoder = make_encoder()
    with pytest.raises(ValueError) as info:
        encoder(np.zeros(shape, "float32"))
    for word in words:
        assert word in str(info.value)
