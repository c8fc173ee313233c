"""TFRecords of decoded clips, and `convert` from media files to them.

Schema: one `tf.train.SequenceExample` per clip, holding every annotation
of that clip.

context:
    clip_id        bytes    the clip's id (annotation `clip_id`, else the
                            video file name without extension)
    video          bytes    the source file name
    fps            float    frame rate of the stored frames
    sample_rate    int64    rate of the stored audio in Hz
    num_samples    int64    audio samples
    has_audio      int64    0 if the file had no audio track (silence)
    audio          bytes    mono PCM, int16 little-endian
    questions      bytes[]  one per annotation ("" for captions)
    answers        bytes[]  one per annotation (answer or caption)
    types          bytes[]  question type per annotation ("" if none)
feature_lists:
    frames         bytes    one PNG per frame, `[H, W, 3]`, frame `k`
                            shown at `k / fps` seconds

`convert` decodes videos on all cores (PyAV, in worker processes), writes
`shard-SSSSS-of-NNNNN.tfrecord` files and, next to each, a `.json` of the
inputs it skipped. A run that is stopped and started again keeps finished
shards. `report.json` lists every skipped annotation with its reason (a
missing, empty, corrupt or truncated file, any error while decoding, a
decoder that crashed its worker or ran past the timeout, or a bad
annotation line: not JSON, not UTF-8, a missing field), so none is
dropped silently and one damaged file costs only itself; clips without an
audio track are kept (silence) and listed under `no_audio`.
"""

import functools
import hashlib
import json
import os
import time

import numpy as np

from keras_mirasol.data.annotations import iter_records
from keras_mirasol.data.annotations import normalize
from keras_mirasol.data.media import MediaError
from keras_mirasol.data.media import finite_audio
from keras_mirasol.data.media import read_clip
from keras_mirasol.data.workers import isolated_pool

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
SETTINGS_FILE = "convert.json"
REPORT_FILE = "report.json"


def load_annotations(paths):
    """Group annotations by video.

    Args:
        paths: list of annotation files (see `keras_mirasol.data.annotations`).

    Returns:
        `(clips, skipped)`: `clips` is a list of `(video, [annotation])` in
        order of first appearance; `skipped` lists `{"input", "reason"}` of
        entries that could not be read.
    """
    clips, skipped = {}, []
    for path in paths:
        for location, record, error in iter_records(path):
            if error is None:
                try:
                    record = normalize(record)
                except ValueError as bad:
                    error = str(bad)
            if error is not None:
                skipped.append({"input": location, "reason": error})
                continue
            record["source"] = location
            clips.setdefault(record["video"], []).append(record)
    return list(clips.items()), skipped


def find_video(videos_dir, name):
    """The file in `videos_dir` that annotation video `name` refers to."""
    path = os.path.join(videos_dir, name)
    if os.path.isfile(path):
        return path
    stem = os.path.splitext(name)[0]
    stems = [stem] + ([f"video{stem}"] if stem.isdigit() else [])
    for stem in stems:
        for extension in VIDEO_EXTENSIONS:
            if os.path.isfile(os.path.join(videos_dir, stem + extension)):
                return os.path.join(videos_dir, stem + extension)
    return None


def _file_digest(paths):
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def _bytes_feature(values):
    import tensorflow as tf

    return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))


def serialize_clip(clip, annotations, clip_id, video_name):
    """A `tf.train.SequenceExample` (serialized) for one decoded clip."""
    import tensorflow as tf

    def text(key):
        return _bytes_feature([a[key].encode("utf-8") for a in annotations])

    audio = np.clip(finite_audio(np.asarray(clip["audio"], np.float32)), -1, 1)
    pcm = np.round(audio * 32767)
    context = {
        "clip_id": _bytes_feature([clip_id.encode("utf-8")]),
        "video": _bytes_feature([video_name.encode("utf-8")]),
        "fps": tf.train.Feature(
            float_list=tf.train.FloatList(value=[clip["fps"]])
        ),
        "sample_rate": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[clip["sample_rate"]])
        ),
        "num_samples": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[len(pcm)])
        ),
        "has_audio": tf.train.Feature(
            int64_list=tf.train.Int64List(value=[int(clip["has_audio"])])
        ),
        "audio": _bytes_feature([pcm.astype("<i2").tobytes()]),
        "questions": text("question"),
        "answers": text("answer"),
        "types": text("type"),
    }
    frames = tf.train.FeatureList(
        feature=[
            _bytes_feature([tf.io.encode_png(frame).numpy()])
            for frame in clip["video"]
        ]
    )
    example = tf.train.SequenceExample(
        context=tf.train.Features(feature=context),
        feature_lists=tf.train.FeatureLists(feature_list={"frames": frames}),
    )
    return example.SerializeToString()


def _decode_one(job, read=read_clip):
    """Worker (no TensorFlow): decode one video.

    Args:
        job: `(path or None, fps, image_size, sample_rate)`.
        read: the decoder, `read_clip` (tests pass another module-level
            function with its signature).

    Returns:
        `(clip, None)`, or `(None, reason)` for a missing file or any
        exception while decoding (PyAV raises more than `MediaError` on
        damaged files, e.g. `UnicodeDecodeError` for a corrupt metadata
        tag); the reason names the file.
    """
    path, fps, image_size, sample_rate = job
    if path is None:
        return None, "file not found"
    try:
        return read(path, fps, image_size, sample_rate), None
    except MediaError as error:
        return None, str(error)
    except Exception as error:
        return None, f"could not decode {path}: {type(error).__name__}: {error}"


def _failure_reason(path, failure, timeout):
    """The report's reason for a job that gave no result (`Failure`)."""
    if failure.kind == "died":
        return f"worker process died while decoding {path} ({failure.message})"
    if failure.kind == "timeout":
        return f"timed out after {timeout:g} s decoding {path}; worker killed"
    return f"could not decode {path}: {failure.message}"


def _shard_name(index, count):
    return f"shard-{index:05d}-of-{count:05d}"


def convert(
    videos_dir,
    annotation_paths,
    out_dir,
    fps=8,
    image_size=(32, 32),
    sample_rate=16000,
    clips_per_shard=256,
    workers=None,
    timeout=120,
    verbose=True,
    _read_clip=None,
):
    """Decode videos and write TFRecord shards of clips and annotations.

    Each video is decoded in a worker process of its own: a file that
    raises any exception, crashes its worker (e.g. a segfault in FFmpeg,
    an OOM kill) or decodes for longer than `timeout` is skipped and listed
    in the report with the reason; a fresh worker takes over and every
    other clip is written.

    Args:
        videos_dir: str. Folder of the video files annotations name.
        annotation_paths: str or list of str. JSONL, CSV or JSON files.
        out_dir: str. Output folder (created).
        fps: float. Frame rate to store. Defaults to `8`.
        image_size: int or `(height, width)`. Size of the stored frames.
            Defaults to `(32, 32)`.
        sample_rate: int. Audio rate to store in Hz. Defaults to `16000`.
        clips_per_shard: int. Clips per TFRecord file. Defaults to `256`.
        workers: int or None. Decoding processes. 1 decodes in this
            process (no `__main__` guard needed): any exception still skips
            only its file, but a crash ends the run and a hang cannot be
            cut short. Defaults to `None`, which means all cores.
        timeout: float or None. Seconds one file may take to decode
            before its worker is killed and the file skipped (needs
            `workers` >= 2); None: no limit. Defaults to `120`.
        verbose: bool. Show a progress bar. Defaults to `True`.
        _read_clip: for tests only: a module-level function used in place
            of `read_clip` in the workers. Defaults to `None`, which means
            `read_clip`.

    Returns:
        The report dict (also written to `out_dir/report.json`): counts of
        clips and annotations written and skipped, `skipped` (each with
        `input` and `reason`, and `video` for a file that could not be
        decoded), `no_audio` and the shard files.

    Raises:
        ValueError: `out_dir` holds shards written with other settings, or
            no annotation could be read at all.
    """
    if isinstance(annotation_paths, str):
        annotation_paths = [annotation_paths]
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    start_time = time.time()
    clips, skipped = load_annotations(annotation_paths)
    if not clips:
        raise ValueError(
            f"No usable annotation in {annotation_paths}; skipped: "
            f"{skipped[:5]}"
        )
    settings = {
        "videos_dir": os.path.abspath(videos_dir),
        "annotations": [os.path.abspath(p) for p in annotation_paths],
        "annotations_sha256": _file_digest(annotation_paths),
        "fps": fps,
        "image_size": list(image_size),
        "sample_rate": sample_rate,
        "clips_per_shard": clips_per_shard,
        "clips": len(clips),
    }
    os.makedirs(out_dir, exist_ok=True)
    settings_path = os.path.join(out_dir, SETTINGS_FILE)
    if os.path.exists(settings_path):
        with open(settings_path) as f:
            previous = json.load(f)
        changed = sorted(
            key
            for key in set(previous) | set(settings)
            if previous.get(key) != settings.get(key)
        )
        if changed:
            raise ValueError(
                f"{out_dir} holds shards written with other settings "
                f"(changed: {changed}; before: {previous}); use a new --out "
                "folder or delete it."
            )
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=1)

    num_shards = max(1, -(-len(clips) // clips_per_shard))
    progress = None
    if verbose:
        import keras

        progress = keras.utils.Progbar(len(clips), unit_name="clip")
    shard_reports = []
    decode = _decode_one
    if _read_clip is not None:
        decode = functools.partial(_decode_one, read=_read_clip)
    with isolated_pool(decode, workers, timeout) as pool:
        for shard in range(num_shards):
            shard_clips = clips[
                shard * clips_per_shard : (shard + 1) * clips_per_shard
            ]
            shard_reports.append(
                _write_shard(
                    pool,
                    os.path.join(out_dir, _shard_name(shard, num_shards)),
                    shard_clips,
                    videos_dir,
                    fps,
                    image_size,
                    sample_rate,
                    timeout,
                    progress,
                )
            )
    for shard_report in shard_reports:
        skipped.extend(shard_report["skipped"])
    report = {
        "clips": sum(r["clips"] for r in shard_reports),
        "annotations": sum(r["annotations"] for r in shard_reports),
        "skipped_clips": sum(r["skipped_clips"] for r in shard_reports),
        "skipped_annotations": len(skipped),
        "skipped": skipped,
        "no_audio": [v for r in shard_reports for v in r["no_audio"]],
        "shards": [
            _shard_name(i, num_shards) + ".tfrecord" for i in range(num_shards)
        ],
        "resumed_shards": sum(r["resumed"] for r in shard_reports),
        "seconds": round(time.time() - start_time, 1),
    }
    with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1)
    return report


def _write_shard(
    pool,
    base,
    clips,
    videos_dir,
    fps,
    image_size,
    sample_rate,
    timeout,
    progress,
):
    """Write one shard (atomically) unless a finished one is there."""
    import tensorflow as tf

    report_path = base + ".json"
    if os.path.exists(base + ".tfrecord") and os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        report["resumed"] = True
        if progress is not None:
            progress.add(len(clips))
        return report
    jobs = [
        (find_video(videos_dir, video), fps, image_size, sample_rate)
        for video, _ in clips
    ]
    report = {
        "clips": 0,
        "annotations": 0,
        "skipped_clips": 0,
        "skipped": [],
        "no_audio": [],
    }
    temporary = base + ".tfrecord.tmp"
    with tf.io.TFRecordWriter(temporary) as writer:
        results = pool.imap(jobs)
        for (video, notes), job, (result, failure) in zip(
            clips, jobs, results, strict=True
        ):
            clip, reason = result or (None, None)
            if failure is not None:
                reason = _failure_reason(job[0], failure, timeout)
            if clip is None:
                report["skipped_clips"] += 1
                report["skipped"].extend(
                    {"input": note["source"], "video": video, "reason": reason}
                    for note in notes
                )
            else:
                clip_id = notes[0]["clip_id"] or os.path.splitext(video)[0]
                writer.write(serialize_clip(clip, notes, clip_id, video))
                report["clips"] += 1
                report["annotations"] += len(notes)
                if not clip["has_audio"]:
                    report["no_audio"].append(video)
            if progress is not None:
                progress.add(1)
    os.replace(temporary, base + ".tfrecord")
    with open(report_path, "w") as f:
        json.dump(report, f, indent=1)
    report["resumed"] = False
    return report
