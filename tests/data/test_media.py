import numpy as np
import pytest

from keras_mirasol.data import MediaError
from keras_mirasol.data import read_clip
from keras_mirasol.data import write_clip

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
