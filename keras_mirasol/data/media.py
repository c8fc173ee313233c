"""Read and write audio-video files with PyAV (its wheels carry FFmpeg).

`read_clip` decodes mp4/mkv/webm/avi into uint8 frames at a target frame
rate and a mono float32 waveform at a target sample rate, both covering
the same time from the start of the file; a file without an audio track
gets silence and `has_audio=False`. `write_clip` writes H.264 + AAC mp4
files, or lossless H.264 + ALAC ones (used by the synthetic dataset and
the tests). `read_clips` cuts several time ranges (`[start, end)` seconds)
from one long file in a single decoding pass.
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


def _open_video(path):
    """`(container, its first video stream)`; `MediaError` if there is none.

    The caller closes the container (`with container:`).
    """
    try:
        # A damaged text tag must not cost the clip: PyAV decodes tags as
        # strict UTF-8 by default and raises UnicodeDecodeError.
        container = av.open(str(path), metadata_errors="replace")
    except (av.error.FFmpegError, OSError) as error:
        raise MediaError(f"Cannot open media file {path}: {error}") from error
    if not container.streams.video:
        container.close()
        raise MediaError(f"{path} has no video stream.")
    return container, container.streams.video[0]


def read_clip(path, fps=None, image_size=None, sample_rate=16000):
    """Decode a media file into frames and a mono waveform.

    Args:
        path: str. An mp4, mkv, webm or avi file.
        fps: float or None. Frames per second to return: frame `k` is the
            last decoded frame shown at time `k / fps`. Defaults to
            `None`, which keeps the file's frames.
        image_size: `(height, width)` or None. Resize frames (by FFmpeg).
            Defaults to `None`, which keeps the file's frame size.
        sample_rate: int. Rate of the returned waveform in Hz.
            Defaults to `16000`.

    Returns:
        dict with `video` uint8 `[F, H, W, 3]`, `audio` float32 `[S]`
        (silence if the file has no audio track; NaN samples of float
        PCM as 0, infinite ones as +-1), `has_audio` bool, `fps` float,
        `sample_rate` int and `seconds` float (the span both cover: the
        video stream's duration, or its last frame's time plus one
        frame at the native rate if the duration is missing or ends
        before that frame).

    Raises:
        MediaError: the file is missing, empty, corrupt, or has no video.
    """
    container, video_stream = _open_video(path)
    with container:
        height, width = image_size or (None, None)
        picker = _FramePicker(fps, height, width)
        try:
            for frame in container.decode(video_stream):
                picker.add(frame)
        except av.error.FFmpegError as error:
            if not picker.decoded:
                raise MediaError(
                    f"Cannot decode video of {path}: {error}"
                ) from error
        if not picker.decoded:
            raise MediaError(f"{path} has no decodable video frames.")
        native_fps = float(video_stream.average_rate or picker.decoded)
        seconds = _stream_seconds(video_stream)
        if seconds is None or seconds <= picker.last_time:
            # No duration, or one that ends before the last frame: a
            # muxer may write one from decoding times that B-frames
            # shifted (variable frame rate). The frames' own times hold.
            seconds = picker.last_time + 1.0 / native_fps
        if fps is None:
            fps = native_fps
        video = picker.finish(seconds)
    audio, has_audio = _read_audio(path, seconds, sample_rate)
    return {
        "video": video,
        "audio": audio,
        "has_audio": has_audio,
        "fps": float(fps),
        "sample_rate": sample_rate,
        "seconds": seconds,
    }


def _check_range(index, time_range):
    """`(start, end)` as floats; `end` may be None (the video's end)."""
    try:
        start, end = time_range
        start = float(start)
        end = None if end is None else float(end)
    except (TypeError, ValueError):
        raise ValueError(
            f"ranges[{index}] = {time_range!r}: give (start, end) in "
            "seconds, end None for the rest of the video."
        ) from None
    if not math.isfinite(start) or start < 0:
        raise ValueError(
            f"ranges[{index}] starts at {start}: give a time >= 0 seconds."
        )
    if end is not None and not end > start:
        raise ValueError(
            f"ranges[{index}] = ({start:g}, {end:g}): the end must come "
            "after the start."
        )
    return start, end


def read_clips(path, ranges, fps=None, image_size=None, sample_rate=16000):
    """Decode several time ranges of one media file in one pass.

    Each range's clip is what `read_clip` would return for a file that
    held only `[start, end)` of this one: frame `k` is the last decoded
    frame shown at most `start + k / fps` seconds, and the audio's sample
    `i` is the file's sample at `start + i / sample_rate` seconds. The
    video is decoded once, from the key frame before the earliest start
    to the latest end, however many ranges there are (the annotations of
    one long video), and only the frames the ranges show are kept.

    Args:
        path: str. An mp4, mkv, webm or avi file.
        ranges: list of `(start, end)` in seconds, `end > start >= 0`;
            `end` None means the end of the video. A range that runs past
            the video's end stops there.
        fps: float or None. Frames per second to return. Defaults to
            `None`, which keeps the file's frames inside each range.
        image_size: `(height, width)` or None. Resize frames (by FFmpeg).
            Defaults to `None`, which keeps the file's frame size.
        sample_rate: int. Rate of the returned waveforms in Hz.
            Defaults to `16000`.

    Returns:
        list, one entry per range: a dict as `read_clip` returns (with
        `seconds` the range's length inside the video, and `start`), or a
        `MediaError` (not raised) for a range that starts at or after the
        video's end, which costs only that range.

    Raises:
        MediaError: the file is missing, empty, corrupt, or has no video.
        ValueError: a range that is not `(start, end)` with
            `end > start >= 0`.
    """
    ranges = [_check_range(i, r) for i, r in enumerate(ranges)]
    if not ranges:
        return []
    first = min(start for start, _ in ranges)
    ends = [math.inf if end is None else end for _, end in ranges]
    container, stream = _open_video(path)
    with container:
        height, width = image_size or (None, None)
        pickers = [_FramePicker(fps, height, width) for _ in ranges]
        decoded, last_time, stopped = 0, 0.0, False
        try:
            for frame in _frames_from(container, stream, first):
                time = float(frame.time or 0.0)
                decoded, last_time = decoded + 1, time
                for picker, (start, _), end in zip(pickers, ranges, ends):
                    if time >= end or (fps is None and time < start):
                        continue
                    picker.add(frame, time - start)
                if time >= max(ends):
                    stopped = True  # every range ends before this frame
                    break
        except av.error.FFmpegError as error:
            if not decoded:
                raise MediaError(
                    f"Cannot decode video of {path}: {error}"
                ) from error
        if not decoded:
            raise MediaError(f"{path} has no decodable video frames.")
        native_fps = float(stream.average_rate or decoded)
        duration = _stream_seconds(stream)
        if stopped:
            duration = math.inf  # the video goes on past every range
        elif duration is None or duration <= last_time:
            # As in `read_clip`: the frames' own times hold.
            duration = last_time + 1.0 / native_fps
        clips = []
        for picker, (start, _), end in zip(pickers, ranges, ends):
            seconds = min(end, duration) - start
            if seconds <= 0 or picker.empty:
                clips.append(
                    MediaError(
                        f"{path}: the range from {start:g} s starts at or "
                        f"after the video's end ({duration:g} s)."
                    )
                )
                continue
            video = picker.finish(seconds)
            clips.append(
                {
                    "video": video,
                    "fps": float(fps or native_fps),
                    "sample_rate": sample_rate,
                    "seconds": seconds,
                    "start": start,
                }
            )
    spans = [
        (clip["start"], clip["seconds"])
        for clip in clips
        if not isinstance(clip, MediaError)
    ]
    audios, has_audio = _read_audio_spans(path, spans, sample_rate)
    audios.reverse()
    for clip in clips:
        if not isinstance(clip, MediaError):
            clip["audio"], clip["has_audio"] = audios.pop(), has_audio
    return clips


def _frames_from(container, stream, start):
    """Decoded frames from the key frame at or before `start` seconds.

    Decodes from the file's start when `start` is 0, or when the seek
    lands after `start` (a container whose index cannot be trusted).
    """
    if start > 0 and stream.time_base is not None:
        try:
            container.seek(
                int(start / stream.time_base), stream=stream, backward=True
            )
        except av.error.FFmpegError:
            container.seek(0, stream=stream, backward=True)
        frames = container.decode(stream)
        first = next(frames, None)
        if first is None or float(first.time or 0.0) <= start:
            if first is not None:
                yield first
            yield from frames
            return
        container.seek(0, stream=stream, backward=True)
    yield from container.decode(stream)


def _read_audio_spans(path, spans, sample_rate):
    """Mono float32 waveforms of `(start, seconds)` spans, in one pass.

    Returns:
        `(list of [round(seconds * sample_rate)] arrays, has_audio)`.
    """
    audios = [
        np.zeros((int(round(seconds * sample_rate)),), "float32")
        for _, seconds in spans
    ]
    offsets = [int(round(start * sample_rate)) for start, _ in spans]
    last = max(
        (offset + len(audio) for offset, audio in zip(offsets, audios)),
        default=0,
    )
    cursor = None
    with av.open(str(path), metadata_errors="replace") as container:
        if not container.streams.audio:
            return audios, False
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(
            format="flt", layout="mono", rate=sample_rate
        )

        def place(chunk):
            samples = chunk.to_ndarray().reshape(-1)
            start = _chunk_start(chunk, sample_rate, cursor)
            for offset, audio in zip(offsets, audios):
                _put(audio, samples, start - offset)
            return start + len(samples)

        try:
            for frame in container.decode(stream):
                for chunk in resampler.resample(_finite(frame)):
                    cursor = place(chunk)
                if cursor is not None and cursor >= last:
                    break
            for chunk in resampler.resample(None):
                cursor = place(chunk)
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what decoded, silence after it
    return [finite_audio(audio) for audio in audios], cursor is not None


# Kept frames are stored in blocks of at least this many bytes: more than
# glibc's largest mmap threshold (32 MiB), so that each block is a mapping
# of its own, resident only as it fills and given back when it is freed.
_BLOCK_BYTES = 64 * 2**20


class _FramePicker:
    """The frames `read_clip` returns, chosen while the file decodes.

    Frame `k` of the output is the last decoded frame whose timestamp is
    at most `k / fps`; the first frame stands in before the first
    timestamp. Only the frames shown are kept (as RGB, each once, with
    how many output frames show it), so memory follows the output, not
    the file's length, nor a damaged timestamp far in the future.

    The kept frames go into a few large blocks rather than an array each
    (which also held PyAV's converted frame, half as much again), and
    `finish` frees each block once it is copied out: the kept frames
    are not held next to the whole output, nor while the audio decodes.

    Args:
        fps: float or None. Output frame rate; None keeps every frame.
        height: int or None. Frame height after resizing.
        width: int or None. Frame width after resizing.
    """

    def __init__(self, fps, height, width):
        self.fps = fps
        self.height, self.width = height, width
        self.blocks = []  # uint8 [B, H, W, 3]: the kept frames, in order
        self.repeats = []  # output frames showing each kept frame
        self.slots = 0  # output frames decided so far
        self.decoded = 0
        self._last = None  # the latest frame: [av.VideoFrame, RGB or None]
        self.last_time = 0.0  # its timestamp in seconds

    @property
    def empty(self):
        """No frame taken yet."""
        return not self.repeats and self._last is None

    def _rgb(self, entry):
        if entry[1] is None:
            entry[1] = entry[0].to_ndarray(
                format="rgb24", width=self.width, height=self.height
            )
        return entry[1]

    def _keep(self, rgb, repeat):
        """Store `rgb` as the next kept frame, shown `repeat` times."""
        kept = len(self.repeats)
        size = len(self.blocks[0]) if self.blocks else 0
        if kept == len(self.blocks) * size:
            size = size or max(1, _BLOCK_BYTES // max(1, rgb.nbytes))
            self.blocks.append(np.empty((size, *rgb.shape), np.uint8))
        self.blocks[-1][kept % size] = rgb
        self.repeats.append(repeat)

    def _slots_until(self, time):
        """How many output frames `k` have `k / fps + 1e-6 <= time`."""
        count = max(0, math.floor((time - 1e-6) * self.fps) + 1)
        # The estimate can be one off where `time` meets a frame's.
        while count > 0 and (count - 1) / self.fps + 1e-6 > time:
            count -= 1
        while count / self.fps + 1e-6 <= time:
            count += 1
        return count

    def add(self, frame, time=None):
        """Take the next decoded frame (in presentation order).

        `time` is its time in seconds from the output's start; defaults to
        the frame's own timestamp.
        """
        entry = [frame, None]
        if time is None:
            time = float(frame.time or 0.0)
        self.decoded += 1
        if self.fps is None:
            self._keep(self._rgb(entry), 1)
        else:
            # Output frames before this one's time show the one before.
            new = self._slots_until(time) - self.slots
            if new > 0:
                self._keep(self._rgb(self._last or entry), new)
                self.slots += new
        self._last, self.last_time = entry, time

    def finish(self, seconds):
        """uint8 `[F, H, W, 3]`: the frames that cover `seconds`.

        The picker is spent: its blocks are freed as they are copied.
        """
        blocks, self.blocks = self.blocks, []
        repeats, self.repeats = self.repeats, []
        if self.fps is None:
            count, last = len(repeats), None
        else:
            count = max(1, int(math.floor(seconds * self.fps + 1e-6)))
            last = self._rgb(self._last)
        self._last = None
        shape = blocks[0].shape[1:] if blocks else last.shape
        video = np.empty((count, *shape), np.uint8)
        start = kept = 0
        blocks.reverse()
        while blocks:
            block = blocks.pop()
            for row in range(min(len(block), len(repeats) - kept)):
                repeat = repeats[kept]
                video[start : start + repeat] = block[row]
                start += repeat
                kept += 1
            del block  # no view of it is left: its mapping goes now
        if last is not None:
            video[start:] = last
        return video


def _read_audio(path, seconds, sample_rate):
    num_samples = int(round(seconds * sample_rate))
    with av.open(str(path), metadata_errors="replace") as container:
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
                for chunk in resampler.resample(_finite(frame)):
                    cursor = _place(audio, chunk, sample_rate, cursor)
            for chunk in resampler.resample(None):
                cursor = _place(audio, chunk, sample_rate, cursor)
        except av.error.FFmpegError:
            pass  # a damaged tail: keep what decoded, silence after it
    return finite_audio(audio), cursor is not None


FLOAT_FORMATS = ("flt", "fltp", "dbl", "dblp")


def finite_audio(audio):
    """`audio` with NaN as 0 and infinities as +-1 (a copy if any).

    Float PCM files can hold NaN or infinite samples, which would spread
    through resampling and turn into arbitrary integers as int16 PCM.

    Args:
        audio: float array, any shape.

    Returns:
        The same array if every sample is finite, else a finite copy.
    """
    # A float64 sum is finite exactly when every sample is (and needs no
    # array of flags as long as the clip).
    with np.errstate(invalid="ignore", over="ignore"):
        if np.isfinite(np.sum(audio, dtype=np.float64)):
            return audio
    return np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)


def _finite(frame):
    """An audio frame with its NaN and infinite samples replaced (before
    resampling, so that they do not smear into their neighbours)."""
    if frame.format.name not in FLOAT_FORMATS:
        return frame
    samples = frame.to_ndarray()
    if np.isfinite(samples).all():
        return frame
    clean = av.AudioFrame.from_ndarray(
        finite_audio(samples), format=frame.format.name, layout=frame.layout
    )
    clean.sample_rate = frame.sample_rate
    clean.pts, clean.time_base = frame.pts, frame.time_base
    return clean


def _chunk_start(chunk, sample_rate, cursor):
    """The sample (from the file's start) where `chunk` begins: its
    timestamp, else where the previous chunk ended."""
    if chunk.time is not None:
        return int(round(chunk.time * sample_rate))
    return cursor or 0


def _put(audio, samples, start):
    """Write `samples` at `start`; what falls outside `audio` is dropped."""
    begin = max(start, 0)
    end = min(start + len(samples), len(audio))
    if end > begin:
        audio[begin:end] = samples[begin - start : end - start]


def _place(audio, chunk, sample_rate, cursor):
    """Write `chunk` where its timestamp says; samples before 0 (encoder
    priming) and after the clip are dropped. Returns the next position."""
    samples = chunk.to_ndarray().reshape(-1)
    start = _chunk_start(chunk, sample_rate, cursor)
    _put(audio, samples, start)
    return start + len(samples)


def rgb_to_yuv420p(video):
    """RGB frames to the planes of 4:2:0 YUV, in integer arithmetic.

    BT.601 limited range (FFmpeg's default for untagged video), with each
    2x2 block's RGB averaged before its chroma is computed. Integer NumPy
    only, so the same frames give the same planes on any machine; FFmpeg's
    own conversion has SIMD variants that are not guaranteed bit-exact.

    Args:
        video: uint8 `[F, H, W, 3]`; H and W even.

    Returns:
        uint8 `[F, 3 * H // 2, W]`: the Y plane `[H, W]` above the U and V
        planes `[H / 2, W / 2]` each, laid out as PyAV's `yuv420p`
        `VideoFrame.from_ndarray` takes them.
    """
    rgb = np.asarray(video, np.int32)
    frames, height, width = rgb.shape[:3]
    if height % 2 or width % 2:
        raise ValueError(
            f"Frames must have an even height and width for 4:2:0 video, "
            f"got {height}x{width}; crop or pad them by one pixel."
        )
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    blocks = rgb.reshape(frames, height // 2, 2, width // 2, 2, 3)
    mean = (blocks.sum(axis=(2, 4)) + 2) >> 2
    r, g, b = mean[..., 0], mean[..., 1], mean[..., 2]
    u = ((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128
    v = ((112 * r - 94 * g - 18 * b + 128) >> 8) + 128
    chroma = np.stack([u, v], axis=1).reshape(frames, height // 2, width)
    return np.concatenate([y, chroma], axis=1).astype(np.uint8)


def write_clip(path, video, fps, audio=None, sample_rate=16000, lossless=False):
    """Write an H.264 mp4 file with AAC (or, lossless, ALAC) audio.

    The file is a function of the arguments only: RGB is converted to YUV
    in NumPy (`rgb_to_yuv420p`), both encoders run on one thread and the
    container and codecs are written with FFmpeg's `bitexact` flags (no
    library versions or clocks in the file).

    Args:
        path: str. Output file.
        video: uint8 `[F, H, W, 3]`; H and W even.
        fps: int. Frame rate.
        audio: float `[S]` mono waveform in `[-1, 1]`, or None for a file
            without an audio track. Defaults to `None`.
        sample_rate: int. Rate of `audio` in Hz. Defaults to `16000`.
        lossless: bool. Lossless H.264 (constant QP 0) and ALAC audio
            (16-bit): decoding gives back exactly the YUV planes and the
            16-bit samples that were written, whatever decisions the
            encoder took. Defaults to `False` (H.264 at x264's defaults,
            AAC: what cameras and phones write).
    """
    planes = rgb_to_yuv420p(video)
    height, width = planes.shape[1] * 2 // 3, planes.shape[2]
    options = {"fflags": "+bitexact"}
    with av.open(str(path), "w", options=options) as container:
        video_options = {"threads": "1", "flags": "+bitexact"}
        if lossless:
            video_options.update(qp="0", preset="ultrafast")
        video_stream = container.add_stream(
            "libx264", rate=int(fps), options=video_options
        )
        video_stream.height, video_stream.width = height, width
        video_stream.pix_fmt = "yuv420p"
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream(
                "alac" if lossless else "aac",
                rate=sample_rate,
                options={"threads": "1", "flags": "+bitexact"},
            )
            audio_stream.layout = "mono"
            if lossless:
                audio_stream.format = "s16p"
        for index, image in enumerate(planes):
            frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
            frame.pts = index
            container.mux(video_stream.encode(frame))
        container.mux(video_stream.encode(None))
        if audio_stream is not None:
            _encode_audio(container, audio_stream, audio, sample_rate)


def _encode_audio(container, stream, audio, sample_rate):
    """Mux a mono float waveform, in the stream's frame size."""
    audio = np.asarray(audio, np.float32)
    if stream.format.name == "s16p":
        audio = np.clip(np.round(audio * 32767), -32768, 32767)
        audio = audio.astype(np.int16)
    size = stream.codec_context.frame_size or 4096
    for start in range(0, len(audio), size):
        frame = av.AudioFrame.from_ndarray(
            audio[None, start : start + size],
            format=stream.format.name,
            layout="mono",
        )
        frame.sample_rate = sample_rate
        frame.pts = start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
