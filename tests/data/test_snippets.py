import json
import os
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

from keras_mirasol.data.record_io import DamagedRecords
from keras_mirasol.data.records import serialize_clip
from keras_mirasol.data.snippets import consumed_clips
from keras_mirasol.data.snippets import count_questions
from keras_mirasol.data.snippets import decode_audio
from keras_mirasol.data.snippets import decode_frames
from keras_mirasol.data.snippets import parse_clip
from keras_mirasol.data.snippets import record_files
from keras_mirasol.data.snippets import record_texts
from keras_mirasol.data.snippets import resize
from keras_mirasol.data.snippets import sample_window
from keras_mirasol.data.snippets import snippet_dataset
from keras_mirasol.data.snippets import split_questions
from keras_mirasol.data.snippets import to_sample_rate
from keras_mirasol.models import MirasolCausalLMPreprocessor
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models import train_tokenizer

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend

RATE = 8000
# Questions per clip; clips 0-2 go to a.tfrecord, 3-4 to b.tfrecord.
QUESTIONS = [3, 1, 2, 2, 3]
SILENT = 2  # the clip without an audio track


def question(clip, index):
    return f"question {index} about clip {clip}"


def answer(clip, index):
    return f"answer {index} of {clip}"


def numbered_clip(index, frames=12, questions=None):
    """Clip `index`: frame k is grey at `10 * index + k`, 8x8, 8 fps;
    audio is constant `0.1 * (index + 1)` (silence for the silent clip)."""
    levels = 10 * index + np.arange(frames)
    video = np.broadcast_to(
        levels[:, None, None, None].astype(np.uint8), (frames, 8, 8, 3)
    )
    samples = frames * RATE // 8
    has_audio = index != SILENT
    audio = np.full(samples, 0.1 * (index + 1) * has_audio, np.float32)
    clip = dict(
        video=video, audio=audio, fps=8.0, sample_rate=RATE, has_audio=has_audio
    )
    count = QUESTIONS[index] if questions is None else questions
    notes = [
        {
            "question": question(index, q),
            "answer": answer(index, q),
            "type": f"type{q}",
        }
        for q in range(count)
    ]
    return serialize_clip(clip, notes, f"clip{index}", f"clip{index}.mp4")


def timed_clip(frames=40):
    """5 s: frame k is grey at 5 * k; audio sample j is j / 40000."""
    video = np.broadcast_to(
        (5 * np.arange(frames))[:, None, None, None].astype(np.uint8),
        (frames, 4, 4, 3),
    )
    samples = frames * RATE // 8
    audio = (np.arange(samples) / samples).astype(np.float32)
    clip = dict(
        video=video, audio=audio, fps=8.0, sample_rate=RATE, has_audio=True
    )
    return serialize_clip(clip, [], "timed", "timed.mp4")


def write_records(path, serialized):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in serialized:
            writer.write(record)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("snippets") / "records"
    root.mkdir()
    write_records(root / "a.tfrecord", [numbered_clip(i) for i in range(3)])
    write_records(root / "b.tfrecord", [numbered_clip(i) for i in (3, 4)])
    (root / "report.json").write_text("{}")
    return root


def model(**overrides):
    """A preprocessor-like clip shape: 4 frames of 6x6, 0.5 s at 16 kHz."""
    settings = dict(
        num_frames=4,
        frame_size=(6, 6),
        num_audio_samples=8000,
        audio_sample_rate=16000,
        use_audio=True,
    )
    settings.update(overrides)
    return types.SimpleNamespace(**settings)


def decoded(serialized):
    return decode_audio(decode_frames(parse_clip(tf.constant(serialized))))


def all_questions(clips):
    return [
        question(clip, q).encode()
        for clip in clips
        for q in range(QUESTIONS[clip])
    ]


def prompts_of(batches):
    return [p for batch in batches for p in batch["prompts"].numpy()]


# --- the ops, one at a time ------------------------------------------------


def test_parse_clip():
    x = parse_clip(tf.constant(numbered_clip(4)))
    assert x["frames"].shape == (12,) and x["frames"].dtype == tf.string
    assert x["audio_pcm"].shape == () and x["audio_pcm"].dtype == tf.string
    assert len(x["audio_pcm"].numpy()) == 2 * 12000
    assert x["questions"].numpy().tolist() == all_questions([4])
    assert x["answers"].numpy().tolist() == [
        answer(4, q).encode() for q in range(3)
    ]
    assert x["types"].numpy().tolist() == [b"type0", b"type1", b"type2"]
    assert x["clip_id"].numpy() == b"clip4"
    assert x["fps"].dtype == tf.float32 and x["fps"].numpy() == 8.0
    assert x["sample_rate"].dtype == tf.int32
    assert x["sample_rate"].numpy() == RATE
    assert x["has_audio"].dtype == tf.bool and x["has_audio"].numpy()
    assert not parse_clip(tf.constant(numbered_clip(SILENT)))["has_audio"]


def test_decode_frames():
    x = decode_frames(parse_clip(tf.constant(numbered_clip(1))))
    assert "frames" not in x
    video = x["video"].numpy()
    assert video.shape == (12, 8, 8, 3) and video.dtype == np.uint8
    np.testing.assert_array_equal(video[:, 3, 5, 1], 10 + np.arange(12))
    # Other keys pass through.
    assert x["clip_id"].numpy() == b"clip1"


def test_decode_audio():
    pcm = np.array([0, 16384, -32768, 32767, -16384], "<i2").tobytes()
    x = decode_audio({"audio_pcm": tf.constant(pcm), "keep": tf.constant(1)})
    assert set(x) == {"audio", "keep"}
    assert x["audio"].dtype == tf.float32
    np.testing.assert_allclose(
        x["audio"].numpy(), [0, 0.5, -1, 1, -0.5], atol=1e-4
    )


def test_to_sample_rate():
    audio = np.sin(np.arange(800) / 7.0).astype(np.float32)
    x = {"audio": tf.constant(audio), "sample_rate": tf.constant(8000)}
    up = to_sample_rate(x, 16000)
    assert up["audio"].shape == (1600,)
    assert up["sample_rate"].numpy() == 16000
    assert up["sample_rate"].dtype == tf.int32
    # Every other sample lands on an original one; the rest interpolate.
    np.testing.assert_allclose(up["audio"].numpy()[::2], audio, atol=1e-6)
    middle = (audio[:-1] + audio[1:]) / 2
    np.testing.assert_allclose(up["audio"].numpy()[1:-1:2], middle, atol=1e-6)
    same = to_sample_rate(x, 8000)
    np.testing.assert_array_equal(same["audio"].numpy(), audio)
    down = to_sample_rate(x, 4000)
    assert down["audio"].shape == (400,)
    np.testing.assert_allclose(down["audio"].numpy(), audio[::2], atol=1e-6)


@pytest.mark.parametrize(
    "offset, first_frames",
    [(0.0, [1, 3, 5, 7]), (0.5, [17, 19, 21, 23]), (1.0, [33, 35, 37, 39])],
)
def test_sample_window_cuts_the_same_time_from_video_and_audio(
    offset, first_frames
):
    x = sample_window(decoded(timed_clip()), 4, 8000, offset)
    audio = x["audio"].numpy()
    assert audio.shape == (8000,) and x["video"].shape == (4, 4, 4, 3)
    # The audio tells each sample's time: sample j of the clip is j / 40000.
    start = int(round(audio[0] * 40000))
    np.testing.assert_allclose(audio * 40000, start + np.arange(8000), atol=2.0)
    if offset == 0.0:
        assert start == 0
    if offset == 1.0:
        assert start + 8000 == 40000
    # Frame n shows the centre of the n-th quarter of the audio window
    # (frame k of the clip covers samples [1000 k, 1000 (k + 1))).
    frames = x["video"].numpy()[:, 0, 0, 0] // 5
    expected = (start + (np.arange(4) + 0.5) * 2000) // 1000
    np.testing.assert_array_equal(frames, expected)
    assert frames.tolist() == first_frames


def test_sample_window_takes_a_tensor_offset():
    x = decoded(timed_clip())
    out = sample_window(x, 4, 8000, tf.constant(0.25))
    start = int(round(out["audio"].numpy()[0] * 40000))
    assert abs(start - 8000) <= 2
    assert (out["video"].numpy()[:, 0, 0, 0] // 5).tolist() == [9, 11, 13, 15]


def test_resize():
    x = decoded(numbered_clip(1))
    out = resize(x, (5, 3))
    video = out["video"].numpy()
    assert video.shape == (12, 5, 3, 3) and video.dtype == np.float32
    # Uniform frames stay uniform, scaled to [0, 1].
    np.testing.assert_allclose(
        video,
        np.broadcast_to(
            ((10 + np.arange(12)) / 255)[:, None, None, None], video.shape
        ),
        atol=1e-5,
    )
    assert out["clip_id"].numpy() == b"clip1"


def test_split_questions():
    x = decoded(numbered_clip(0))
    elements = list(split_questions(x))
    assert len(elements) == 3
    for q, element in enumerate(elements):
        assert element["prompts"].numpy() == question(0, q).encode()
        assert element["responses"].numpy() == answer(0, q).encode()
        assert element["types"].numpy() == f"type{q}".encode()
        assert "questions" not in element and "answers" not in element
        np.testing.assert_array_equal(element["video"], x["video"])
        np.testing.assert_array_equal(element["audio"], x["audio"])
        assert element["clip_id"].numpy() == b"clip0"


# --- snippet_dataset -------------------------------------------------------


def test_record_files(folder, tmp_path):
    a, b = str(folder / "a.tfrecord"), str(folder / "b.tfrecord")
    assert record_files(str(folder)) == [a, b]
    assert record_files(str(folder / "*.tfrecord")) == [a, b]
    assert record_files([b, a]) == [a, b]
    with pytest.raises(ValueError, match="No TFRecord files"):
        record_files(str(tmp_path))
    with pytest.raises(ValueError, match="No TFRecord files"):
        record_files(str(tmp_path / "missing-*.tfrecord"))


def test_eval_batches_have_the_model_shapes(folder):
    batches = list(snippet_dataset(str(folder), model(), batch_size=4))
    # 11 questions: batches of 4, 4 and 3 (nothing dropped).
    assert [len(b["prompts"]) for b in batches] == [4, 4, 3]
    for batch in batches:
        assert set(batch) == {"video", "audio", "prompts", "responses"}
        size = len(batch["prompts"])
        assert batch["video"].shape == (size, 4, 6, 6, 3)
        assert batch["video"].dtype == tf.float32
        assert batch["audio"].shape == (size, 8000)
        assert batch["audio"].dtype == tf.float32
        assert batch["prompts"].dtype == tf.string
        assert batch["responses"].dtype == tf.string


def test_eval_yields_every_question_once_in_file_order(folder):
    ds = snippet_dataset(
        str(folder / "a.tfrecord"), model(), batch_size=4, keep_metadata=True
    )
    batches = list(ds)
    assert prompts_of(batches) == all_questions([0, 1, 2])
    responses = [r for b in batches for r in b["responses"].numpy()]
    assert responses == [
        answer(c, q).encode() for c in range(3) for q in range(QUESTIONS[c])
    ]
    # Evaluation takes the centred window: 0.5 s of 1.5 s starts at 0.5 s,
    # at frame 4, and the audio comes along (resampled to 16 kHz).
    clip_ids = [c for b in batches for c in b["clip_id"].numpy()]
    video = np.concatenate([b["video"].numpy() for b in batches])
    audio = np.concatenate([b["audio"].numpy() for b in batches])
    for row, clip_id in enumerate(clip_ids):
        index = int(clip_id.decode()[4:])
        levels = np.round(video[row, :, 0, 0, 0] * 255)
        np.testing.assert_array_equal(levels, 10 * index + np.arange(4, 8))
        level = 0.1 * (index + 1) * (index != SILENT)
        np.testing.assert_allclose(audio[row], level, atol=1e-4)
    # Another pass gives the same batches.
    again = list(ds)
    assert prompts_of(again) == prompts_of(batches)


def test_eval_over_several_files_yields_every_question_once(folder):
    ds = snippet_dataset(str(folder), model(), batch_size=3)
    prompts = prompts_of(ds)
    assert sorted(prompts) == sorted(all_questions(range(5)))
    assert len(prompts) == len(set(prompts)) == 11


def test_eval_over_several_files_keeps_the_file_order(folder):
    ds = snippet_dataset(str(folder), model(), batch_size=3)
    assert prompts_of(ds) == all_questions(range(5))


def take(ds, count):
    return [
        {k: v.numpy() for k, v in batch.items()} for batch in ds.take(count)
    ]


def test_training_is_deterministic_for_a_seed(folder):
    def batches(seed):
        ds = snippet_dataset(
            str(folder), model(), batch_size=4, training=True, seed=seed
        )
        return ds, take(ds, 3)

    ds, first = batches(3)
    # Training drops the remainder, so shapes are static.
    assert ds.element_spec["video"].shape == (4, 4, 6, 6, 3)
    assert ds.element_spec["audio"].shape == (4, 8000)
    _, second = batches(3)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    _, other = batches(4)
    assert prompts_of_numpy(other) != prompts_of_numpy(first)
    # It repeats: 12 elements from 11 questions, all of them real ones.
    assert set(prompts_of_numpy(first)) <= set(all_questions(range(5)))
    assert len(prompts_of_numpy(first)) == 12


@pytest.mark.parametrize("cache", [True, False])
def test_cache_serves_later_passes_from_memory(folder, tmp_path, cache):
    # The first iterator is abandoned after one batch, as `fit` does when
    # it builds the model; the next one fills the cache in its first pass
    # and reads later passes from memory: the files can go.
    records = tmp_path / "records"
    shutil.copytree(folder, records)
    ds = snippet_dataset(
        str(records), model(), batch_size=2, training=True, cache=cache
    )
    next(iter(ds))
    batches = iter(ds)
    seen = [next(batches)["prompts"].numpy() for _ in range(15)]  # ~3 passes
    for path in records.glob("*.tfrecord"):
        path.unlink()
    if not cache:
        with pytest.raises(tf.errors.NotFoundError):
            for _ in range(15):
                next(batches)
        return
    seen += [next(batches)["prompts"].numpy() for _ in range(15)]
    prompts = [p for batch in seen for p in batch]
    assert set(prompts) == set(all_questions(range(5)))


def prompts_of_numpy(batches):
    return [p for batch in batches for p in batch["prompts"]]


def test_training_windows_are_random_but_aligned(folder):
    ds = snippet_dataset(
        str(folder),
        model(),
        batch_size=4,
        training=True,
        seed=0,
        keep_metadata=True,
    )
    starts = set()
    for batch in take(ds, 4):
        for clip_id, video in zip(batch["clip_id"], batch["video"]):
            index = int(clip_id.decode()[4:])
            frames = np.round(video[:, 0, 0, 0] * 255) - 10 * index
            # 4 consecutive frames of the 12, anywhere in the clip.
            assert frames[0] in range(0, 9)
            np.testing.assert_array_equal(frames, frames[0] + np.arange(4))
            starts.add(frames[0])
    assert len(starts) > 1


def test_keep_metadata(folder):
    ds = snippet_dataset(
        str(folder / "a.tfrecord"), model(), batch_size=8, keep_metadata=True
    )
    (batch,) = list(ds)
    assert set(batch) == {
        "video",
        "audio",
        "prompts",
        "responses",
        "types",
        "tasks",
        "choices",
        "clip_id",
        "has_audio",
    }
    # Open-ended questions: no candidate answers.
    assert set(batch["tasks"].numpy().tolist()) == {b"qa"}
    assert set(batch["choices"].numpy().tolist()) == {b""}
    assert batch["types"].numpy().tolist() == [
        f"type{q}".encode() for c in range(3) for q in range(QUESTIONS[c])
    ]
    clip_ids = [
        f"clip{c}".encode() for c in range(3) for _ in range(QUESTIONS[c])
    ]
    assert batch["clip_id"].numpy().tolist() == clip_ids
    assert batch["has_audio"].dtype == tf.bool
    assert batch["has_audio"].numpy().tolist() == [
        c != b"clip2" for c in clip_ids
    ]


def test_use_audio_false_drops_audio(folder):
    ds = snippet_dataset(
        str(folder), model(use_audio=False), batch_size=4, keep_metadata=True
    )
    assert "audio" not in ds.element_spec
    assert "has_audio" in ds.element_spec
    batch = next(iter(ds))
    assert batch["video"].shape == (4, 4, 6, 6, 3)


LENGTH = 32


@pytest.fixture(scope="module")
def preprocessor():
    texts = [question(c, q) for c in range(5) for q in range(3)]
    texts += [answer(c, q) for c in range(5) for q in range(3)]
    proto = train_tokenizer(texts * 4, vocabulary_size=300)
    return MirasolCausalLMPreprocessor(
        MirasolTokenizer(proto=proto),
        sequence_length=LENGTH,
        num_frames=4,
        frame_size=(6, 6),
        num_audio_samples=8000,
        audio_sample_rate=16000,
    )


def test_a_real_preprocessor_maps_over_the_batches(folder, preprocessor):
    ds = snippet_dataset(str(folder / "a.tfrecord"), preprocessor, batch_size=2)
    raw = next(iter(ds))
    x, y, weight = next(iter(ds.map(preprocessor)))
    assert x["token_ids"].shape == (2, LENGTH)
    assert x["padding_mask"].shape == (2, LENGTH)
    assert y.shape == (2, LENGTH) and weight.shape == (2, LENGTH)
    assert x["video"].shape == (2, 4, 6, 6, 3)
    assert x["audio"].shape == (2, 8000)
    # The pipeline cut the window; the preprocessor keeps it as it is.
    np.testing.assert_array_equal(x["video"], raw["video"])
    np.testing.assert_array_equal(x["audio"], raw["audio"])
    tokenizer = preprocessor.tokenizer
    for row in range(2):
        prompt = raw["prompts"].numpy()[row].decode()
        response = raw["responses"].numpy()[row].decode()
        prompt_ids = np.asarray(tokenizer(prompt)).tolist()
        response_ids = np.asarray(tokenizer(response)).tolist()
        expected = [tokenizer.start_token_id] + prompt_ids + response_ids
        assert len(expected) < LENGTH
        assert x["token_ids"][row, : len(expected)].numpy().tolist() == expected
        targets = y[row].numpy()[weight[row].numpy() > 0].tolist()
        assert targets == response_ids + [tokenizer.end_token_id]


def test_k_questions_per_clip(folder):
    def batches(seed):
        ds = snippet_dataset(
            str(folder),
            model(),
            batch_size=4,
            training=True,
            seed=seed,
            keep_metadata=True,
            questions_per_clip=2,
        )
        return ds, take(ds, 6)

    ds, first = batches(0)
    # 2 clips and 4 questions per batch: rows 2i and 2i+1 ask about clip i.
    assert ds.element_spec["video"].shape == (2, 4, 6, 6, 3)
    assert ds.element_spec["audio"].shape == (2, 8000)
    assert ds.element_spec["prompts"].shape == (4,)
    assert ds.element_spec["types"].shape == (4,)
    seen = set()
    for batch in first:
        for i, clip_id in enumerate(batch["clip_id"]):
            clip = int(clip_id.decode()[4:])
            seen.add(clip)
            frames = np.round(batch["video"][i, :, 0, 0, 0] * 255)
            assert frames[0] - 10 * clip in range(0, 9)
            rows = [2 * i, 2 * i + 1]
            asked = [batch["prompts"][r].decode() for r in rows]
            answered = [batch["responses"][r].decode() for r in rows]
            numbers = [int(p.split()[1]) for p in asked]
            assert asked == [question(clip, q) for q in numbers]
            assert answered == [answer(clip, q) for q in numbers]
            # Distinct questions while the clip has enough; clip 1 has one.
            assert len(set(numbers)) == min(2, QUESTIONS[clip])
    assert seen == set(range(5))
    _, again = batches(0)
    for a, b in zip(first, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    _, other = batches(1)
    assert prompts_of_numpy(other) != prompts_of_numpy(first)


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(batch_size=5, training=True), ["questions_per_clip=2", "5"]),
        (dict(batch_size=4, training=False), ["training batches"]),
    ],
)
def test_k_questions_per_clip_bad_arguments(folder, kwargs, words):
    with pytest.raises(ValueError) as info:
        snippet_dataset(str(folder), model(), questions_per_clip=2, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_records_give_back_every_question_and_answer(avqa_records):
    for split in ("train", "test"):
        with open(avqa_records[f"{split}_annotations"]) as f:
            rows = [json.loads(line) for line in f]
        texts = [t for r in rows for t in (r["question"], r["answer"])]
        assert sorted(record_texts(avqa_records[split])) == sorted(texts)
        assert count_questions(avqa_records[split]) == len(rows)


@pytest.mark.parametrize(
    "start, options",
    [
        (9, dict()),
        (9, dict(questions_per_clip=2, batch_size=4)),
        (9, dict(cache=True)),
        # No clip used up yet: every clip is decoded.
        (1, dict(shuffle_questions=256)),
    ],
    ids=["questions", "questions_per_clip", "cache", "none_consumed"],
)
def test_start_batch_continues_the_seeded_sequence(folder, start, options):
    # Batch 9 onwards of one sequence, as a resumed run reads them: 27
    # questions (or 18 clips) in, past two passes over the 5 clips, with
    # buffers small enough that the shuffles mix clips across passes.
    options = dict(
        dict(
            batch_size=3,
            training=True,
            seed=3,
            shuffle_clips=3,
            shuffle_questions=4,
            keep_metadata=True,
        ),
        **options,
    )
    ds = snippet_dataset(str(folder), model(), **options)
    expected = take(ds.skip(start), 5)
    resumed = take(
        snippet_dataset(str(folder), model(), start_batch=start, **options), 5
    )
    for want, got in zip(expected, resumed):
        assert set(got) == set(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_consumed_clips_are_not_decoded_to_skip_batches(folder):
    # The clips whose questions all come out in the first 27 elements are
    # many (the test above shows skipping them leaves the sequence as it
    # was; a needed clip among them would come out with no frames).
    ranges = consumed_clips(
        str(folder), 27, seed=3, shuffle_clips=3, shuffle_questions=4
    )
    assert ranges.shape[1] == 2
    assert np.all(ranges[:, 0] < ranges[:, 1])
    assert np.all(ranges[1:, 0] > ranges[:-1, 1])
    # 27 questions come from at least 27 / 3 clips; all but the ones
    # still in the shuffle buffer (4 questions) are used up.
    assert int(np.sum(ranges[:, 1] - ranges[:, 0])) >= (27 - 4) // 3
    per_clip = consumed_clips(
        str(folder), 18, seed=3, shuffle_clips=3, questions_per_clip=2
    )
    # One element per clip: the first 18 positions (every clip has
    # questions).
    np.testing.assert_array_equal(per_clip, [[0, 18]])


def test_start_batch_is_for_training(folder):
    with pytest.raises(ValueError, match="start_batch=2 is for training"):
        snippet_dataset(str(folder), model(), start_batch=2)


@pytest.mark.parametrize("cache", [False, True])
def test_every_iteration_of_a_training_dataset_gives_the_same_batches(
    folder, cache
):
    # `fit` may take a batch from a first iterator to build the model and
    # train on a second one: both must see the seed's sequence, which
    # still differs from pass to pass over the records.
    ds = snippet_dataset(
        str(folder),
        model(),
        batch_size=11,  # one pass over the 11 questions per batch
        training=True,
        seed=5,
        cache=cache,
        shuffle_questions=11,
    )
    first, second = take(ds, 4), take(ds, 4)
    for a, b in zip(first, second):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    orders = {tuple(batch["prompts"]) for batch in first}
    assert len(orders) > 1


def test_damaged_records_are_skipped_counted_and_the_rest_read(
    folder, tmp_path
):
    """A flipped bit in clip 1 (a.tfrecord's second record), and b.tfrecord
    cut short inside clip 4: TensorFlow's reader would stop at each."""
    records = tmp_path / "records"
    shutil.copytree(folder, records)
    first = len(numbered_clip(0)) + 16
    data = bytearray((records / "a.tfrecord").read_bytes())
    data[first + 12 + 100] ^= 0x04
    (records / "a.tfrecord").write_bytes(bytes(data))
    b = (records / "b.tfrecord").read_bytes()
    (records / "b.tfrecord").write_bytes(b[: len(b) - 50])
    with pytest.raises(tf.errors.DataLossError):
        list(tf.data.TFRecordDataset(str(records / "a.tfrecord")))

    damaged = DamagedRecords()
    ds = snippet_dataset(str(records), model(), batch_size=3, damaged=damaged)
    assert prompts_of(ds) == all_questions([0, 2, 3])
    found = [(os.path.basename(b.file), b.record, b.offset) for b in damaged]
    assert found == [
        ("a.tfrecord", 1, first),
        ("b.tfrecord", 1, len(numbered_clip(3)) + 16),
    ]
    assert count_questions(str(records)) == 3 + 2 + 2
    # Training passes over the same damage again and again: still two.
    ds = snippet_dataset(
        str(records), model(), 2, training=True, damaged=damaged
    )
    prompts = prompts_of(ds.take(12))
    assert set(prompts) == set(all_questions([0, 2, 3]))
    assert len(damaged) == 2


def _without_task_features(serialized):
    """The record as `convert` wrote it before tasks and choices existed."""
    example = tf.train.SequenceExample.FromString(serialized)
    for key in ("tasks", "choices"):
        del example.context.feature[key]
    return example.SerializeToString()


@pytest.mark.parametrize("old_record", [False, True])
@pytest.mark.parametrize("questions_per_clip", [None, 3])
def test_tasks_and_choices_follow_their_question(
    tmp_path, old_record, questions_per_clip
):
    rng = np.random.default_rng(0)
    clip = dict(
        video=rng.integers(0, 255, (12, 8, 8, 3), dtype=np.uint8),
        audio=np.zeros(RATE * 12 // 8, np.float32),
        fps=8.0,
        sample_rate=RATE,
        has_audio=True,
    )
    notes = [
        {
            "question": "which?",
            "answer": "b",
            "type": "t0",
            "task": "choice",
            "choices": ["a", "b", "c"],
        },
        {"question": "", "answer": "a red cube", "type": "", "task": "caption"},
        {"question": "what?", "answer": "red", "type": "t2", "task": "qa"},
    ]
    serialized = serialize_clip(clip, notes, "c0", "c0.mp4")
    if old_record:
        serialized = _without_task_features(serialized)
    path = str(tmp_path / "a.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(serialized)
    ds = snippet_dataset(
        path,
        model(),
        batch_size=3,
        keep_metadata=True,
        training=questions_per_clip is not None,
        questions_per_clip=questions_per_clip,
        seed=1,
    )
    batch = next(iter(ds))
    rows = {
        prompt.decode(): (task.decode(), choices.decode())
        for prompt, task, choices in zip(
            batch["prompts"].numpy(),
            batch["tasks"].numpy(),
            batch["choices"].numpy(),
        )
    }
    if old_record:
        # Derived: an empty question is a caption, the rest open-ended.
        expected = {
            "which?": ("qa", ""),
            "": ("caption", ""),
            "what?": ("qa", ""),
        }
    else:
        expected = {
            "which?": ("choice", "a\x1fb\x1fc"),
            "": ("caption", ""),
            "what?": ("qa", ""),
        }
    assert rows == expected
