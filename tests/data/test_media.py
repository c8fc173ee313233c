import numpy as np
import pytest

from keras_mirasol.data import MediaError
from keras_mirasol.data import read_clip
from keras_mirasol.data import write_clip
from keras_mirasol.data.media import rgb_to_yuv420p
from tests.conftest import assert_decodes_losslessly

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend

RATE = 16000


def ramp_video(frames=16, size=32):
    """Frame i is uniformly grey at level 15 * i."""
    video = np.zeros((frames, size, size, 3), np.uint8)
    for i in range(frames):
        video[i] = 15 * i
    return video


def beep_audio(seconds=2.0, start=1.0, length=0.05):
    audio = np.zeros(int(seconds * RATE), np.float32)
    begin, count = int(start * RATE), int(length * RATE)
    t = np.arange(count) / RATE
    audio[begin : begin + count] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    return audio


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    write_clip(path, ramp_video(), fps=8, audio=beep_audio(), sample_rate=RATE)
    return path


def test_round_trip_keeps_frames_and_audio_in_time(clip_path):
    clip = read_clip(clip_path, sample_rate=RATE)
    assert clip["video"].shape == (16, 32, 32, 3)
    assert clip["seconds"] == pytest.approx(2.0)
    levels = clip["video"].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels, 15 * np.arange(16), atol=6)
    assert clip["has_audio"] and clip["audio"].shape == (2 * RATE,)
    # The beep written at 1.00-1.05 s decodes at the same time (AAC
    # priming removed by timestamps), to within a millisecond.
    loud = np.flatnonzero(np.abs(clip["audio"]) > 0.1)
    assert abs(loud[0] - RATE) <= 16 and abs(loud[-1] - 1.05 * RATE) <= 16


def test_target_fps_size_and_sample_rate(clip_path):
    clip = read_clip(clip_path, fps=4, image_size=(16, 24), sample_rate=8000)
    assert clip["video"].shape == (8, 16, 24, 3)
    levels = clip["video"].mean(axis=(1, 2, 3))
    # At 4 fps, frame k is the file's frame 2k (shown at k / 4 s).
    np.testing.assert_allclose(levels, 30 * np.arange(8), atol=6)
    assert clip["audio"].shape == (16000,) and clip["fps"] == 4.0
    loud = np.flatnonzero(np.abs(clip["audio"]) > 0.1)
    assert abs(loud[0] - 8000) <= 8


def test_a_clip_without_audio_gets_silence_and_a_flag(tmp_path):
    path = tmp_path / "silent.mp4"
    write_clip(path, ramp_video(), fps=8)
    clip = read_clip(path, sample_rate=RATE)
    assert not clip["has_audio"]
    np.testing.assert_array_equal(clip["audio"], np.zeros(2 * RATE))
    assert clip["video"].shape[0] == 16


@pytest.mark.parametrize(
    "content, name",
    [
        (b"", "empty.mp4"),
        (b"\x00\x01not a video" * 400, "garbage.mp4"),
        (None, "truncated.mp4"),
    ],
)
def test_damaged_files_raise_media_error_naming_the_file(
    tmp_path, clip_path, content, name
):
    path = tmp_path / name
    if content is None:
        data = clip_path.read_bytes()
        content = data[: len(data) // 2]
    path.write_bytes(content)
    with pytest.raises(MediaError, match=name):
        read_clip(path)


def test_missing_file(tmp_path):
    with pytest.raises(MediaError, match="missing.mp4"):
        read_clip(tmp_path / "missing.mp4")


def colour_video(frames=6, size=32, seed=0):
    """Random blocks of colour: edges in every 2x2 chroma block."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (frames, size // 4, size // 4, 3))
    return np.repeat(np.repeat(small, 4, 1), 4, 2).astype(np.uint8)


def test_lossless_clip_decodes_to_exactly_what_was_written(tmp_path):
    video = colour_video()
    audio = np.random.default_rng(1).uniform(-0.9, 0.9, RATE * 6 // 8)
    audio = audio.astype(np.float32)
    path = tmp_path / "lossless.mp4"
    write_clip(path, video, fps=8, audio=audio, lossless=True)
    clip = read_clip(path, sample_rate=RATE)
    assert_decodes_losslessly(clip, video, audio)


def test_lossy_clip_differs_from_the_written_planes(tmp_path):
    """The default (H.264 at x264's defaults, AAC) is lossy: the property
    above is what `lossless=True` adds."""
    video = colour_video()
    path = tmp_path / "lossy.mp4"
    write_clip(path, video, fps=8)
    clip = read_clip(path)
    expected = rgb_to_yuv420p(video)
    decoded = rgb_to_yuv420p(clip["video"])
    assert np.abs(decoded.astype(int) - expected).max() > 8


def test_rgb_to_yuv420p_matches_the_bt601_reference():
    video = colour_video(frames=2, size=8)
    planes = rgb_to_yuv420p(video)
    assert planes.shape == (2, 12, 8) and planes.dtype == np.uint8
    rgb = video.astype(float)
    luma = (
        16
        + (65.738 * rgb[..., 0] + 129.057 * rgb[..., 1] + 25.064 * rgb[..., 2])
        / 256
    )
    np.testing.assert_allclose(planes[:, :8], luma, atol=1)
    # Pure colours land where BT.601 puts them.
    for rgb_value, yuv in [
        ((0, 0, 0), (16, 128, 128)),
        ((255, 255, 255), (235, 128, 128)),
        ((255, 0, 0), (82, 90, 240)),
    ]:
        frame = np.broadcast_to(np.uint8(rgb_value), (1, 2, 2, 3))
        y, u, v = rgb_to_yuv420p(frame)[0].reshape(-1)[[0, 4, 5]]
        assert abs(int(y) - yuv[0]) <= 1
        assert abs(int(u) - yuv[1]) <= 1 and abs(int(v) - yuv[2]) <= 1


def test_odd_frame_sizes_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="even height and width.*31x32"):
        rgb_to_yuv420p(np.zeros((1, 31, 32, 3), np.uint8))
