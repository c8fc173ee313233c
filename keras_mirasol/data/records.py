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
    start          float    where the clip starts in the source file
                            (seconds; 0 for a whole file)
    questions      bytes[]  one per annotation ("" for captions, labels)
    answers        bytes[]  one per annotation (answer, caption, label)
    types          bytes[]  question type per annotation ("" if none)
    tasks          bytes[]  per annotation: qa, choice, caption or class
                            (records without it: caption for an empty
                            question, else qa)
    choices        bytes[]  per annotation: the candidate answers joined
                            by U+001F ("" unless the task is choice)
feature_lists:
    frames         bytes    one PNG per frame, `[H, W, 3]`, frame `k`
                            shown at `k / fps` seconds

`convert` decodes videos on all cores (PyAV, in worker processes), writes
`shard-SSSSS-of-NNNNN.tfrecord` files and, next to each, a `.json` of the
inputs it skipped (`keras_mirasol.data.beam_convert.convert` writes the
same shards with an Apache Beam pipeline, on many machines). A run
that is stopped and started again keeps finished shards. `report.json`
lists every skipped annotation with its reason (a missing, empty, corrupt
or truncated file, any error while decoding, a decoder that crashed its
worker or ran past the timeout, or a bad annotation line: not JSON, not
UTF-8, a missing field), so none is dropped silently and one damaged file
costs only itself; clips without an audio track are kept (silence) and
listed under `no_audio`.

Annotations with a time range become clips cut from their video
(`read_clips`); the ranges of one video in a shard share one decoding
pass. Videos are looked up by name in `videos_dir`, then in its
sub-folders (`VideoFinder`).
"""

import functools
import hashlib
import json
import os
import time

import numpy as np

from keras_mirasol.data.annotations import CHOICE_SEPARATOR
from keras_mirasol.data.annotations import iter_records
from keras_mirasol.data.annotations import normalize
from keras_mirasol.data.media import MediaError
from keras_mirasol.data.media import finite_audio
from keras_mirasol.data.media import read_clip
from keras_mirasol.data.media import read_clips
from keras_mirasol.data.workers import isolated_pool

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
SETTINGS_FILE = "convert.json"
REPORT_FILE = "report.json"


def load_annotations(paths, splits=None):
    """Group annotations by clip: a video, or a time range of one.

    Args:
        paths: list of annotation files (see `keras_mirasol.data.annotations`).
        splits: list of str or None. Keep only annotations whose `split`
            field is one of these (VGGSound's CSV holds every split).
            Defaults to `None`, which keeps every annotation.

    Returns:
        `(clips, skipped)`: `clips` is a list of `((video, start, end),
        [annotation])`, the clips of one video together, in order of first
        appearance (`start` and `end` None for a whole video); `skipped`
        lists `{"input", "reason"}` of entries that could not be read.
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
            if splits is not None and record["split"] not in splits:
                continue
            record["source"] = location
            by_range = clips.setdefault(record["video"], {})
            key = (record["video"], record["start"], record["end"])
            by_range.setdefault(key, []).append(record)
    grouped = [item for ranges in clips.values() for item in ranges.items()]
    return grouped, skipped


class SettingsChanged(ValueError):
    """`convert`'s output folder holds shards written with other settings."""


class VideoFinder:
    """Finds the file an annotation's video name refers to.

    Tries, in `videos_dir`: the name; its stem with each video extension;
    MSRVTT's `video<number>` and ActivityNet's `v_<id>`; and then the same
    names in every sub-folder (NExT-QA keeps its videos in numbered
    folders), indexed once on the first name not found at the top.

    Args:
        videos_dir: str. The folder of videos.
    """

    def __init__(self, videos_dir):
        self.videos_dir = videos_dir
        self._index = None

    @staticmethod
    def _stems(name):
        stem = os.path.splitext(os.path.basename(name))[0]
        stems = [stem]
        if stem.isdigit():
            stems.append(f"video{stem}")
        if not stem.startswith("v_"):
            stems.append(f"v_{stem}")
        return stems

    def find(self, name):
        """The path of video `name`, or None.

        Args:
            name: str. The annotation's video field.

        Returns:
            str or None.
        """
        path = os.path.join(self.videos_dir, name)
        if os.path.isfile(path):
            return path
        for stem in self._stems(name):
            for extension in VIDEO_EXTENSIONS:
                path = os.path.join(self.videos_dir, stem + extension)
                if os.path.isfile(path):
                    return path
        if self._index is None:
            self._index = self._build_index()
        for stem in self._stems(name):
            if stem in self._index:
                return self._index[stem]
        return None

    def _build_index(self):
        """Video files below the top folder, by stem (the first in sorted
        order where two share one)."""
        index = {}
        for root, folders, files in os.walk(self.videos_dir):
            folders.sort()
            if root == self.videos_dir:
                continue
            for file in sorted(files):
                stem, extension = os.path.splitext(file)
                if extension.lower() in VIDEO_EXTENSIONS:
                    index.setdefault(stem, os.path.join(root, file))
        return index


def find_video(videos_dir, name):
    """The file in `videos_dir` (or a sub-folder) that annotation video
    `name` refers to, or None (see `VideoFinder`)."""
    return VideoFinder(videos_dir).find(name)


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

    def text(key, default=""):
        return _bytes_feature(
            [str(a.get(key, default)).encode("utf-8") for a in annotations]
        )

    choices = [
        CHOICE_SEPARATOR.join(a.get("choices") or ()) for a in annotations
    ]
    tasks = [
        a.get("task") or ("caption" if not a["question"] else "qa")
        for a in annotations
    ]

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
        "tasks": _bytes_feature([t.encode("utf-8") for t in tasks]),
        "choices": _bytes_feature([c.encode("utf-8") for c in choices]),
        "start": tf.train.Feature(
            float_list=tf.train.FloatList(value=[clip.get("start", 0.0)])
        ),
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


def decode_job(job, read=read_clip):
    """Worker (no TensorFlow): decode one video's clips.

    Args:
        job: `(path or None, ranges, fps, image_size, sample_rate)`;
            `ranges` lists a `(start, end)` in seconds per clip, or is
            `[None]` for the whole file.
        read: the whole-file decoder, `read_clip` (tests pass another
            module-level function with its signature).

    Returns:
        `(outcomes, None)` with one `(clip, None)` or `(None, reason)` per
        range, or `(None, reason)` for a missing file or any exception
        while decoding (PyAV raises more than `MediaError` on damaged
        files, e.g. `UnicodeDecodeError` for a corrupt metadata tag); the
        reason names the file.
    """
    path, ranges, fps, image_size, sample_rate = job
    if path is None:
        return None, "file not found"
    try:
        if ranges == [None]:
            return [(read(path, fps, image_size, sample_rate), None)], None
        clips = read_clips(
            path,
            [(0.0, None) if r is None else r for r in ranges],
            fps,
            image_size,
            sample_rate,
        )
    except MediaError as error:
        return None, str(error)
    except Exception as error:
        return None, f"could not decode {path}: {type(error).__name__}: {error}"
    return [
        (None, str(c)) if isinstance(c, MediaError) else (c, None)
        for c in clips
    ], None


def _failure_reason(path, failure, timeout):
    """The report's reason for a job that gave no result (`Failure`)."""
    if failure.kind == "died":
        return f"worker process died while decoding {path} ({failure.message})"
    if failure.kind == "timeout":
        return f"timed out after {timeout:g} s decoding {path}; worker killed"
    return f"could not decode {path}: {failure.message}"


def _clip_id(video, notes, start, end):
    """The annotation's `clip_id`, else the video's stem (and range)."""
    if notes[0]["clip_id"]:
        return notes[0]["clip_id"]
    stem = os.path.splitext(video)[0]
    if start is None:
        return stem
    return f"{stem}_{start:g}_{'end' if end is None else format(end, 'g')}"


def _shard_name(index, count):
    return f"shard-{index:05d}-of-{count:05d}"


def _check_settings(out_dir, settings):
    """Write `out_dir/convert.json`, refusing a folder of other settings."""
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
            raise SettingsChanged(
                f"{out_dir} holds shards written with other settings "
                f"(changed: {changed}; before: {previous}); use a new --out "
                "folder or delete it."
            )
    with open(settings_path, "w") as f:
        json.dump(settings, f, indent=1)


def plan_conversion(
    videos_dir,
    annotation_paths,
    out_dir,
    fps=8,
    image_size=(32, 32),
    sample_rate=16000,
    clips_per_shard=256,
    splits=None,
    max_seconds=None,
):
    """Read the annotations and plan the shards of a conversion.

    Shared by `convert` and the Apache Beam pipeline
    (`keras_mirasol.data.beam_convert`), so both write the same shards.
    Writes `out_dir/convert.json` (the settings).

    Args:
        videos_dir: str. Folder of the video files annotations name.
        annotation_paths: str or list of str. JSONL, CSV or JSON files.
        out_dir: str. Output folder (created).
        fps: float. Frame rate to store. Defaults to `8`.
        image_size: int or `(height, width)`. Size of the stored frames.
            Defaults to `(32, 32)`.
        sample_rate: int. Audio rate to store in Hz. Defaults to `16000`.
        clips_per_shard: int. Clips per TFRecord file. Defaults to `256`.
        splits: str, list of str or None. Keep only annotations whose
            `split` field is one of these. Defaults to `None` (all).
        max_seconds: float or None. Store at most this many seconds of
            each clip. Defaults to `None` (whole clips).

    Returns:
        `(shards, skipped)`: `shards` lists, per shard, a dict with `base`
        (the shard's path without extension), `clips` (its number of
        clips) and `jobs` (one decoding job per video file: a dict with
        `job`, the arguments of the decoder, and `entries`, the
        `(index, ((video, start, end), annotations))` of its clips);
        `skipped` lists the annotation lines that could not be read.

    Raises:
        SettingsChanged: `out_dir` holds shards written with other
            settings (a `ValueError`).
        ValueError: no annotation could be read at all, or a bad
            `max_seconds`.
    """
    if isinstance(annotation_paths, str):
        annotation_paths = [annotation_paths]
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    if isinstance(splits, str):
        splits = [splits]
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(
            f"max_seconds={max_seconds}: give a positive number of seconds, "
            "or None to store whole clips."
        )
    clips, skipped = load_annotations(annotation_paths, splits)
    if not clips:
        in_splits = f" in splits {splits}" if splits is not None else ""
        raise ValueError(
            f"No usable annotation{in_splits} in {annotation_paths}; "
            f"skipped: {skipped[:5]}"
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
    if splits is not None:
        settings["splits"] = sorted(splits)
    if max_seconds is not None:
        settings["max_seconds"] = max_seconds
    _check_settings(out_dir, settings)
    num_shards = max(1, -(-len(clips) // clips_per_shard))
    finder = VideoFinder(videos_dir)
    shards = []
    for shard in range(num_shards):
        first = shard * clips_per_shard
        shard_clips = clips[first : first + clips_per_shard]
        shards.append(
            {
                "base": os.path.join(out_dir, _shard_name(shard, num_shards)),
                "clips": len(shard_clips),
                "jobs": _plan_jobs(
                    finder,
                    list(enumerate(shard_clips, first)),
                    fps,
                    image_size,
                    sample_rate,
                    max_seconds,
                ),
            }
        )
    return shards, skipped


def _plan_jobs(finder, entries, fps, image_size, sample_rate, max_seconds):
    """One decoding job per video file: its clips' ranges in one pass."""
    groups = {}
    for index, ((video, start, end), notes) in entries:
        path = finder.find(video)
        time_range = None if start is None else (start, end)
        if path is None and notes[0]["precut"]:
            # VGGSound's downloads hold only the range, as <id>_<start>.
            path = finder.find(notes[0]["precut"])
            if path is not None:
                time_range = (0.0, end - start)
        if max_seconds is not None:
            begin, stop = time_range or (0.0, None)
            stop = begin + max_seconds if stop is None else stop
            time_range = (begin, min(stop, begin + max_seconds))
        key = path if path is not None else ("missing", index)
        groups.setdefault(key, []).append(
            (time_range, (index, ((video, start, end), notes)))
        )
    return [
        {
            "job": (
                None if isinstance(key, tuple) else key,
                [time_range for time_range, _ in members],
                fps,
                tuple(image_size),
                sample_rate,
            ),
            "entries": [entry for _, entry in members],
        }
        for key, members in groups.items()
    ]


def encode_job(entries, path, result, failure, timeout):
    """Serialize the clips of one decoding job, or say why they are lost.

    Args:
        entries: the job's `(index, ((video, start, end), annotations))`.
        path: str or None. The job's video file.
        result: what `decode_job` returned, or None.
        failure: a `Failure` of the worker, or None.
        timeout: float or None. The decoding timeout (for the reason).

    Returns:
        One dict per entry, in order: `index`, `record` (the serialized
        clip, or None), `skipped` (the report's entries for a lost clip),
        `annotations` (count), `video` and `has_audio`.
    """
    outcomes, reason = result or (None, None)
    if failure is not None:
        reason = _failure_reason(path, failure, timeout)
    if outcomes is None:
        outcomes = [(None, reason)] * len(entries)
    encoded = []
    for (index, ((video, start, end), notes)), (clip, why) in zip(
        entries, outcomes, strict=True
    ):
        item = {
            "index": index,
            "record": None,
            "skipped": [],
            "annotations": len(notes),
            "video": video,
            "has_audio": True,
        }
        if clip is None:
            item["skipped"] = [
                {"input": note["source"], "video": video, "reason": why}
                for note in notes
            ]
        else:
            clip["start"] = start or 0.0
            item["record"] = serialize_clip(
                clip, notes, _clip_id(video, notes, start, end), video
            )
            item["has_audio"] = bool(clip["has_audio"])
        encoded.append(item)
    return encoded


def _empty_shard_report():
    """A shard's report before any clip: counts at 0, empty lists."""
    return {
        "clips": 0,
        "annotations": 0,
        "skipped_clips": 0,
        "skipped": [],
        "no_audio": [],
    }


def _add_to_shard_report(report, item):
    """Add one `encode_job` item to a shard's report."""
    if item["record"] is None:
        report["skipped_clips"] += 1
        report["skipped"].extend(item["skipped"])
        return
    report["clips"] += 1
    report["annotations"] += item["annotations"]
    if not item["has_audio"]:
        report["no_audio"].append(item["video"])


def finished_shard_report(base):
    """The report of a shard already written (and resumed), or None."""
    report_path = base + ".json"
    if os.path.exists(base + ".tfrecord") and os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        report["resumed"] = True
        return report
    return None


def write_shard_items(base, items):
    """Write a shard from `encode_job` items, in their order; count them.

    Args:
        base: str. The shard's path without extension.
        items: iterable of `encode_job` items (a generator is consumed as
            the records are written).

    Returns:
        dict: the shard's report, also written as `base + ".json"`.
    """
    report = _empty_shard_report()

    def records():
        for item in items:
            _add_to_shard_report(report, item)
            if item["record"] is not None:
                yield item["record"]

    write_shard_file(base, records(), report)
    return report


def write_shard_file(base, records, report):
    """Write a shard's records and its report, atomically.

    The `.tfrecord` is written under a temporary name and renamed, then
    its `.json` report: a shard with both files is finished.

    Args:
        base: str. The shard's path without extension.
        records: iterable of serialized records, in order.
        report: dict. The shard's report (written as `base + ".json"`).
    """
    import tensorflow as tf

    temporary = base + ".tfrecord.tmp"
    with tf.io.TFRecordWriter(temporary) as writer:
        for record in records:
            writer.write(record)
    os.replace(temporary, base + ".tfrecord")
    with open(base + ".json", "w") as f:
        json.dump(report, f, indent=1)


def final_report(out_dir, shards, skipped, shard_reports, start_time):
    """Sum the shards' reports into `out_dir/report.json`; return it."""
    skipped = list(skipped)
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
            os.path.basename(shard["base"]) + ".tfrecord" for shard in shards
        ],
        "resumed_shards": sum(r["resumed"] for r in shard_reports),
        "seconds": round(time.time() - start_time, 1),
    }
    with open(os.path.join(out_dir, REPORT_FILE), "w") as f:
        json.dump(report, f, indent=1)
    return report


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
    splits=None,
    max_seconds=None,
    _read_clip=None,
):
    """Decode videos and write TFRecord shards of clips and annotations.

    On this machine's cores; `keras_mirasol.data.beam_convert.convert`
    writes the same shards and report with an Apache Beam runner.

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
        splits: str, list of str or None. Keep only annotations whose
            `split` field is one of these (VGGSound's CSV lists every
            split). Defaults to `None`, which keeps every annotation.
        max_seconds: float or None. Store at most this many seconds of
            each clip, from its start: decoding stops there, so a long
            file costs the memory of that span only (the model's window
            is a few seconds). Defaults to `None`, which stores whole
            clips.
        _read_clip: for tests only: a module-level function used in place
            of `read_clip` in the workers. Defaults to `None`, which means
            `read_clip`.

    Returns:
        The report dict (also written to `out_dir/report.json`): counts of
        clips and annotations written and skipped, `skipped` (each with
        `input` and `reason`, and `video` for a file that could not be
        decoded), `no_audio` and the shard files.

    Raises:
        SettingsChanged: `out_dir` holds shards written with other
            settings (a `ValueError`).
        ValueError: no annotation could be read at all.
    """
    start_time = time.time()
    shards, skipped = plan_conversion(
        videos_dir,
        annotation_paths,
        out_dir,
        fps,
        image_size,
        sample_rate,
        clips_per_shard,
        splits,
        max_seconds,
    )
    decode = decode_job
    if _read_clip is not None:
        decode = functools.partial(decode_job, read=_read_clip)
    progress = None
    if verbose:
        import keras

        progress = keras.utils.Progbar(
            sum(shard["clips"] for shard in shards), unit_name="clip"
        )
    shard_reports = []
    with isolated_pool(decode, workers, timeout) as pool:
        for shard in shards:
            shard_reports.append(_write_shard(pool, shard, timeout, progress))
    return final_report(out_dir, shards, skipped, shard_reports, start_time)


def _write_shard(pool, shard, timeout, progress):
    """Write one shard unless a finished one is there; return its report."""
    report = finished_shard_report(shard["base"])
    if report is not None:
        if progress is not None:
            progress.add(shard["clips"])
        return report
    jobs = shard["jobs"]

    def items():
        results = pool.imap([job["job"] for job in jobs])
        for job, (result, failure) in zip(jobs, results, strict=True):
            for item in encode_job(
                job["entries"], job["job"][0], result, failure, timeout
            ):
                yield item
                if progress is not None:
                    progress.add(1)

    report = write_shard_items(shard["base"], items())
    report["resumed"] = False
    return report
