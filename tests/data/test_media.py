import fractions

import av
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


def write_h264(path, video, pts, time_base, audio=None, audio_rate=RATE):
    """H.264 (x264's defaults, so with B-frames) at the given timestamps,
    and optionally float PCM `audio` `[C, S]` (mono or stereo), in the
    container the extension names."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264", rate=int(1 / time_base), options={"threads": "1"}
        )
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt, stream.time_base = "yuv420p", time_base
        if audio is not None:
            layout = "mono" if len(audio) == 1 else "stereo"
            audio_stream = container.add_stream("pcm_f32le", rate=audio_rate)
            audio_stream.layout = layout
        for image, timestamp in zip(video, pts):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(timestamp), time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio is None:
            return
        for start in range(0, audio.shape[1], 1024):
            chunk = audio[:, start : start + 1024].T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk, np.float32),
                format="flt",
                layout=layout,
            )
            frame.sample_rate, frame.pts = audio_rate, start
            container.mux(audio_stream.encode(frame))
        container.mux(audio_stream.encode(None))


def decoded_frames(path, size):
    """Every frame of the file, RGB at `size`, and its time in seconds."""
    with av.open(str(path)) as container:
        frames = [
            (
                frame.to_ndarray(format="rgb24", height=size[0], width=size[1]),
                float(frame.time),
            )
            for frame in container.decode(video=0)
        ]
    return np.stack([f for f, _ in frames]), np.array([t for _, t in frames])


@pytest.mark.parametrize(
    "pts, time_base",
    [
        # Irregular gaps, the last ones long (a pause at the end).
        ([0, 3, 4, 11, 30, 31, 33, 60, 61, 95, 160, 230], 1 / 100),
        # 30 fps, read at 8 fps: most frames are not returned.
        (list(range(48)), 1 / 30),
    ],
    ids=["variable", "30fps"],
)
def test_frames_are_the_last_shown_at_each_output_time(
    tmp_path, pts, time_base
):
    path = tmp_path / "clip.mp4"
    time_base = fractions.Fraction(time_base).limit_denominator(1000)
    video = np.random.default_rng(0).integers(0, 256, (len(pts), 16, 16, 3))
    write_h264(path, video.astype(np.uint8), pts, time_base)
    clip = read_clip(path, fps=8, image_size=(16, 16))
    frames, times = decoded_frames(path, (16, 16))
    # Every decoded frame is inside the clip's span ...
    assert clip["seconds"] > times[-1]
    # ... and output frame k is the last one whose time is at most k / 8.
    count = int(np.floor(clip["seconds"] * 8 + 1e-6))
    wanted = np.arange(count) / 8
    shown = np.searchsorted(times, wanted + 1e-6, side="left") - 1
    expected = frames[np.clip(shown, 0, None)]
    assert clip["video"].shape == (count, 16, 16, 3)
    np.testing.assert_array_equal(clip["video"], expected)


def test_frames_after_a_short_stream_duration_are_kept(tmp_path):
    """With B-frames and a variable frame rate, the mp4 muxer writes a
    stream duration that ends before the last frames."""
    path = tmp_path / "vfr.mp4"
    pts = [0, 10, 25, 26, 80, 81, 200, 300]
    write_h264(path, ramp_video(len(pts), 16), pts, fractions.Fraction(1, 100))
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration * stream.time_base < 2.0
    clip = read_clip(path, fps=4)
    # 3 s at 4 fps: the frame at 2.0 s is shown from output frame 8 on.
    assert clip["seconds"] > 3.0 and len(clip["video"]) == 12
    levels = clip["video"].mean(axis=(1, 2, 3))
    np.testing.assert_allclose(levels[8:], 15 * 6, atol=6)


def test_nan_and_infinite_float_samples_become_finite(tmp_path):
    """NaN reads as 0, +-Inf as +-1; every other sample as written."""
    rng = np.random.default_rng(0)
    audio = rng.uniform(-0.5, 0.5, (1, RATE)).astype(np.float32)
    nan, posinf, neginf = np.split(rng.choice(RATE, 30, replace=False), 3)
    audio[0, nan], audio[0, posinf], audio[0, neginf] = np.nan, np.inf, -np.inf
    audio[0, 4000:4100] = np.nan
    path = tmp_path / "float.mkv"
    write_h264(
        path, ramp_video(8, 16), range(8), fractions.Fraction(1, 8), audio
    )
    clip = read_clip(path, sample_rate=RATE)
    assert clip["has_audio"] and np.isfinite(clip["audio"]).all()
    expected = np.nan_to_num(audio[0], nan=0.0, posinf=1.0, neginf=-1.0)
    np.testing.assert_array_equal(clip["audio"], expected)


def test_nan_does_not_spread_through_resampling(tmp_path):
    """Stereo at 48 kHz, mixed down and resampled: the NaN samples are
    zeros before resampling, so no neighbour goes beyond the signal's
    level (nor turns into NaN)."""
    t = np.arange(48000) / 48000
    audio = np.tile(0.3 * np.sin(2 * np.pi * 440 * t), (2, 1))
    audio[:, 20000:20600] = np.nan  # 6667 to 6867 at 16 kHz
    audio[0, [100, 7000, 30000]] = np.nan
    path = tmp_path / "float.mov"
    write_h264(
        path,
        ramp_video(8, 16),
        range(8),
        fractions.Fraction(1, 8),
        audio,
        48000,
    )
    clip = read_clip(path, sample_rate=RATE)
    assert np.isfinite(clip["audio"]).all()
    assert 0.3 < np.abs(clip["audio"]).max() < 0.6
    # The run of NaN is silence, away from its edges.
    np.testing.assert_allclose(clip["audio"][6700:6830], 0, atol=1e-3)
