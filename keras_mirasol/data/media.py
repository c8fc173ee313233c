"""Read and write audio-video files with PyAV (its wheels carry FFmpeg).

`read_clip` decodes mp4/mkv/webm/avi into uint8 frames at a target frame
rate and a mono float32 waveform at a target sample rate, both covering
the same time from the start of the file; a file without an audio track
gets silence and `has_audio=False`. `write_clip` writes H.264 + AAC mp4
files (used by the synthetic dataset and the tests).
"""

import math

import av
import numpy as np


class MediaError(ValueError):
    """A media file that cannot be decoded; the message names the file."""


def _stream_seconds(stream):
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def read_clip(path, fps=None, image_size=None, sample_rate=16000):
    """Decode a media file into frames and a mono waveform.

    Args:
        path: str. An mp4, mkv, webm or avi file.
        fps: float or None. Frames per second to return: frame `k` is the
            last decoded frame shown at time `k / fps`. `None` keeps the
            file's frames.
        image_size: `(height, width)` or None. Resize frames (by FFmpeg).
        sample_rate: int. Rate of the returned waveform in Hz.

    Returns:
        dict with `video` uint8 `[F, H, W, 3]`, `audio` float32 `[S]`
        (silence if the file has no audio track), `has_audio` bool,
        `fps` float, `sample_rate` int and `seconds` float (the span both
        cover, from the video stream).

    Raises:
        MediaError: the file is missing, empty, corrupt, or has no video.
    """
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise MediaError(f"Cannot open media file {path}: {error}") from error
    with container:
        if not container.streams.video:
            raise MediaError(f"{path} has no video stream.")
        video_stream = container.streams.video[0]
        height, width = image_size or (None, None)
        frames, times = [], []
        try:
            for frame in container.decode(video_stream):
                frames.append(
                    frame.to_ndarray(format="rgb24", width=width, height=height)
                )
                times.append(float(frame.time or 0.0))
        except av.error.FFmpegError as error:
            if not frames:
                raise MediaError(
                    f"Cannot decode video of {path}: {error}"
                ) from error
        if not frames:
            raise MediaError(f"{path} has no decodable video frames.")
        native_fps = float(video_stream.average_rate or len(frames))
        seconds = _stream_seconds(video_stream) or (
            times[-1] + 1.0 / native_fps
        )
        if fps is None:
            fps = native_fps
            video = np.stack(frames)
        else:
            count = max(1, int(math.floor(seconds * fps + 1e-6)))
            wanted = np.arange(count) / fps
            index = np.searchsorted(np.asarray(times), wanted + 1e-6) - 1
            video = np.stack([frames[i] for i in np.clip(index, 0, None)])
    audio, has_audio = _read_audio(path, seconds, sample_rate)
    return {
        "video": video,
        "audio": audio,
        "has_audio": has_audio,
        "fps": float(fps),
        "sample_rate": sample_rate,
        "seconds": seconds,
    }


def _read_audio(path, seconds, sample_rate):
    num_samples = int(round(seconds * sample_rate))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return np.zeros((num_samples,), "float32"), False
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(
            format="flt", layout="mono", rate=sample_rate
        )
        audio = np.zeros((num_samples,), "float32")
        cursor = None
        try:
            for frame in container.decode(stream):
                for chunk in resampler.resample(frame):
                    cursor = _place(audio, chunk, sample_rate, cursor)
            for chunk in resampler.resample(None):
                cursor = _place(audio, chunk, sample_rate, cursor)
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what decoded, silence after it
    return audio, cursor is not None


def _place(audio, chunk, sample_rate, cursor):
    """Write `chunk` where its timestamp says; samples before 0 (encoder
    priming) and after the clip are dropped. Returns the next position."""
    samples = chunk.to_ndarray().reshape(-1)
    if chunk.time is not None:
        start = int(round(chunk.time * sample_rate))
    else:
        start = cursor or 0
    begin = max(start, 0)
    end = min(start + len(samples), len(audio))
    if end > begin:
        audio[begin:end] = samples[begin - start : end - start]
    return start + len(samples)


def write_clip(path, video, fps, audio=None, sample_rate=16000):
    """Write an H.264 (+ AAC) mp4 file.

    Args:
        path: str. Output file.
        video: uint8 `[F, H, W, 3]`; H and W even.
        fps: int. Frame rate.
        audio: float `[S]` mono waveform in `[-1, 1]`, or None for a file
            without an audio track.
        sample_rate: int. Rate of `audio`.
    """
    video = np.asarray(video, np.uint8)
    with av.open(str(path), "w") as container:
        video_stream = container.add_stream("libx264", rate=int(fps))
        video_stream.height, video_stream.width = video.shape[1:3]
        video_stream.pix_fmt = "yuv420p"
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream("aac", rate=sample_rate)
            audio_stream.layout = "mono"
        for image in video:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            container.mux(video_stream.encode(frame))
        container.mux(video_stream.encode(None))
        if audio_stream is not None:
            audio = np.asarray(audio, np.float32)
            size = audio_stream.codec_context.frame_size or 1024
            for start in range(0, len(audio), size):
                frame = av.AudioFrame.from_ndarray(
                    audio[None, start : start + size],
                    format="fltp",
                    layout="mono",
                )
                frame.sample_rate = sample_rate
                frame.pts = start
                container.mux(audio_stream.encode(frame))
            container.mux(audio_stream.encode(None))
