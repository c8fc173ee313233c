import numpy as np
import pytest
import tensorflow as tf

from keras_mirasol.data import fit_clip
from keras_mirasol.data import resample_audio
from keras_mirasol.data import resize_frames


def numbered_clip(frames, samples):
    """Frame i is filled with i; sample j of the audio equals j."""
    video = np.broadcast_to(
        np.arange(frames, dtype="float32")[:, None, None, None],
        (frames, 2, 2, 3),
    )
    audio = np.arange(samples, dtype="float32")
    return video, audio


def test_centred_window_keeps_video_and_audio_aligned():
    # 10 frames and 1000 samples cover the same time; take 4 frames and
    # 400 samples from the middle: samples [300, 700) = frames 3..6.
    video, audio = numbered_clip(10, 1000)
    out_video, out_audio = fit_clip(video, audio, 4, 400, offset=0.5)
    assert out_audio.numpy()[0] == 300 and out_audio.numpy()[-1] == 699
    assert out_video.numpy()[:, 0, 0, 0].tolist() == [3, 4, 5, 6]


@pytest.mark.parametrize("offset", [0.0, 0.3, 1.0])
def test_every_window_is_aligned(offset):
    video, audio = numbered_clip(50, 5000)
    out_video, out_audio = fit_clip(video, audio, 5, 1000, offset=offset)
    first = out_audio.numpy()[0]
    frames = out_video.numpy()[:, 0, 0, 0]
    # Frame k shows the time at the centre of the k-th 200-sample step.
    expected = np.floor((first + 100 + 200 * np.arange(5)) / 100)
    np.testing.assert_array_equal(frames, expected)


def test_short_clip_is_padded_after_its_end():
    video, audio = numbered_clip(4, 400)
    out_video, out_audio = fit_clip(video, audio, 8, 800)
    np.testing.assert_array_equal(out_audio.numpy()[:400], audio)
    np.testing.assert_array_equal(out_audio.numpy()[400:], 0.0)
    assert out_video.numpy()[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 3, 3, 3, 3]


def test_batched_and_video_only():
    video, audio = numbered_clip(10, 1000)
    videos = np.stack([video, video + 100])
    audios = np.stack([audio, audio])
    out_video, out_audio = fit_clip(videos, audios, 4, 400)
    assert out_video.shape == (2, 4, 2, 2, 3) and out_audio.shape == (2, 400)
    only, none = fit_clip(video, None, 5, 400)
    assert none is None
    assert only.numpy()[:, 0, 0, 0].tolist() == [1, 3, 5, 7, 9]


@pytest.mark.parametrize("offset", [0.0, 0.7])
def test_fitting_a_fitted_clip_changes_nothing(offset):
    # Static shapes equal to the window take the shortcut; unknown shapes
    # (a tf.function traced for any length) take the sampling rule. Both
    # must return the clip as it is, whatever the offset.
    video, audio = numbered_clip(50, 5000)
    video, audio = fit_clip(video, audio, 5, 1000, offset=offset)
    static = fit_clip(video, audio, 5, 1000, offset=offset)
    traced = tf.function(
        lambda v, a: fit_clip(v, a, 5, 1000, offset=offset),
        input_signature=[
            tf.TensorSpec([None, None, None, 3]),
            tf.TensorSpec([None]),
        ],
    )(video, audio)
    for out in (static, traced):
        np.testing.assert_array_equal(out[0], video)
        np.testing.assert_array_equal(out[1], audio)


def test_resize_scales_uint8_to_unit_range():
    video = np.full((3, 8, 6, 3), 255, "uint8")
    out = resize_frames(video, (4, 4)).numpy()
    assert out.shape == (3, 4, 4, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_resample_keeps_frequency():
    rate, target = 8000, 16000
    t = np.arange(rate) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype("float32")
    out = resample_audio(tone, rate, target).numpy()
    assert out.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(out))
    peak_hz = np.argmax(spectrum) * target / len(out)
    assert abs(peak_hz - 440) < 2
