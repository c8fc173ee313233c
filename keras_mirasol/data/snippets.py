"""The tf.data snippet pipeline: TFRecords of clips to model-ready batches.

Each op is a small named function from a dict of tensors to a dict of
tensors (one clip or one question at a time), usable on its own:

    parse_clip        serialized SequenceExample -> encoded frames, PCM
                      audio, questions/answers/types, fps, sample_rate
    decode_frames     PNG/JPEG frames -> uint8 `video [F, H, W, 3]`
    decode_audio      int16 PCM -> float32 `audio [S]` in [-1, 1]
    to_sample_rate    resample `audio` to the model's rate
    sample_window     the model's time window (random offset for training,
                      centred for evaluation), the same span from video
                      and audio, `num_frames` frames
    resize            frames to the model's size, float32 in [0, 1]
    split_questions   one clip -> a dataset of one element per question

`snippet_dataset` chains them: parallel (`AUTOTUNE`), prefetched, and
deterministic for a seed (seeded shuffles, per-element stateless window
offsets). Its batches are the raw dicts that `MirasolCausalLM.fit`,
`evaluate` and `generate` take (`video`, `audio`, `prompts`,
`responses`); the task's `MirasolCausalLMPreprocessor` tokenizes and packs
the text and splits the window into snippets inside the model. Map the
preprocessor yourself (`ds.map(preprocessor)`) to get `(x, y,
sample_weight)` tensors.

Record schema: see `keras_mirasol.data.records`.
"""

import glob
import os

import numpy as np
import tensorflow as tf

from keras_mirasol.data.annotations import CHOICE_SEPARATOR
from keras_mirasol.data.record_io import BadRecord
from keras_mirasol.data.record_io import DamagedRecords
from keras_mirasol.data.record_io import is_intact
from keras_mirasol.data.record_io import read_records
from keras_mirasol.layers.clip_ops import fit_clip
from keras_mirasol.layers.clip_ops import resample_audio
from keras_mirasol.layers.clip_ops import resize_frames

CONTEXT_FEATURES = {
    "clip_id": tf.io.FixedLenFeature([], tf.string),
    "video": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "fps": tf.io.FixedLenFeature([], tf.float32),
    "sample_rate": tf.io.FixedLenFeature([], tf.int64),
    "num_samples": tf.io.FixedLenFeature([], tf.int64),
    "has_audio": tf.io.FixedLenFeature([], tf.int64),
    "audio": tf.io.FixedLenFeature([], tf.string),
    "questions": tf.io.VarLenFeature(tf.string),
    "answers": tf.io.VarLenFeature(tf.string),
    "types": tf.io.VarLenFeature(tf.string),
    "tasks": tf.io.VarLenFeature(tf.string),
    "choices": tf.io.VarLenFeature(tf.string),
}
# Per-question texts of a parsed clip, and their names once split.
QUESTION_KEYS = {
    "questions": "prompts",
    "answers": "responses",
    "types": "types",
    "tasks": "tasks",
    "choices": "choices",
}
SEQUENCE_FEATURES = {"frames": tf.io.FixedLenSequenceFeature([], tf.string)}


def record_files(path):
    """TFRecord files of `path`: a folder written by `convert`, a glob, a
    file, or a list of these; sorted. Raises `ValueError` if none."""
    paths = [path] if isinstance(path, str) else list(path)
    files = []
    for item in paths:
        if os.path.isdir(item):
            files += glob.glob(os.path.join(item, "*.tfrecord"))
        else:
            files += glob.glob(item)
    if not files:
        raise ValueError(
            f"No TFRecord files at {path}: give a folder written by "
            "`keras-mirasol convert`, a glob or a list of .tfrecord files."
        )
    return sorted(files)


def record_dataset(files, damaged=None):
    """Serialized records of TFRecord files, past damaged records.

    Like `tf.data.TFRecordDataset(files)` (files one after the other, in
    order), but a record whose checksum fails or that the end of its file
    cuts short is skipped and noted, and the good records after it are
    read; `TFRecordDataset` would stop the pipeline with a
    `DataLossError`. Each file is checked once when the dataset is made
    (`record_io.is_intact`: a read at disk speed, remembered for the
    process); intact files are read by `TFRecordDataset` (C++), damaged
    ones by `record_io.read_records` (Python).

    Args:
        files: str or list of str. TFRecord files (uncompressed).
        damaged: `DamagedRecords` or None. Collects each damaged record
            met, once, and logs it. Defaults to `None`, which means a
            collector of this dataset's own (the records are still
            logged).

    Returns:
        `tf.data.Dataset` of string scalars.
    """
    if damaged is None:
        damaged = DamagedRecords()
    if isinstance(files, str):
        files = [files]
    files, read = _files_and_reader(files, damaged)
    return files.flat_map(read)


def _files_and_reader(files, damaged):
    """tf.data of the files, and the function that reads one of its
    elements: `TFRecordDataset` if every file is intact
    (`record_io.is_intact`), else `_file_dataset` (the same for intact
    files, Python for damaged ones). With the Python reader in it, the
    training pipeline's batches came slower even on intact files
    (`tools/reader_bench.py`), so it is there only when a file needs
    it."""
    files = list(files)
    intact = [is_intact(path) for path in files]
    if all(intact):
        return tf.data.Dataset.from_tensor_slices(files), (
            tf.data.TFRecordDataset
        )
    return tf.data.Dataset.from_tensor_slices((files, intact)), (
        lambda path, intact: _file_dataset(path, intact, damaged)
    )


def _file_dataset(path, intact, damaged):
    """tf.data: the good records of one file; `TFRecordDataset` reads an
    intact file, `_file_records` a damaged one."""
    return tf.data.Dataset.choose_from_datasets(
        [tf.data.TFRecordDataset(path), _file_records(path, damaged)],
        tf.data.Dataset.from_tensors(tf.cast(~intact, tf.int64)).repeat(),
        stop_on_empty_dataset=True,
    )


@tf.autograph.experimental.do_not_convert
def _file_records(path, damaged):
    """tf.data: the good records of one file (a tensor path)."""

    def generate(path):
        try:
            for item in read_records(path):
                if isinstance(item, BadRecord):
                    damaged.add(item)
                else:
                    yield item[1]
        except FileNotFoundError as error:
            raise FileNotFoundError(
                f"{error.filename}: a record file is gone since the dataset "
                "was made."
            ) from error

    return tf.data.Dataset.from_generator(
        generate,
        args=(path,),
        output_signature=tf.TensorSpec([], tf.string),
    )


def parse_clip(serialized):
    """A serialized clip to a dict of (still encoded) tensors.

    Returns:
        dict with `frames` string `[F]`, `audio_pcm` string, `questions`,
        `answers`, `types`, `tasks`, `choices` string `[Q]` (see
        `keras_mirasol.data.records`), `clip_id` string, `fps` float32,
        `sample_rate` int32, `has_audio` bool.
    """
    context, sequence = tf.io.parse_single_sequence_example(
        serialized, CONTEXT_FEATURES, SEQUENCE_FEATURES
    )
    questions = tf.sparse.to_dense(context["questions"])
    count = tf.size(questions)
    # Records written before tasks and choices existed: captions have an
    # empty question, everything else is open-ended.
    derived_tasks = tf.where(tf.equal(questions, ""), "caption", "qa")
    return {
        "frames": sequence["frames"],
        "audio_pcm": context["audio"],
        "questions": questions,
        "answers": tf.sparse.to_dense(context["answers"]),
        "types": tf.sparse.to_dense(context["types"]),
        "tasks": _or_default(context["tasks"], count, derived_tasks),
        "choices": _or_default(context["choices"], count, tf.fill([count], "")),
        "clip_id": context["clip_id"],
        "fps": context["fps"],
        "sample_rate": tf.cast(context["sample_rate"], tf.int32),
        "has_audio": context["has_audio"] > 0,
    }


def _or_default(sparse, count, default):
    """A per-question feature, or `default` where the record has none."""
    dense = tf.sparse.to_dense(sparse)
    return tf.cond(
        tf.equal(tf.size(dense), count), lambda: dense, lambda: default
    )


def record_texts(path, damaged=None):
    """Every question, answer and candidate answer in the records at `path`.

    Args:
        path: records written by `convert`: a folder, glob, file, or list
            of these (see `record_files`).
        damaged: `DamagedRecords` or None. Collects the damaged records
            skipped (`record_dataset`). Defaults to `None`.

    Yields:
        str: each non-empty question and answer, then each candidate
        answer of the clip's multiple-choice questions, clip by clip in
        file order.
    """
    ds = record_dataset(record_files(path), damaged).map(parse_clip)
    for clip in ds.as_numpy_iterator():
        for key in ("questions", "answers"):
            for text in clip[key]:
                if text:
                    yield text.decode("utf-8")
        for joined in clip["choices"]:
            if joined:
                yield from joined.decode("utf-8").split(CHOICE_SEPARATOR)


def count_questions(path, damaged=None):
    """Number of questions (annotations) in the records at `path`.

    Args:
        path: records written by `convert`: a folder, glob, file, or list
            of these (see `record_files`).
        damaged: `DamagedRecords` or None. Collects the damaged records
            skipped (`record_dataset`), whose questions are not counted.
            Defaults to `None`.

    Returns:
        int.
    """
    ds = record_dataset(record_files(path), damaged).map(
        lambda serialized: tf.size(parse_clip(serialized)["questions"])
    )
    return int(ds.reduce(0, lambda total, n: total + n))


def decode_frames(x):
    """`frames` (encoded images `[F]`) -> `video` uint8 `[F, H, W, 3]`."""
    x = dict(x)
    frames = x.pop("frames")
    x["video"] = tf.map_fn(
        lambda image: tf.io.decode_image(
            image, channels=3, expand_animations=False
        ),
        frames,
        fn_output_signature=tf.TensorSpec([None, None, 3], tf.uint8),
    )
    return x


def decode_audio(x):
    """`audio_pcm` (int16 bytes) -> `audio` float32 `[S]` in [-1, 1]."""
    x = dict(x)
    pcm = tf.io.decode_raw(x.pop("audio_pcm"), tf.int16, little_endian=True)
    x["audio"] = tf.maximum(tf.cast(pcm, tf.float32) / 32767.0, -1.0)
    return x


def to_sample_rate(x, sample_rate):
    """Resample `audio` from `x["sample_rate"]` to `sample_rate`."""
    x = dict(x)
    x["audio"] = tf.cond(
        tf.equal(x["sample_rate"], sample_rate),
        lambda: x["audio"],
        lambda: resample_audio(x["audio"], x["sample_rate"], sample_rate),
    )
    x["sample_rate"] = tf.constant(sample_rate, tf.int32)
    return x


def sample_window(x, num_frames, num_samples, offset=0.5):
    """Cut the model's window from `video` and `audio` (same time span).

    Args:
        x: dict with `video` `[F, H, W, 3]` and `audio` `[S]` at the model's
            rate, covering the same time.
        num_frames: int. Frames to keep.
        num_samples: int. Audio samples to keep (the model's span).
        offset: float or scalar tensor in [0, 1]: the window's place in a
            longer clip (0.5 = centred; draw it for training).

    Returns:
        `x` with `video [num_frames, H, W, 3]` and `audio [num_samples]`.
    """
    x = dict(x)
    x["video"], x["audio"] = fit_clip(
        x["video"], x["audio"], num_frames, num_samples, offset
    )
    return x


def resize(x, frame_size):
    """`video` to float32 `[F, height, width, 3]` in [0, 1]."""
    x = dict(x)
    x["video"] = resize_frames(x["video"], frame_size)
    return x


def split_questions(x):
    """One clip with `questions [Q]` -> a dataset of `Q` elements.

    Each element has the clip's tensors and `prompts`, `responses`,
    `types`, `tasks`, `choices` scalars for one question.
    """
    media = {k: v for k, v in x.items() if k not in QUESTION_KEYS}
    texts = {name: x[key] for key, name in QUESTION_KEYS.items() if key in x}
    return tf.data.Dataset.from_tensor_slices(texts).map(
        lambda text: dict(media, **text)
    )


def choose_questions(x, k, seed):
    """Keep `k` of a clip's questions, in a random order.

    Without repetition while the clip has at least `k`; a clip with fewer
    repeats its (shuffled) questions in turn, so every clip fills `k`
    rows of a batch.

    Args:
        x: dict with `questions`, `answers`, `types` (and `tasks`,
            `choices`) string `[Q]`, `Q >= 1`.
        k: int.
        seed: int64 scalar tensor: the stateless seed of this clip's draw.

    Returns:
        `x` without `questions` and `answers`, with `prompts`, `responses`
        and `types` (and `tasks`, `choices`) string `[k]`.
    """
    x = dict(x)
    count = tf.size(x["questions"])
    scores = tf.random.stateless_uniform(
        [count], seed=tf.stack([seed, tf.constant(7, tf.int64)])
    )
    order = tf.argsort(scores)
    picked = tf.gather(order, tf.range(k) % count)
    for key, name in QUESTION_KEYS.items():
        if key in x:
            x[name] = tf.gather(x.pop(key), picked)
    return x


def flatten_questions(x):
    """A batch of clips with `[B, k]` texts -> `[B * k]` texts."""
    x = dict(x)
    for key in ("prompts", "responses", "types", "tasks", "choices"):
        if key in x:
            x[key] = tf.reshape(x[key], [-1])
    return x


MODEL_KEYS = ("video", "audio", "prompts", "responses")
# What `keep_metadata` keeps besides the model's inputs.
METADATA_KEYS = ("types", "tasks", "choices", "clip_id", "has_audio")


def _clip_stream(files, training, seed, shuffle_clips, repeat, damaged):
    """Serialized clips in the pipeline's order, numbered; damaged records
    are skipped and noted in `damaged` (`record_dataset`).

    Returns:
        `tf.data.Dataset` of `(position int64, serialized string)`.
    """
    ds, read = _files_and_reader(files, damaged)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        read,
        # Evaluation reads the files one after the other, in order.
        cycle_length=min(len(files), 4) if training else 1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    if training:
        ds = ds.shuffle(shuffle_clips, seed=seed + 1)
    if repeat:
        ds = ds.repeat()
    return ds.enumerate()


def _parse_with_position(position, serialized):
    return dict(parse_clip(serialized), position=position)


def _question_count(serialized):
    context, _ = tf.io.parse_single_sequence_example(
        serialized, {"questions": CONTEXT_FEATURES["questions"]}
    )
    return tf.size(context["questions"], out_type=tf.int64)


def consumed_clips(
    path,
    elements,
    training=True,
    seed=0,
    repeat=True,
    shuffle_clips=1024,
    shuffle_questions=256,
    questions_per_clip=None,
    damaged=None,
):
    """Clips whose questions all come out in a pipeline's first elements.

    Replays `snippet_dataset`'s shuffles on question counts alone (the
    records are parsed for their questions, no media is decoded): the
    same seed orders the same elements the same way whatever they hold.
    `snippet_dataset(start_batch=...)` decodes none of these clips.

    Args:
        path: the records (see `record_files`).
        elements: int. Elements of the pipeline before its window and
            batching: questions, or clips with `questions_per_clip`.
        training: bool. As in `snippet_dataset`. Defaults to `True`.
        seed: int. As in `snippet_dataset`. Defaults to `0`.
        repeat: bool. As in `snippet_dataset`. Defaults to `True`.
        shuffle_clips: int. As in `snippet_dataset`. Defaults to `1024`.
        shuffle_questions: int. As in `snippet_dataset`.
            Defaults to `256`.
        questions_per_clip: int or None. As in `snippet_dataset`.
            Defaults to `None`.
        damaged: `DamagedRecords` or None. As in `snippet_dataset`.
            Defaults to `None`.

    Returns:
        int64 array `[R, 2]`: sorted, disjoint `[start, end)` ranges of clip
        positions in the pipeline's stream of clips (after its shuffle and
        repeat): the clips fully consumed by the first `elements`.
    """
    files = path if isinstance(path, list) else record_files(path)
    if damaged is None:
        damaged = DamagedRecords()
    ds = _clip_stream(files, training, seed, shuffle_clips, repeat, damaged)
    ds = ds.map(
        lambda p, s: (p, _question_count(s)),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if questions_per_clip is not None:
        ds = ds.filter(lambda p, q: q > 0)
    else:
        ds = ds.flat_map(
            lambda p, q: tf.data.Dataset.from_tensors((p, q)).repeat(q)
        )
        if training:
            ds = ds.shuffle(shuffle_questions, seed=seed + 2)
    positions, counts = [], []
    for p, q in ds.take(elements).batch(65536).as_numpy_iterator():
        positions.append(p)
        counts.append(q)
    if not positions:
        return np.zeros([0, 2], np.int64)
    positions = np.concatenate(positions)
    counts = np.concatenate(counts)
    seen, first, taken = np.unique(
        positions, return_index=True, return_counts=True
    )
    if questions_per_clip is None:
        done = seen[taken == counts[first]]
    else:
        done = seen
    # Runs of consecutive positions to [start, end) ranges.
    breaks = np.flatnonzero(np.diff(done) != 1) + 1
    starts = np.concatenate([done[:1], done[breaks]])
    ends = np.concatenate([done[breaks - 1], done[-1:]]) + 1
    return np.stack([starts, ends], axis=1).astype(np.int64)


def _needed_predicate(ranges):
    """`position -> bool` tensor: the position lies in none of `ranges`."""
    starts = tf.constant(ranges[:, 0], tf.int64)
    ends = tf.constant(ranges[:, 1], tf.int64)

    def needed(position):
        i = tf.searchsorted(starts, position[None], side="right")[0] - 1
        inside = tf.logical_and(
            i >= 0, position < tf.gather(ends, tf.maximum(i, 0))
        )
        return tf.logical_not(inside)

    return needed


def _undecoded(x, sample_rate):
    """What `decode` gives, with empty media (a clip to be skipped)."""
    x = {key: value for key, value in x.items() if key != "frames"}
    x["video"] = tf.zeros([0, 0, 0, 3], tf.uint8)
    x["audio"] = tf.zeros([0], tf.float32)
    x["sample_rate"] = tf.constant(sample_rate, tf.int32)
    return x


def snippet_dataset(
    path,
    preprocessor,
    batch_size=32,
    training=False,
    seed=0,
    repeat=None,
    shuffle_clips=1024,
    shuffle_questions=256,
    keep_metadata=False,
    drop_remainder=None,
    cache=False,
    threads=None,
    questions_per_clip=None,
    start_batch=0,
    damaged=None,
):
    """Batches of clips and questions from TFRecords, ready for `fit`.

    Args:
        path: folder written by `convert`, glob, file, or list of these.
        preprocessor: `MirasolCausalLMPreprocessor` (or anything with
            `num_frames`, `frame_size`, `num_audio_samples`,
            `audio_sample_rate`): the model's clip shape.
        batch_size: int. Questions per batch. Defaults to `32`.
        training: bool. Shuffle clips and questions (seeded), draw a
            random window per element, repeat forever; otherwise keep the
            file order, take the centred window, one pass.
            Defaults to `False`.
        seed: int. Seeds every random choice: the same seed gives the same
            batches. Defaults to `0`.
        repeat: bool or None. Repeat forever. Defaults to `None`, which
            means `training`.
        shuffle_clips: int. Shuffle buffer of serialized clips (training
            only). Defaults to `1024`.
        shuffle_questions: int. Shuffle buffer of decoded questions
            (training without `questions_per_clip` only).
            Defaults to `256`.
        keep_metadata: bool. Keep `types`, `tasks`, `choices` (a
            question's candidate answers joined by U+001F), `clip_id` and
            `has_audio` in the batches (for evaluation; `fit` needs only
            the model keys).
            Defaults to `False`.
        drop_remainder: bool or None. Drop the last, smaller batch.
            Defaults to `None`, which means `training`.
        cache: bool. Keep the decoded clips in memory after the first
            pass (about 180 KB per 2 s clip at 32x32 and 16 kHz): later
            epochs skip parsing and PNG decoding. For datasets that fit
            in RAM. `fit` takes one batch from a first iterator to build
            the model, then starts another: TensorFlow logs that "the
            calling iterator did not fully read the dataset being cached"
            for the first one, whose clips (a shuffle buffer's worth) are
            decoded once more; the second fills the cache. Defaults to
            `False`.
        threads: int or None. Size of the pipeline's own thread pool. On a
            small CPU host, 1 leaves the other cores to the model.
            Defaults to `None`, which means tf.data's shared pool, one
            thread per core.
        questions_per_clip: int or None. Training only: each batch holds
            `batch_size / k` clips with `k` of each clip's questions
            (`choose_questions`), so the model encodes every clip once
            for `k` questions (see `MirasolBackbone`). Defaults to `None`:
            one clip per question, questions shuffled across clips.
        start_batch: int. Training only: begin at this batch of the
            seeded sequence, as `.skip(start_batch)` would, without
            decoding the clips whose questions all fell in the skipped
            batches (`consumed_clips`); a resumed run continues with the
            batches an uninterrupted one would have seen. With `cache`,
            the first pass still decodes every clip (the cache needs
            them). Defaults to `0`.
        damaged: `DamagedRecords` or None. A record whose checksum fails,
            or that the end of its file cuts short (a damaged disk, an
            interrupted copy), is skipped, logged, and noted here once;
            the good records around it are all read (`record_dataset`).
            `keras-mirasol check-records --repair` rewrites such files.
            Defaults to `None`, which means a collector of this dataset's
            own (damaged records are still skipped and logged).

    Returns:
        `tf.data.Dataset` of dicts: `video` float32 `[B, N, H, W, 3]`,
        `audio` float32 `[B, S]`, `prompts` and `responses` string `[B]`
        (and metadata if asked); with `questions_per_clip=k`, `video` and
        `audio` have `B / k` clips.
    """
    k = questions_per_clip
    if k is not None:
        if not training:
            raise ValueError(
                "questions_per_clip is for training batches; evaluation "
                "and generation take one clip per question."
            )
        if k < 1 or batch_size % k:
            raise ValueError(
                f"questions_per_clip={k} must be >= 1 and divide "
                f"batch_size={batch_size} (each batch holds "
                "batch_size / questions_per_clip clips)."
            )
    if start_batch and not training:
        raise ValueError(
            f"start_batch={start_batch} is for training batches (a resumed "
            "run); evaluation reads the records once, from the start."
        )
    files = record_files(path)
    if damaged is None:
        damaged = DamagedRecords()
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    autotune = tf.data.AUTOTUNE
    num_frames = preprocessor.num_frames
    num_samples = preprocessor.num_audio_samples
    sample_rate = preprocessor.audio_sample_rate
    frame_size = tuple(preprocessor.frame_size)
    # Elements (questions, or clips with `questions_per_clip`) to skip.
    skip = start_batch * (batch_size // (k or 1))

    needed = None
    if skip and not cache:
        ranges = consumed_clips(
            files,
            skip,
            training=training,
            seed=seed,
            repeat=repeat,
            shuffle_clips=shuffle_clips,
            shuffle_questions=shuffle_questions,
            questions_per_clip=k,
            damaged=damaged,
        )
        if len(ranges):
            needed = _needed_predicate(ranges)

    def pipeline(_):
        ds = _clip_stream(
            files, training, seed, shuffle_clips, repeat and not cache, damaged
        )
        ds = ds.map(_parse_with_position, num_parallel_calls=autotune)
        ds = ds.map(decode_audio, num_parallel_calls=autotune)

        def decode(x):
            return decode_frames(to_sample_rate(x, sample_rate))

        if needed is None:
            ds = ds.map(decode, num_parallel_calls=autotune)
        else:
            # A clip whose questions all fall in the skipped batches is not
            # decoded: empty media stand in for it until the skip drops it.
            ds = ds.map(
                lambda x: tf.cond(
                    needed(x["position"]),
                    lambda: decode(x),
                    lambda: _undecoded(x, sample_rate),
                ),
                num_parallel_calls=autotune,
            )
        if cache:
            ds = ds.cache()
            if training:
                ds = ds.shuffle(shuffle_clips, seed=seed + 4)
            if repeat:
                ds = ds.repeat()
        if k is not None:
            # Clips without questions have nothing to train on.
            ds = ds.filter(lambda x: tf.size(x["questions"]) > 0)
            draws = tf.data.Dataset.random(seed=seed + 5)
            ds = tf.data.Dataset.zip(ds, draws).map(
                lambda x, draw: choose_questions(x, k, draw),
                num_parallel_calls=autotune,
            )
        else:
            ds = ds.flat_map(split_questions)
        if training and k is None:
            ds = ds.shuffle(shuffle_questions, seed=seed + 2)
        if training:
            # One stateless offset per element: the same for a given seed, no
            # matter how the parallel maps are scheduled.
            offsets = tf.data.Dataset.random(seed=seed + 3).map(
                lambda n: tf.cast(n % 1_000_003, tf.float32) / 1_000_002.0
            )
            ds = tf.data.Dataset.zip(ds, offsets).map(
                lambda x, offset: dict(x, offset=offset)
            )
        else:
            ds = ds.map(lambda x: dict(x, offset=tf.constant(0.5)))
        if skip:
            ds = ds.skip(skip)
        ds = ds.map(
            lambda x: sample_window(x, num_frames, num_samples, x["offset"]),
            num_parallel_calls=autotune,
        )
        ds = ds.map(
            lambda x: resize(x, frame_size), num_parallel_calls=autotune
        )
        keys = MODEL_KEYS + (METADATA_KEYS if keep_metadata else ())
        if not getattr(preprocessor, "use_audio", True):
            keys = tuple(key for key in keys if key != "audio")
        ds = ds.map(lambda x: {key: x[key] for key in keys})
        if k is None:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        else:
            ds = ds.batch(batch_size // k, drop_remainder=drop_remainder)
            ds = ds.map(flatten_questions)
        return ds

    if training:
        # Built inside `flat_map`, the seeded shuffles start over with each
        # iterator: every iteration gives the same batches (`fit` may take
        # one batch from a first iterator to build the model before it
        # trains on a second one; a resumed run must see what an
        # uninterrupted run saw).
        ds = tf.data.Dataset.range(1).flat_map(pipeline)
    else:
        ds = pipeline(None)
    if threads:
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        options.threading.max_intra_op_parallelism = 1
        ds = ds.with_options(options)
    return ds.prefetch(autotune)
