"""A seeded fuzz run of `convert`: damaged inputs among good ones.

    python tools/fuzz_convert.py --inputs 1000 --seed 0 --out /tmp/fuzz

Under `--out` (a new or empty folder) it writes `inputs/`: media files in
`videos/`, good and damaged, one annotation line each in `qa.jsonl` next
to annotation lines that are broken themselves, and `manifest.json`, what
each input is and what must become of it:

    good    written, exactly once, with the frames and audio it holds
    bad     not written; listed in the report's `skipped`, exactly once,
            at its annotation line, with a reason
    either  written or skipped, not both (a bit-flipped file may still
            decode; nobody can say in advance)

Then `convert` (worker processes, a per-file timeout) writes `records/`,
and the run checks those invariants, that no written audio holds NaN or
infinities, and that decoding a long file takes memory in proportion to
the frames it returns, not to the file's length. It prints one JSON line
and exits with status 1, naming each broken invariant, if any is broken.

Then the records themselves are damaged (`damaged_records/`: a copy of
`records/` with one seeded bit flip in about one record in ten, in its
header, data or checksum, and every shard cut short inside its last
record) and read back with the training pipeline (`snippet_dataset`, one
evaluation pass): its count of skipped records must equal the number
damaged, and every question of every other clip must come out.

Most damaged inputs are byte edits of a few files written with PyAV, so
1000 inputs take well under a minute on two cores.

    python tools/fuzz_convert.py --long-1080p-only --out /tmp/long1080p

does none of that: it builds a 2-hour (7200 s) 1920x1080 30 fps H.264 +
stereo 48 kHz AAC mp4 under `--out` (an 8 s segment encoded once, its
packets copied 900 times with shifted timestamps: 257 MiB, about 10 s),
checks with PyAV that it lasts 7200 s at 1920x1080, and measures
`read_clip(path, fps=8, image_size=(32, 32), sample_rate=16000)` on it
in a fresh process (as the fuzz run's long file): wall seconds, peak
memory growth (VmHWM), what came out, and what holding every frame or
the whole audio would take. One JSON line; 8 to 10 minutes on two busy
cores, nearly all of it decoding 216,000 frames (430 to 530 a second).
Memory grew by 655 MiB: the output itself (169 MiB of frames, 440 MiB
of 16 kHz float32 audio, which `read_clip` allocates for the whole
clip) and about 46 MiB more. `--long-1080p-seconds` (a multiple of 8)
makes the file shorter.
"""

import argparse
import collections
import fractions
import json
import math
import multiprocessing
import os
import shutil
import struct
import subprocess
import sys
import time

import av
import numpy as np

from keras_mirasol.data.media import write_clip
from keras_mirasol.data.records import VIDEO_EXTENSIONS

GOOD, BAD, EITHER = "good", "bad", "either"
FPS = 4
IMAGE_SIZE = (16, 16)
SAMPLE_RATE = 8000
SIZES = ((16, 16), (32, 24), (48, 32), (64, 48))
VARIANTS = 2

# kind: (what must become of it, how often it is drawn after the first
# input of each kind).
KINDS = {
    # Decodable files that must all come out.
    "mp4_mono": (GOOD, 4),
    "mp4_stereo_44k": (GOOD, 2),
    "mp4_stereo_48k": (GOOD, 2),
    "mp4_51_44k": (GOOD, 2),
    "mp4_51_48k": (GOOD, 2),
    "video_only": (GOOD, 3),
    "vfr": (GOOD, 3),
    "rotated": (GOOD, 2),
    "fps_1": (GOOD, 2),
    "fps_120": (GOOD, 2),
    "fps_ntsc": (GOOD, 2),
    "one_frame": (GOOD, 2),
    "mkv": (GOOD, 2),
    "webm": (GOOD, 2),
    "nan_audio_mkv": (GOOD, 2),
    "nan_audio_mov": (GOOD, 2),
    # Files that cannot be decoded.
    "truncated": (BAD, 6),
    "random_bytes": (BAD, 3),
    "empty": (BAD, 2),
    "audio_only": (BAD, 2),
    "absurd_size": (BAD, 2),
    # Files that may or may not decode.
    "truncated_moov": (EITHER, 3),
    "bit_flips": (EITHER, 25),
    # Annotation lines that cannot be used.
    "missing_file": (BAD, 3),
    "not_json": (BAD, 2),
    "not_utf8": (BAD, 2),
    "lone_surrogate": (BAD, 1),
    "no_video_field": (BAD, 2),
    "no_answer": (BAD, 2),
    "not_object": (BAD, 1),
}
# Inputs for a decoder that misbehaves on purpose
# (`tests/data/hostile_decoders.py`): only with `hostile=True`.
HOSTILE_KINDS = {"crash": (BAD, 0), "hang": (BAD, 0)}
# Bad inputs whose reason is known; the others must name their file.
REASONS = {
    "missing_file": "file not found",
    "not_json": "not JSON",
    "not_utf8": "not UTF-8",
    "lone_surrogate": "not valid Unicode",
    "no_video_field": "no video field",
    "no_answer": "needs text 'question' and 'answer'",
    "not_object": "not a JSON object",
    "audio_only": "has no video stream",
    "crash": "worker process died",
    "hang": "timed out",
}
ANNOTATION_KINDS = (
    "not_json",
    "not_utf8",
    "lone_surrogate",
    "no_video_field",
    "no_answer",
    "not_object",
)
# Good kinds whose files are mp4s (for the truncations).
MP4_KINDS = (
    "mp4_mono",
    "mp4_stereo_44k",
    "mp4_51_48k",
    "video_only",
    "vfr",
    "fps_1",
)


def write_media(
    path,
    video,
    rate,
    container_format=None,
    video_codec="libx264",
    pts=None,
    time_base=None,
    audio=None,
    audio_codec="aac",
    layout="mono",
    sample_rate=16000,
):
    """Write a media file with PyAV, for the kinds `write_clip` cannot.

    Args:
        path: str. Output file.
        video: uint8 `[F, H, W, 3]`, H and W even; or None for a file
            with audio only.
        rate: int or `fractions.Fraction`. Nominal frame rate.
        container_format: str or None. FFmpeg muxer. Defaults to `None`,
            which means the one the extension names.
        video_codec: str. Defaults to `"libx264"`.
        pts: int `[F]` or None. Timestamps in `time_base` units.
            Defaults to `None`, which means `0, 1, 2, ...` at `rate`.
        time_base: `fractions.Fraction` or None. Defaults to `None`,
            which means `1 / rate`.
        audio: float `[C, S]` or None (no audio track). Defaults to
            `None`.
        audio_codec: str. Defaults to `"aac"`.
        layout: str. Channel layout of `audio`. Defaults to `"mono"`.
        sample_rate: int. Rate of `audio` in Hz. Defaults to `16000`.
    """
    # One thread and bitexact flags: the same seed writes the same bytes.
    codec_options = {"threads": "1", "flags": "+bitexact"}
    with av.open(
        str(path),
        "w",
        format=container_format,
        options={"fflags": "+bitexact"},
    ) as container:
        video_stream = None
        if video is not None:
            video_stream = container.add_stream(
                video_codec, rate=rate, options=codec_options
            )
            video_stream.height, video_stream.width = video.shape[1:3]
            video_stream.pix_fmt = "yuv420p"
            if time_base is not None:
                video_stream.time_base = time_base
        audio_stream = None
        if audio is not None:
            audio_stream = container.add_stream(
                audio_codec, rate=sample_rate, options=codec_options
            )
            audio_stream.layout = layout
        if video_stream is not None:
            for index, image in enumerate(video):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index if pts is None else int(pts[index])
                if time_base is not None:
                    frame.time_base = time_base
                container.mux(video_stream.encode(frame))
            container.mux(video_stream.encode(None))
        if audio_stream is not None:
            _mux_audio(container, audio_stream, audio, layout, sample_rate)


def _mux_audio(container, stream, audio, layout, sample_rate):
    name = stream.format.name
    size = stream.codec_context.frame_size or 1024
    for start in range(0, audio.shape[1], size):
        chunk = audio[:, start : start + size].astype(np.float32)
        if name.startswith("s16"):
            chunk = np.round(np.clip(chunk, -1, 1) * 32767).astype(np.int16)
        if not name.endswith("p"):  # packed: channels interleaved
            chunk = chunk.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(chunk), format=name, layout=layout
        )
        frame.sample_rate, frame.pts = sample_rate, start
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def _frames(rng, count, size):
    """uint8 `[count, H, W, 3]`: a grey ramp with a moving bright block."""
    height, width = size
    start = int(rng.integers(0, 200))
    video = np.empty((count, height, width, 3), np.uint8)
    for index in range(count):
        video[index] = (start + 9 * index) % 200
        row = (index * 2) % (height - 4)
        video[index, row : row + 4, :4] = 250
    return video


def _tone(rng, seconds, sample_rate, channels=1):
    """float32 `[channels, S]`: a sine at 0.3 of full scale."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 1000) * t)
    return np.tile(wave.astype(np.float32), (channels, 1))


def _with_non_finite(rng, audio, values):
    """`audio` `[C, S]` with a run of NaN and `values` at random samples.

    Returns:
        `(audio, {"nan": [...], "posinf": [...], "neginf": [...]})`: the
        samples (of every channel) that are NaN, +Inf and -Inf.
    """
    audio = audio.copy()
    length = audio.shape[1]
    start = int(rng.integers(0, length - 100))
    audio[:, start : start + 100] = np.nan
    outside = np.setdiff1d(np.arange(length), np.arange(start, start + 100))
    chosen = rng.choice(outside, 10 * len(values), replace=False)
    where = {"nan": list(range(start, start + 100))}
    names = {"nan": np.nan, "posinf": np.inf, "neginf": -np.inf}
    for index, name in enumerate(values):
        samples = np.sort(chosen[10 * index : 10 * (index + 1)])
        audio[:, samples] = names[name]
        where.setdefault(name, []).extend(int(i) for i in samples)
    return audio, where


def _top_boxes(data):
    """`{type: offset}` of the top-level boxes of an mp4."""
    boxes, offset = {}, 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        boxes.setdefault(kind.decode("latin-1"), offset)
        if size < 8:
            break
        offset += size
    return boxes


def _rotate(data, degrees):
    """An mp4 with the display matrix of its first track (video) rotated.

    The matrix sits 40 bytes into a version 0 `tkhd` box's payload."""
    tkhd = data.index(b"tkhd") + 4
    assert data[tkhd] == 0, "expected a version 0 tkhd box"
    cos, sin = {90: (0, 1), 180: (-1, 0), 270: (0, -1)}[degrees]
    one = 1 << 16
    matrix = struct.pack(
        ">9i", cos * one, sin * one, 0, -sin * one, cos * one, 0, 0, 0, 1 << 30
    )
    start = tkhd + 40
    return data[:start] + matrix + data[start + 36 :]


def _write_base(kind, path, rng):
    """Write one good file of `kind`.

    Returns:
        dict: `seconds` it lasts, `has_audio`, and for variable frame
        rate `last_frame`, the time of its last frame.
    """
    size = SIZES[int(rng.integers(len(SIZES)))]
    seconds = float(rng.uniform(0.5, 1.5))
    if kind in ("mp4_mono", "video_only"):
        rate = int(rng.choice([8, 10, 25]))
        count = max(1, int(seconds * rate))
        audio = None
        if kind == "mp4_mono":
            audio = _tone(rng, count / rate, 16000)[0]
        write_clip(path, _frames(rng, count, size), rate, audio, 16000)
        return {"seconds": count / rate, "has_audio": audio is not None}
    if kind.startswith(("mp4_stereo", "mp4_51")):
        rate = 10
        count = int(seconds * rate)
        layout = "stereo" if "stereo" in kind else "5.1"
        sample_rate = 44100 if kind.endswith("44k") else 48000
        channels = av.AudioLayout(layout).nb_channels
        write_media(
            path,
            _frames(rng, count, size),
            rate,
            audio=_tone(rng, count / rate, sample_rate, channels),
            layout=layout,
            sample_rate=sample_rate,
        )
        return {"seconds": count / rate, "has_audio": True}
    if kind == "vfr":
        count = int(rng.integers(6, 13))
        # Irregular gaps, the last two long (a pause): with B-frames,
        # the mp4 muxer's stream duration ends before the last frame.
        gaps = rng.integers(1, 40, count - 1)
        gaps[-2:] = rng.integers(40, 80, 2)
        pts = np.concatenate([[0], np.cumsum(gaps)])
        # Each packet lasts 1/100 s: the last frame ends 0.01 s after it.
        write_media(
            path,
            _frames(rng, count, size),
            100,
            pts=pts,
            time_base=fractions.Fraction(1, 100),
            audio=_tone(rng, (pts[-1] + 1) / 100, 16000),
        )
        return {
            "seconds": (pts[-1] + 1) / 100,
            "has_audio": True,
            "last_frame": pts[-1] / 100,
        }
    if kind.startswith("fps_") or kind == "one_frame":
        rate = {
            "fps_1": 1,
            "fps_120": 120,
            "fps_ntsc": fractions.Fraction(30000, 1001),
            "one_frame": 8,
        }[kind]
        count = 1 if kind == "one_frame" else max(1, int(seconds * rate))
        if kind == "fps_1":
            count = int(rng.integers(2, 4))
        write_media(
            path,
            _frames(rng, count, size),
            rate,
            audio=_tone(rng, count / rate, 16000),
        )
        return {"seconds": float(count / rate), "has_audio": True}
    if kind in ("mkv", "webm"):
        rate = 8
        count = max(1, int(seconds * rate))
        webm = kind == "webm"
        write_media(
            path,
            _frames(rng, count, size),
            rate,
            video_codec="libvpx" if webm else "libx264",
            audio=_tone(rng, count / rate, 48000),
            audio_codec="opus" if webm else "aac",
            sample_rate=48000,
        )
        return {"seconds": count / rate, "has_audio": True}
    if kind.startswith("nan_audio"):
        rate = 8
        count = max(2, int(seconds * rate))
        fields = {"seconds": count / rate, "has_audio": True}
        if kind == "nan_audio_mkv":
            # Mono at the stored rate: no resampling, so each sample is
            # stored as it is, and NaN must be 0, +-Inf +-1.
            sample_rate, layout = SAMPLE_RATE, "mono"
            values = ("nan", "posinf", "neginf")
        else:
            # Resampled and mixed down: NaN (as 0) must not reach the
            # neighbouring samples, which stay within the tone's level.
            sample_rate = int(rng.choice([44100, 48000]))
            layout, values = "stereo", ("nan",)
            fields["peak_below"] = 0.8
        channels = av.AudioLayout(layout).nb_channels
        audio = _tone(rng, count / rate, sample_rate, channels)
        audio, where = _with_non_finite(rng, audio, values)
        if kind == "nan_audio_mkv":
            fields["non_finite"] = where
        write_media(
            path,
            _frames(rng, count, size),
            rate,
            audio=audio,
            audio_codec="pcm_f32le",
            layout=layout,
            sample_rate=sample_rate,
        )
        return fields
    raise ValueError(f"no base for {kind}")


GOOD_EXTENSIONS = {
    "mkv": ".mkv",
    "webm": ".webm",
    "nan_audio_mkv": ".mkv",
    "nan_audio_mov": ".mov",
}


def _write_bases(folder, rng):
    """`VARIANTS` good files of each kind with a recipe, a file with audio
    only and a raw video whose header claims 8000x8000 frames.

    Returns:
        `{kind: [(path, manifest fields)]}` (see `_write_base`).
    """
    os.makedirs(folder, exist_ok=True)
    bases = collections.defaultdict(list)
    for kind, (expect, _) in KINDS.items():
        if expect != GOOD or kind == "rotated":
            continue
        for variant in range(VARIANTS):
            extension = GOOD_EXTENSIONS.get(kind, ".mp4")
            path = os.path.join(folder, f"{kind}-{variant}{extension}")
            bases[kind].append((path, _write_base(kind, path, rng)))
    audio_only = os.path.join(folder, "audio_only.mp4")
    write_media(audio_only, None, 8, audio=_tone(rng, 1.0, 16000))
    bases["audio_only"].append((audio_only, {}))
    raw = os.path.join(folder, "raw.y4m")
    write_media(
        raw,
        _frames(rng, 4, (16, 16)),
        8,
        container_format="yuv4mpegpipe",
        video_codec="rawvideo",
    )
    with open(raw, "rb") as f:
        data = f.read()
    end = data.index(b"\n")
    header = data[:end].replace(b" W16 ", b" W8000 ")
    header = header.replace(b" H16 ", b" H8000 ")
    absurd = os.path.join(folder, "absurd_size.avi")
    with open(absurd, "wb") as f:
        f.write(header + data[end:])
    bases["absurd_size"].append((absurd, {}))
    return bases


def _flip(data, rng, start, end, count):
    data = bytearray(data)
    positions = rng.integers(start, end, count)
    data_bits = rng.integers(1, 256, count)
    for position, bits in zip(positions, data_bits):
        data[position] ^= int(bits)
    return bytes(data)


def _make_file(kind, rng, bases, path):
    """Write the input file of `kind`; returns manifest fields."""
    if kind == "rotated":
        source, fields = _pick(rng, bases["mp4_mono"])
        with open(source, "rb") as f:
            data = _rotate(f.read(), int(rng.choice([90, 180, 270])))
        _write(path, data)
        return dict(fields)
    if KINDS.get(kind, (None,))[0] == GOOD:
        source, fields = _pick(rng, bases[kind])
        shutil.copyfile(source, path)
        return dict(fields)
    if kind in ("truncated", "truncated_moov"):
        source = _pick(rng, bases[str(rng.choice(MP4_KINDS))])[0]
        with open(source, "rb") as f:
            data = f.read()
        moov = _top_boxes(data)["moov"]
        assert moov > _top_boxes(data)["mdat"], "moov expected last"
        # Without its moov box (written last) an mp4 cannot be read;
        # cut inside the moov, some tracks may still be there.
        if kind == "truncated":
            cut = int(rng.integers(1, moov))
        else:
            cut = int(rng.integers(moov, len(data)))
        _write(path, data[:cut])
        return {"cut": cut, "size": len(data)}
    if kind == "bit_flips":
        source_kind = str(rng.choice([k for k in bases if KINDS[k][0] == GOOD]))
        source = _pick(rng, bases[source_kind])[0]
        with open(source, "rb") as f:
            data = f.read()
        count = int(rng.integers(1, 65))
        start, end = 0, len(data)
        boxes = _top_boxes(data) if source.endswith(".mp4") else {}
        if "moov" in boxes and rng.random() < 0.5:
            start = boxes["moov"]  # the sample tables
        _write(path, _flip(data, rng, start, end, count))
        return {"source": source_kind, "flips": count}
    if kind == "random_bytes":
        _write(path, rng.bytes(int(rng.integers(1, 5000))))
        return {}
    if kind == "empty":
        _write(path, b"")
        return {}
    if kind in ("audio_only", "absurd_size"):
        shutil.copyfile(bases[kind][0][0], path)
        return {}
    if kind in HOSTILE_KINDS or kind in ANNOTATION_KINDS:
        # A good file: only the decoder or the annotation line is at fault.
        shutil.copyfile(_pick(rng, bases["mp4_mono"])[0], path)
        return {}
    raise ValueError(f"unknown kind {kind}")


def _pick(rng, items):
    return items[int(rng.integers(len(items)))]


def _write(path, data):
    with open(path, "wb") as f:
        f.write(data)


def _annotation(rng, video, index):
    """A good annotation of `video`: a question or a caption."""
    if rng.random() < 0.3:
        return {"video": video, "caption": f"caption {index} – ünïcode"}
    return {
        "video": video,
        "question": f"question {index}: what moves? 日本",
        "answer": f"answer {index}",
        "type": str(rng.choice(["video", "audio", ""])),
    }


def _annotation_line(kind, rng, video, index):
    """The annotation line (bytes, no newline) of an input of `kind`."""
    record = _annotation(rng, video, index)
    if kind == "not_json":
        text = json.dumps(record)
        return text[: int(rng.integers(1, len(text) - 1))].encode()
    if kind == "not_utf8":
        record = {"video": video, "question": "@@", "answer": "a"}
        bad = bytes([int(rng.choice([0x80, 0xC3, 0xFE, 0xFF]))])
        return json.dumps(record).encode().replace(b"@@", b"q" + bad + b"x")
    if kind == "lone_surrogate":
        record = {"video": video, "question": "q \ud800 x", "answer": "a"}
    elif kind == "no_video_field":
        record.pop("video")
        if rng.random() < 0.5:
            record["video"] = ""
    elif kind == "no_answer":
        record = {"video": video, "question": "q"}
        if rng.random() < 0.5:
            record["answer"] = 3
    elif kind == "not_object":
        return json.dumps([video, "q", "a"]).encode()
    # A lone surrogate can only be written as a "\\ud800" escape.
    ascii_only = kind == "lone_surrogate" or rng.random() < 0.5
    return json.dumps(record, ensure_ascii=ascii_only).encode()


def _draw_kinds(num_inputs, rng, kinds):
    """One of each kind first (in a seeded order), then drawn by weight."""
    names = list(kinds)
    order = [names[i] for i in rng.permutation(len(names))]
    weights = np.array([kinds[k][1] for k in names], float)
    rest = rng.choice(
        names, max(0, num_inputs - len(order)), p=weights / weights.sum()
    )
    return (order + [str(k) for k in rest])[:num_inputs]


def generate(folder, num_inputs, seed, hostile=False):
    """Write fuzz inputs: media files, annotations and their manifest.

    Args:
        folder: str. Output folder: `videos/`, `qa.jsonl`,
            `manifest.json` and `bases/` (the files inputs derive from).
        num_inputs: int. Inputs to write (one annotation line each); the
            first ones cover every kind once.
        seed: int. Seed of `numpy.random.default_rng`.
        hostile: bool. Add inputs for the misbehaving decoder of
            `tests/data/hostile_decoders.py` (`crash...`, `hang...`).
            Defaults to `False`.

    Returns:
        The manifest dict: `annotations` (path), `videos` (folder) and
        `inputs`, one dict per input with `kind`, `expect` (good, bad or
        either), `line` (its annotation line), `video` (the annotation's
        file name), `clip_id`, and for good inputs `seconds` and
        `has_audio`.
    """
    rng = np.random.default_rng(seed)
    videos = os.path.join(folder, "videos")
    os.makedirs(videos, exist_ok=True)
    bases = _write_bases(os.path.join(folder, "bases"), rng)
    kinds = dict(KINDS, **(HOSTILE_KINDS if hostile else {}))
    lines, inputs = [], []
    for index, kind in enumerate(_draw_kinds(num_inputs, rng, kinds)):
        expect = kinds[kind][0]
        extension = GOOD_EXTENSIONS.get(kind, ".mp4")
        if kind in ("random_bytes", "bit_flips"):
            extension = str(rng.choice(VIDEO_EXTENSIONS))
        stem = f"{index:04d}-{kind}"
        if kind in HOSTILE_KINDS:
            stem = f"{kind}-{index:04d}"  # the decoder reads the prefix
        entry = {"kind": kind, "expect": expect, "clip_id": stem}
        if kind != "missing_file":
            path = os.path.join(videos, stem + extension)
            entry.update(_make_file(kind, rng, bases, path))
        # find_video also finds a file named without its extension.
        video = stem if rng.random() < 0.2 else stem + extension
        while rng.random() < 0.1:
            lines.append(b" " * int(rng.integers(0, 3)))  # blank lines
        lines.append(_annotation_line(kind, rng, video, index))
        entry.update(video=video, line=len(lines))
        inputs.append(entry)
    annotations = os.path.join(folder, "qa.jsonl")
    with open(annotations, "wb") as f:
        f.write(b"\xef\xbb\xbf" if rng.random() < 0.5 else b"")
        f.write(b"\n".join(lines) + b"\n")
    manifest = {
        "seed": seed,
        "annotations": annotations,
        "videos": videos,
        "inputs": inputs,
    }
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_written(records_dir):
    """What `convert` wrote: one dict per clip, in file order.

    Returns:
        list of dicts with `clip_id`, `questions` (how many), `video`
        (file name), `frames`,
        `frame_shape` `(H, W, 3)` of the first frame, `has_audio`,
        `finite` (no NaN or infinity in the audio) and `peak` (largest
        absolute sample) and `audio` float32 `[S]`.
    """
    import tensorflow as tf

    from keras_mirasol.data.snippets import decode_audio
    from keras_mirasol.data.snippets import parse_clip

    files = sorted(
        os.path.join(records_dir, name)
        for name in os.listdir(records_dir)
        if name.endswith(".tfrecord")
    )
    written = []
    for serialized in tf.data.TFRecordDataset(files):
        clip = decode_audio(parse_clip(serialized))
        audio = clip["audio"].numpy()
        frames = clip["frames"].numpy()
        first = tf.io.decode_png(frames[0], channels=3)
        written.append(
            {
                "clip_id": clip["clip_id"].numpy().decode(),
                "questions": len(clip["questions"].numpy()),
                "frames": len(frames),
                "frame_shape": tuple(first.shape),
                "has_audio": bool(clip["has_audio"].numpy()),
                "finite": bool(np.isfinite(audio).all()),
                "peak": float(np.abs(audio).max()) if audio.size else 0.0,
                "audio": audio,
            }
        )
    return written


def check(manifest, report, written, fps=FPS, image_size=IMAGE_SIZE):
    """The invariants of a fuzz run; returns a list of what is broken.

    Args:
        manifest: dict. From `generate`.
        report: dict. What `convert` returned.
        written: list of dicts. From `read_written`.
        fps: float. The rate `convert` stored. Defaults to `FPS`.
        image_size: `(height, width)` `convert` stored. Defaults to
            `IMAGE_SIZE`.

    Returns:
        list of str, empty if every invariant holds.
    """
    failures = []
    annotations = manifest["annotations"]
    by_id = collections.defaultdict(list)
    for clip in written:
        by_id[clip["clip_id"]].append(clip)
    skipped = collections.defaultdict(list)
    for entry in report["skipped"]:
        skipped[entry["input"]].append(entry)
    known_ids, known_lines = set(), set()
    for item in manifest["inputs"]:
        name = f"{item['clip_id']} ({item['kind']})"
        location = f"{annotations}:{item['line']}"
        known_ids.add(item["clip_id"])
        known_lines.add(location)
        clips = by_id.get(item["clip_id"], [])
        skips = skipped.get(location, [])
        if len(clips) > 1 or len(skips) > 1:
            failures.append(
                f"{name}: written {len(clips)} times, skipped {len(skips)}"
            )
        expect = item["expect"]
        if expect == GOOD and (not clips or skips):
            failures.append(f"{name}: good input not written: {skips}")
        if expect == BAD and (clips or not skips):
            failures.append(f"{name}: bad input written or not reported")
        if expect == EITHER and bool(clips) == bool(skips):
            failures.append(
                f"{name}: written {len(clips)}, skipped {len(skips)}"
            )
        for skip in skips:
            failures += _check_skip(name, item, skip, manifest["videos"])
        for clip in clips:
            failures += _check_clip(name, item, clip, fps, image_size)
    for clip_id in set(by_id) - known_ids:
        failures.append(f"written clip {clip_id!r} is no input")
    for location in set(skipped) - known_lines:
        failures.append(f"skipped {location!r} is no input")
    if report["clips"] != len(written):
        failures.append(
            f"report counts {report['clips']} clips, {len(written)} written"
        )
    silent = {c["clip_id"] for c in written if not c["has_audio"]}
    no_audio = {os.path.splitext(v)[0] for v in report["no_audio"]}
    if no_audio != silent:
        failures.append(
            f"no_audio {sorted(no_audio)} is not the clips without audio "
            f"{sorted(silent)}"
        )
    return failures


def _check_skip(name, item, skip, videos):
    failures = []
    reason = skip.get("reason")
    if not isinstance(reason, str) or not reason:
        failures.append(f"{name}: skipped without a reason: {skip}")
        return failures
    # A line that cannot be read names no video; a file that cannot be
    # decoded is reported with the video its line names.
    video = None if item["kind"] in ANNOTATION_KINDS else item["video"]
    if skip.get("video") != video:
        failures.append(f"{name}: skipped as video {skip.get('video')!r}")
    expected = REASONS.get(item["kind"])
    if expected is not None and expected not in reason:
        failures.append(f"{name}: reason {reason!r} lacks {expected!r}")
    if expected is None and videos not in reason:
        failures.append(f"{name}: reason {reason!r} does not name the file")
    return failures


def _check_clip(name, item, clip, fps, image_size):
    failures = []
    if not clip["finite"] or clip["peak"] > 1.0:
        failures.append(f"{name}: audio not finite in [-1, 1]")
    if clip["frame_shape"] != (*image_size, 3):
        failures.append(f"{name}: frames of shape {clip['frame_shape']}")
    if item["expect"] != GOOD:
        return failures
    low = high = max(1, math.floor(item["seconds"] * fps + 1e-6))
    if "last_frame" in item:
        # Variable frame rate: how long the last frame lasts is a guess;
        # every frame up to the last one must be there.
        low = max(1, math.floor(item["last_frame"] * fps + 1e-6))
        high = low + 1
    if not low <= clip["frames"] <= high:
        failures.append(
            f"{name}: {clip['frames']} frames, expected {low} to {high} "
            f"({item['seconds']:.3f} s at {fps} fps)"
        )
    if clip["has_audio"] != item["has_audio"]:
        failures.append(f"{name}: has_audio is {clip['has_audio']}")
    if item["has_audio"] and clip["peak"] < 0.05:
        failures.append(f"{name}: audio lost (peak {clip['peak']:.3f})")
    if clip["peak"] >= item.get("peak_below", 2.0):
        failures.append(f"{name}: audio peaks at {clip['peak']:.3f}")
    stored = {"nan": 0.0, "posinf": 1.0, "neginf": -1.0}
    for kind, samples in item.get("non_finite", {}).items():
        values = clip["audio"][samples]
        if np.any(values != stored[kind]):
            failures.append(
                f"{name}: {kind} samples stored as "
                f"{sorted(set(values.tolist()))}, not {stored[kind]}"
            )
    return failures


_PEAK = """
import json, resource, sys, time
from keras_mirasol.data import media
from keras_mirasol.data.media import read_clip
def status(field):
    # VmHWM starts afresh at exec; ru_maxrss keeps the peak of the
    # process this one was forked from (the caller, TensorFlow loaded).
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def peak():
    return status("VmHWM")
"""

_MEASURE = (
    _PEAK
    + """
read_clip(sys.argv[1], fps=float(sys.argv[3]))
before = peak()
clip = read_clip(sys.argv[2], fps=float(sys.argv[3]))
print(json.dumps({"before_mib": before, "peak_mib": peak(),
                  "output_mib": clip["video"].nbytes / 2**20,
                  "output_frames": len(clip["video"])}))
"""
)

# argv: short long fps height width sample_rate. The audio pass is
# wrapped (here, not in the library) to tell the video pass's peak and
# the memory held when the audio pass starts from the overall peak.
_MEASURE_CLIP = (
    _PEAK
    + """
fps, size, rate = float(sys.argv[3]), tuple(map(int, sys.argv[4:6])), int(
    sys.argv[6])
read_clip(sys.argv[1], fps=fps, image_size=size, sample_rate=rate)
stages = {}
read_audio = media._read_audio
def timed_read_audio(*args):
    stages.update(video_s=time.monotonic() - start, video_peak_mib=peak(),
                  rss_at_audio_mib=status("VmRSS"))
    return read_audio(*args)
media._read_audio = timed_read_audio
before = peak()
start = time.monotonic()
clip = read_clip(sys.argv[2], fps=fps, image_size=size, sample_rate=rate)
wall = time.monotonic() - start
print(json.dumps(dict(
    stages, wall_s=wall, audio_s=wall - stages["video_s"],
    before_mib=before, peak_mib=peak(),
    output_frames=len(clip["video"]),
    output_shape=list(clip["video"].shape),
    output_video_mib=clip["video"].nbytes / 2**20,
    output_audio_samples=len(clip["audio"]),
    output_audio_mib=clip["audio"].nbytes / 2**20,
    has_audio=bool(clip["has_audio"]), clip_seconds=clip["seconds"])))
"""
)


def _write_long(path, seconds, rate=30, size=(240, 320)):
    """A long H.264 + AAC mp4, encoded a frame at a time."""
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(
            "libx264", rate=rate, options={"preset": "ultrafast"}
        )
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        ramp = np.arange(width)[None, :, None]
        for index in range(int(seconds * rate)):
            level = ((ramp + index) % 256).astype(np.uint8)
            image = np.broadcast_to(level, (height, width, 3))
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(image), format="rgb24"
            )
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return int(seconds * rate) * height * width * 3


def measure_long_decode(folder, seconds=60.0, fps=1.0):
    """Peak memory of `read_clip` on a long file, in a fresh process.

    The process first decodes a short file of the same kind (codec set
    up, libraries loaded), then the long one, at `fps` and full size.

    Args:
        folder: str. Where the files are written.
        seconds: float. Length of the long file (320x240 at 30 fps).
            Defaults to `60.0`.
        fps: float. Frame rate `read_clip` returns. Defaults to `1.0`.

    Returns:
        dict: `seconds`, `decoded_mib` (all the file's frames as RGB),
        `output_mib` and `output_frames` (what `read_clip` returned),
        `before_mib` (peak RSS after the short file), `peak_mib` (after
        the long one) and `growth_mib`.
    """
    os.makedirs(folder, exist_ok=True)
    short = os.path.join(folder, "short.mp4")
    long = os.path.join(folder, "long.mp4")
    _write_long(short, 1.0)
    decoded = _write_long(long, seconds)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, short, long, str(fps)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result = {k: round(v, 1) for k, v in result.items()}
    result.update(
        seconds=seconds,
        decoded_mib=round(decoded / 2**20, 1),
        growth_mib=round(result["peak_mib"] - result["before_mib"], 1),
    )
    return result


LONG_1080P_SECONDS = 7200.0
SEGMENT_SECONDS = 8.0  # 30 fps frames and 1024-sample AAC frames at 48 kHz
LONG_1080P_TIMEOUT = 2400.0


def _write_segment(path, seconds, rate=30, size=(1080, 1920)):
    """A short H.264 + stereo 48 kHz AAC mp4 that `_write_repeated` copies.

    Every frame differs from the one before (a luma ramp drifts a pixel
    a frame, a bright block moves; about 0.7 kB a P-frame, 57 kB the
    keyframe), encoded by x264 `ultrafast` (no B-frames); the audio is a
    tone in each channel at 64 kb/s.
    """
    height, width = size
    frames = int(round(seconds * rate))
    ramp = (np.arange(width)[None, :] + np.arange(height)[:, None] // 2) % 220
    codec_options = {"preset": "ultrafast", "crf": "30", "threads": "1"}
    with av.open(str(path), "w") as container:
        video = container.add_stream(
            "libx264", rate=rate, options=codec_options
        )
        video.height, video.width, video.pix_fmt = height, width, "yuv420p"
        audio = container.add_stream("aac", rate=48000)
        audio.layout, audio.bit_rate = "stereo", 64000
        planes = np.full((height * 3 // 2, width), 128, np.uint8)
        for index in range(frames):
            planes[:height] = (ramp + index) % 220 + 16
            row, col = (5 * index) % (height - 64), (7 * index) % (width - 64)
            planes[row : row + 64, col : col + 64] = 235
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        tone = _tone(np.random.default_rng(0), seconds, 48000, channels=2)
        tone[1] = np.roll(tone[1], 48)
        _mux_audio(container, audio, tone, "stereo", 48000)


def _write_repeated(segment, path, copies, seconds):
    """`copies` copies of `segment`'s packets end to end, no re-encoding.

    Copy `k`'s timestamps are shifted by `k * seconds`; the audio
    encoder's priming packet (negative timestamp) is kept only in the
    first copy, so each later copy's audio starts where the one before
    ends. Packets are muxed in decoding-time order, a copy at a time, so
    the muxer's interleaving queue stays short.

    Args:
        segment: str. An mp4 from `_write_segment`: its video packets
            and its audio packets (priming excluded) each span exactly
            `seconds`.
        path: str. Output mp4.
        copies: int. How many copies.
        seconds: float. The segment's length.
    """
    with av.open(str(segment)) as source:
        streams = [source.streams.video[0], source.streams.audio[0]]
        packets = {stream.index: [] for stream in streams}
        for packet in source.demux(streams):
            if packet.size:  # demux ends each stream with an empty one
                packets[packet.stream_index].append(
                    (
                        bytes(packet),
                        packet.pts,
                        packet.dts,
                        packet.duration,
                        packet.is_keyframe,
                    )
                )
        ticks = {}
        for stream in streams:
            kept = [p for p in packets[stream.index] if p[1] >= 0]
            ticks[stream.index] = round(seconds / stream.time_base)
            span = kept[-1][1] + kept[-1][3] - kept[0][1]
            if kept[0][1] != 0 or span != ticks[stream.index]:
                raise ValueError(
                    f"{segment}: {stream.type} packets span {span} ticks "
                    f"from {kept[0][1]}, not {ticks[stream.index]} from 0"
                )
        with av.open(str(path), "w") as target:
            outputs = {
                stream.index: target.add_stream_from_template(stream)
                for stream in streams
            }
            for copy in range(copies):
                batch = []
                for stream in streams:
                    shift = copy * ticks[stream.index]
                    for data, pts, dts, duration, key in packets[stream.index]:
                        if copy and pts < 0:
                            continue
                        when = (dts + shift) * stream.time_base
                        batch.append(
                            (
                                when,
                                stream.index,
                                data,
                                pts + shift,
                                dts + shift,
                                duration,
                                key,
                            )
                        )
                batch.sort(key=lambda item: item[:2])
                for _, index, data, pts, dts, duration, key in batch:
                    packet = av.Packet(data)
                    packet.pts, packet.dts, packet.duration = pts, dts, duration
                    packet.is_keyframe = key
                    packet.time_base = source.streams[index].time_base
                    packet.stream = outputs[index]
                    target.mux(packet)


def write_long_1080p(folder, seconds=LONG_1080P_SECONDS):
    """A `seconds`-long 1920x1080 30 fps H.264 + stereo 48 kHz AAC mp4.

    An 8 s segment is encoded once (`_write_segment`) and its packets
    copied `seconds / 8` times (`_write_repeated`): a valid file of the
    full length at about 37 kB per second, built in about 10 s.
    The result is checked with PyAV: its video stream is 1920x1080 and
    it and the container last `seconds`.

    Args:
        folder: str. Where `segment.mp4` and `long_1080p.mp4` go.
        seconds: float. A multiple of 8. Defaults to `7200.0` (2 hours).

    Returns:
        dict: `path`, `segment` (the 8 s file), `seconds`, `frames`,
        `file_mib`, `build_s` and what PyAV reads back: `width`,
        `height`, `stream_seconds`, `container_seconds`, `audio_seconds`.
    """
    copies = int(round(seconds / SEGMENT_SECONDS))
    if copies < 1 or abs(copies * SEGMENT_SECONDS - seconds) > 1e-9:
        raise ValueError(f"seconds must be a multiple of {SEGMENT_SECONDS:g}")
    os.makedirs(folder, exist_ok=True)
    segment = os.path.join(folder, "segment.mp4")
    path = os.path.join(folder, "long_1080p.mp4")
    start = time.monotonic()
    _write_segment(segment, SEGMENT_SECONDS)
    _write_repeated(segment, path, copies, SEGMENT_SECONDS)
    build_s = time.monotonic() - start
    with av.open(path) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        result = {
            "path": path,
            "segment": segment,
            "seconds": seconds,
            "frames": video.frames,
            "width": video.codec_context.width,
            "height": video.codec_context.height,
            "stream_seconds": float(video.duration * video.time_base),
            "audio_seconds": float(audio.duration * audio.time_base),
            "audio_layout": audio.layout.name,
            "audio_rate": audio.rate,
            "container_seconds": container.duration / av.time_base,
            "file_mib": round(os.path.getsize(path) / 2**20, 1),
            "build_s": round(build_s, 1),
        }
    if (result["width"], result["height"]) != (1920, 1080) or any(
        abs(result[key] - seconds) > 0.05
        for key in ("stream_seconds", "container_seconds")
    ):
        raise ValueError(f"{path} is not {seconds:g} s of 1080p: {result}")
    return result


def measure_long_1080p(
    folder,
    seconds=LONG_1080P_SECONDS,
    fps=8.0,
    image_size=(32, 32),
    sample_rate=16000,
    timeout=LONG_1080P_TIMEOUT,
):
    """Build a long 1080p file and measure `read_clip` on it.

    As `measure_long_decode`, in a fresh process that first decodes a
    short file of the same kind (the 8 s segment) and then the long one
    with `read_clip(path, fps, image_size, sample_rate)`; the audio pass
    is timed apart from the video pass.

    Args:
        folder: str. Where the files are written.
        seconds: float. Length of the file, a multiple of 8. Defaults to
            `7200.0`.
        fps: float. Defaults to `8.0`.
        image_size: `(height, width)`. Defaults to `(32, 32)`.
        sample_rate: int. Defaults to `16000`.
        timeout: float. Seconds the decoding process may take. Defaults
            to `2400.0`.

    Returns:
        dict: the file (`write_long_1080p`'s fields), the decoding
        process's seconds (`wall_s`, `video_s`, `audio_s`) and memory
        (`before_mib`, `video_peak_mib`: the peak when the audio pass
        starts, `rss_at_audio_mib`, `peak_mib`, `growth_mib`), what
        `read_clip` returned, and for comparison what holding every
        decoded frame (at 1080p, or at `image_size`) or the whole audio
        (at `sample_rate`, or at the file's 48 kHz stereo) would take.
    """
    built = write_long_1080p(folder, seconds)
    height, width = image_size
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE_CLIP,
            built["segment"],
            built["path"],
            str(fps),
            str(height),
            str(width),
            str(sample_rate),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result = {
        key: round(value, 1) if isinstance(value, float) else value
        for key, value in result.items()
    }
    frames = built["frames"]
    mib = 2**20
    result.update(
        growth_mib=round(result["peak_mib"] - result["before_mib"], 1),
        decode_fps=round(frames / result["video_s"], 1),
        all_frames_1080p_mib=round(frames * 1080 * 1920 * 3 / mib, 1),
        all_frames_resized_mib=round(frames * height * width * 3 / mib, 1),
        audio_float32_mib=round(seconds * sample_rate * 4 / mib, 1),
        audio_native_float32_mib=round(seconds * 48000 * 2 * 4 / mib, 1),
    )
    del built["segment"]
    return {**built, "fps": fps, "image_size": list(image_size), **result}


def damage_records(records_dir, out_dir, rng, every=10):
    """A copy of `records_dir` with some of its records damaged.

    One record in about `every` (never two neighbours, whose damaged
    headers would read as one stretch) gets one flipped bit anywhere in
    its bytes; every shard is also cut short inside its last record.

    Returns:
        The ids of the clips whose records were damaged (a set of str).
    """
    from keras_mirasol.data.record_io import read_records
    from keras_mirasol.data.snippets import parse_clip

    os.makedirs(out_dir)
    damaged = set()
    for name in sorted(os.listdir(records_dir)):
        if not name.endswith(".tfrecord"):
            continue
        path = os.path.join(records_dir, name)
        records = [data for _, data in read_records(path)]
        with open(path, "rb") as f:
            data = bytearray(f.read())
        ends = np.cumsum([0] + [len(r) + 16 for r in records])
        chosen = []
        # Not the last two: the last is cut short, and a damaged header
        # just before it would read as one stretch with it.
        for index in range(len(records) - 2):
            if rng.random() < 1 / every and index - 1 not in chosen:
                chosen.append(index)
        for index in chosen:
            at = int(rng.integers(ends[index], ends[index + 1]))
            data[at] ^= 1 << int(rng.integers(8))
        if records:
            chosen.append(len(records) - 1)
            data = data[: int(rng.integers(ends[-2] + 1, ends[-1]))]
        for index in chosen:
            clip = parse_clip(records[index])
            damaged.add(clip["clip_id"].numpy().decode())
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(bytes(data))
    return damaged


def read_damaged_records(out_dir, written, damaged_ids):
    """Read `out_dir` with `snippet_dataset`; the invariants it breaks.

    Returns:
        `(failures, skipped)`: a list of str, and the damaged records the
        pipeline counted.
    """
    import types

    from keras_mirasol.data.record_io import DamagedRecords
    from keras_mirasol.data.snippets import snippet_dataset

    clip_shape = types.SimpleNamespace(
        num_frames=2,
        frame_size=IMAGE_SIZE,
        num_audio_samples=SAMPLE_RATE // 2,
        audio_sample_rate=SAMPLE_RATE,
        use_audio=True,
    )
    collector = DamagedRecords()
    ds = snippet_dataset(
        out_dir, clip_shape, 32, keep_metadata=True, damaged=collector
    )
    delivered = collections.Counter()
    failures = []
    try:
        for batch in ds.as_numpy_iterator():
            delivered.update(c.decode() for c in batch["clip_id"])
    except Exception as error:
        failures.append(
            f"the pipeline raised {type(error).__name__} on damaged "
            f"records: {str(error)[:300]}"
        )
    if len(collector) != len(damaged_ids):
        failures.append(
            f"the pipeline counted {len(collector)} damaged records, "
            f"{len(damaged_ids)} were damaged"
        )
    wanted = collections.Counter(
        {
            clip["clip_id"]: clip["questions"]
            for clip in written
            if clip["clip_id"] not in damaged_ids
        }
    )
    if delivered != wanted:
        missing = sorted((wanted - delivered).keys())[:5]
        extra = sorted((delivered - wanted).keys())[:5]
        failures.append(
            "the pipeline's questions differ from the undamaged clips' "
            f"(missing from: {missing}; unexpected from: {extra})"
        )
    return failures, len(collector)


def run(
    out,
    num_inputs,
    seed,
    workers=2,
    timeout=20,
    long_seconds=60.0,
    hostile=False,
    read_clip=None,
):
    """Generate inputs, run `convert`, check the invariants.

    Args:
        out: str. A new or empty folder: `inputs/`, `records/`, `long/`.
        num_inputs: int. Inputs to generate.
        seed: int. Seed of the inputs.
        workers: int. `convert`'s worker processes. Defaults to `2`.
        timeout: float. Seconds a file may decode. Defaults to `20`.
        long_seconds: float. Length of the file whose decoding memory is
            measured; 0 skips the measurement. Defaults to `60.0`.
        hostile: bool. Add inputs that crash or hang the decoder (needs
            `read_clip`, see `generate`). Defaults to `False`.
        read_clip: a module-level function with `read_clip`'s signature
            for `convert`'s workers, or None. Defaults to `None`, which
            means `keras_mirasol.data.media.read_clip`.

    Returns:
        The summary dict: `ok`, counts by expectation and by kind,
        seconds per stage, the long file's memory and `failures` (at
        most 20).
    """
    from keras_mirasol.data.records import convert

    if os.path.isdir(out) and os.listdir(out):
        raise ValueError(f"{out} is not empty: give a new folder.")
    start = time.monotonic()
    manifest = generate(os.path.join(out, "inputs"), num_inputs, seed, hostile)
    generated = time.monotonic()
    failures = []
    report = None
    try:
        report = convert(
            manifest["videos"],
            manifest["annotations"],
            os.path.join(out, "records"),
            fps=FPS,
            image_size=IMAGE_SIZE,
            sample_rate=SAMPLE_RATE,
            clips_per_shard=64,
            workers=workers,
            timeout=timeout,
            verbose=False,
            _read_clip=read_clip,
        )
    except Exception as error:
        failures.append(f"convert raised {type(error).__name__}: {error}")
    converted = time.monotonic()
    if multiprocessing.active_children():
        failures.append("worker processes left running")
    written = []
    if report is not None:
        written = read_written(os.path.join(out, "records"))
        failures += check(manifest, report, written)
    expects = collections.Counter(i["expect"] for i in manifest["inputs"])
    ids = {c["clip_id"] for c in written}
    summary = {
        "ok": not failures,
        "inputs": num_inputs,
        "seed": seed,
        "good": expects[GOOD],
        "bad": expects[BAD],
        "either": expects[EITHER],
        "written": len(written),
        "written_either": sum(
            i["clip_id"] in ids
            for i in manifest["inputs"]
            if i["expect"] == EITHER
        ),
        "skipped": len(report["skipped"]) if report else None,
        "generate_s": round(generated - start, 1),
        "convert_s": round(converted - generated, 1),
        "records_damaged": 0,
        "records_skipped": 0,
        "kinds": dict(
            sorted(
                collections.Counter(
                    i["kind"] for i in manifest["inputs"]
                ).items()
            )
        ),
    }
    if written:
        damaged_ids = damage_records(
            os.path.join(out, "records"),
            os.path.join(out, "damaged_records"),
            np.random.default_rng([seed, 1]),
        )
        broken, skipped = read_damaged_records(
            os.path.join(out, "damaged_records"), written, damaged_ids
        )
        failures += broken
        summary["records_damaged"] = len(damaged_ids)
        summary["records_skipped"] = skipped
    if long_seconds:
        memory = measure_long_decode(os.path.join(out, "long"), long_seconds)
        summary["long_decode"] = memory
        # Holding every decoded frame would take `decoded_mib`.
        if memory["growth_mib"] > memory["decoded_mib"] / 4:
            failures.append(
                f"decoding {long_seconds:g} s grew memory by "
                f"{memory['growth_mib']} MiB; its frames are "
                f"{memory['decoded_mib']} MiB, the output "
                f"{memory['output_mib']} MiB"
            )
    summary.update(
        ok=not failures,
        seconds=round(time.monotonic() - start, 1),
        num_failures=len(failures),
        failures=failures[:20],
    )
    return summary


def main(argv=None):
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inputs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=20)
    parser.add_argument(
        "--long-seconds",
        type=float,
        default=60,
        help="length of the file whose decoding memory is measured; 0: skip",
    )
    parser.add_argument(
        "--long-1080p-only",
        action="store_true",
        help="only build a long 1080p file and measure decoding it",
    )
    parser.add_argument(
        "--long-1080p-seconds",
        type=float,
        default=LONG_1080P_SECONDS,
        help="length of that file, a multiple of 8 (default: 7200)",
    )
    args = parser.parse_args(argv)
    if os.path.isdir(args.out) and os.listdir(args.out):
        parser.error(f"--out {args.out} is not empty: give a new folder")
    if args.long_1080p_only:
        result = measure_long_1080p(args.out, args.long_1080p_seconds)
        print(json.dumps(result), flush=True)
        return 0
    summary = run(
        args.out,
        args.inputs,
        args.seed,
        workers=args.workers,
        timeout=args.timeout,
        long_seconds=args.long_seconds,
    )
    print(json.dumps(summary), flush=True)
    if not summary["ok"]:
        print(
            f"fuzz_convert: {summary['num_failures']} invariant(s) broken "
            "(first 20 above, under 'failures')",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
