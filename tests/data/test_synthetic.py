import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from keras_mirasol.data import read_clip
from keras_mirasol.data.synthetic import COLOURS
from keras_mirasol.data.synthetic import ORDINALS
from keras_mirasol.data.synthetic import QUESTION_TYPES
from keras_mirasol.data.synthetic import SOUNDS
from keras_mirasol.data.synthetic import make_questions
from keras_mirasol.data.synthetic import render_clip
from keras_mirasol.data.synthetic import write_dataset
from tests.conftest import assert_decodes_losslessly

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend

SETTING = dict(
    num_snippets=3, snippet_seconds=0.5, fps=8, image_size=32, sample_rate=8000
)
SPLITS = ("train", "val", "test")
# What `write` below renders.
TINY = dict(image_size=32)


def nearest_colour(rgb):
    names = list(COLOURS)
    distances = [np.abs(np.subtract(rgb, COLOURS[n])).sum() for n in names]
    return names[int(np.argmin(distances))]


def test_render_clip_shapes_and_dtypes():
    video, audio, facts = render_clip(np.random.default_rng(0), **SETTING)
    # 3 segments of 0.5 s: 4 frames and 4000 samples each.
    assert video.shape == (12, 32, 32, 3) and video.dtype == np.uint8
    assert audio.shape == (12000,) and audio.dtype == np.float32
    assert np.abs(audio).max() <= 1.0
    assert {len(facts[k]) for k in ("colours", "sounds", "shapes")} == {3}
    default_video, default_audio, _ = render_clip(np.random.default_rng(0))
    assert default_video.shape == (16, 64, 64, 3)
    assert default_audio.shape == (32000,)


def test_render_clip_rejects_more_segments_than_sounds():
    with pytest.raises(ValueError, match="num_snippets=5"):
        render_clip(np.random.default_rng(0), num_snippets=5)


@pytest.mark.parametrize("seed", range(6))
def test_render_clip_facts(seed):
    _, _, facts = render_clip(np.random.default_rng(seed))
    assert len(set(facts["colours"])) == 4
    assert set(facts["colours"]) <= set(COLOURS)
    assert sorted(facts["sounds"]) == sorted(SOUNDS)
    assert len(facts["shapes"]) == 4
    assert set(facts["shapes"]) <= {"circle", "square"}


@pytest.mark.parametrize("seed", range(3))
def test_frames_show_the_segment_colour_and_shape(seed):
    video, _, facts = render_clip(np.random.default_rng(seed), **SETTING)
    frames_per_segment = 4
    for t in range(3):
        colour = np.array(COLOURS[facts["colours"][t]])
        for frame in video[
            t * frames_per_segment : (t + 1) * frames_per_segment
        ]:
            # One shape of the segment's colour on a dimmed background of
            # the same hue.
            lit = (frame == colour).all(axis=-1)
            assert lit.sum() > 20
            background = np.broadcast_to(colour // 3, frame[~lit].shape)
            np.testing.assert_array_equal(frame[~lit], background)
            rows, cols = np.flatnonzero(lit.any(1)), np.flatnonzero(lit.any(0))
            box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
            # A square fills its bounding box, a circle about pi / 4 of it.
            fill = lit.sum() / box
            if facts["shapes"][t] == "circle":
                assert 0.6 < fill < 0.9
            else:
                assert fill == 1.0


@pytest.mark.parametrize("seed", range(3))
def test_each_segment_sounds_in_its_middle_only(seed):
    _, audio, facts = render_clip(np.random.default_rng(seed), **SETTING)
    samples = 4000
    margin = samples // 10
    for t in range(3):
        segment = audio[t * samples : (t + 1) * samples]
        middle = segment[margin + 100 : samples - margin - 100]
        assert np.sqrt(np.mean(middle**2)) > 0.1
        np.testing.assert_array_equal(segment[:margin], 0.0)
        np.testing.assert_array_equal(segment[samples - margin :], 0.0)
    # Whistle (2 kHz) and hum (220 Hz) are told apart by their spectrum.
    for t, sound in enumerate(facts["sounds"]):
        if sound in ("hum", "whistle"):
            middle = audio[t * samples + margin : (t + 1) * samples - margin]
            spectrum = np.abs(np.fft.rfft(middle))
            peak = np.argmax(spectrum) * 8000 / len(middle)
            expected = 220 if sound == "hum" else 2000
            assert abs(peak - expected) < 0.06 * expected


FACTS = {
    "colours": ["red", "cyan", "blue", "yellow"],
    "sounds": ["buzz", "hiss", "whistle", "hum"],
    "shapes": ["square", "square", "circle", "square"],
}


@pytest.mark.parametrize("seed", range(8))
def test_make_questions_answers_follow_the_facts(seed):
    colours, sounds = FACTS["colours"], FACTS["sounds"]
    questions = make_questions(FACTS, np.random.default_rng(seed))
    types = [q["type"] for q in questions]
    assert types == ["video", "audio", "aligned", "aligned", "order", "caption"]
    assert set(types) == set(QUESTION_TYPES)
    video, audio, aligned, aligned_too, order, caption = questions
    # The two aligned questions ask about different sounds.
    assert aligned["question"] != aligned_too["question"]
    assert caption["answer"] == "red buzz cyan hiss blue whistle yellow hum"
    shown = re.fullmatch(r"what colour is shown (\w+)\?", video["question"])
    assert video["answer"] == colours[ORDINALS.index(shown[1])]
    heard = re.fullmatch(r"when does the (\w+) play\?", audio["question"])
    assert audio["answer"] == ORDINALS[sounds.index(heard[1])]
    for question in (aligned, aligned_too):
        playing = re.fullmatch(
            r"what colour is on screen when the (\w+) plays\?",
            question["question"],
        )
        assert question["answer"] == colours[sounds.index(playing[1])]
    before = re.fullmatch(r"what colour comes after (\w+)\?", order["question"])
    assert before[1] != colours[-1]
    assert order["answer"] == colours[colours.index(before[1]) + 1]


def test_make_questions_covers_every_sound_and_colour():
    asked_sounds, asked_colours = set(), set()
    for seed in range(40):
        _, audio, aligned, _, order, _ = make_questions(
            FACTS, np.random.default_rng(seed)
        )
        asked_sounds.add(audio["question"].split()[3])
        asked_sounds.add(aligned["question"].split()[-2])
        asked_colours.add(order["question"].split()[-1][:-1])
    assert asked_sounds == set(FACTS["sounds"])
    assert asked_colours == set(FACTS["colours"][:-1])


def write(path, clips=5, seed=0):
    counts = write_dataset(
        str(path), clips=clips, seed=seed, workers=1, image_size=32
    )
    return counts


def read_lines(folder):
    """All annotation lines of `folder`, by split."""
    return {
        split: (folder / f"{split}.jsonl").read_text().splitlines()
        for split in SPLITS
    }


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    counts = {}
    for name, clips, seed in [
        ("a", 5, 0),
        ("b", 5, 0),
        ("other_seed", 5, 1),
        ("fewer", 3, 0),
    ]:
        counts[name] = write(root / name, clips, seed)
    return root, counts


def test_write_dataset_files(datasets):
    root, counts = datasets
    folder = root / "a"
    assert set(counts["a"]) == set(SPLITS)
    assert sum(counts["a"].values()) == 5
    names = sorted(os.listdir(folder / "videos"))
    assert names == [f"clip_{i:05d}.mp4" for i in range(5)]
    lines = read_lines(folder)
    for split in SPLITS:
        # One question of each type per clip.
        assert len(lines[split]) == 6 * counts["a"][split]
    records = [json.loads(line) for split in SPLITS for line in lines[split]]
    assert sorted({r["clip_id"] for r in records}) == [
        f"clip_{i:05d}" for i in range(5)
    ]
    for record in records:
        assert record["video"] == record["clip_id"] + ".mp4"
        assert set(record) == {"video", "question", "answer", "type", "clip_id"}


def test_written_clips_decode_to_the_rendered_content(datasets):
    root, _ = datasets
    for index in (0, 3):
        clip = read_clip(
            root / "a" / "videos" / f"clip_{index:05d}.mp4", sample_rate=16000
        )
        assert clip["video"].shape == (16, 32, 32, 3)
        assert clip["audio"].shape == (32000,) and clip["has_audio"]
        rng = np.random.default_rng([0, index])
        _, _, facts = render_clip(rng, image_size=32)
        answers = {q["type"]: q["answer"] for q in make_questions(facts, rng)}
        for t in range(4):
            for frame in clip["video"][4 * t : 4 * t + 4]:
                # The shape, not its dimmed background.
                total = frame.astype(int).sum(axis=-1)
                bright = total > 0.7 * total.max()
                mean = frame[bright].mean(axis=0)
                assert nearest_colour(mean) == facts["colours"][t]
            # Audio (lossy AAC) is loud in the middle, silent at the edges.
            segment = clip["audio"][8000 * t : 8000 * (t + 1)]
            assert np.sqrt(np.mean(segment[1000:7000] ** 2)) > 0.1
            assert np.abs(segment[:600]).max() < 0.01
            assert np.abs(segment[-600:]).max() < 0.01
        # The annotations are the questions about this clip's facts.
        records = [
            json.loads(line)
            for lines in read_lines(root / "a").values()
            for line in lines
        ]
        written = {
            r["type"]: r["answer"]
            for r in records
            if r["clip_id"] == f"clip_{index:05d}"
        }
        assert written == answers


def digests(folder):
    """sha256 of every file under `folder`, by relative path."""
    found = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                digest = hashlib.sha256(f.read()).hexdigest()
            found[os.path.relpath(path, folder)] = digest
    return found


def test_write_dataset_is_deterministic_for_a_seed(datasets):
    root, counts = datasets
    assert counts["a"] == counts["b"] == counts["other_seed"]
    # Byte for byte: every clip and every annotation file.
    assert digests(root / "a") == digests(root / "b")
    assert len(digests(root / "a")) == 5 + len(SPLITS)


@pytest.mark.parametrize("index", [0, 4])
def test_clips_decode_to_exactly_the_rendered_content(datasets, index):
    """What a clip decodes to is fixed by the seed alone: the rendered
    frames through the YUV 4:2:0 round trip, and the rendered waveform at
    16 bits. No encoder decision (threads, SIMD, heap) can change it."""
    root, _ = datasets
    clip = read_clip(root / "a" / "videos" / f"clip_{index:05d}.mp4")
    video, audio, _ = render_clip(np.random.default_rng([0, index]), **TINY)
    assert_decodes_losslessly(clip, video, audio)


WRITE_IN_CHILD = """
import os, sys
if sys.argv[2] == "tensorflow":
    import tensorflow as tf  # loaded and used before any clip is written
    tf.linalg.matmul(tf.ones((64, 64)), tf.ones((64, 64)))
if sys.argv[3] == "one-cpu":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from keras_mirasol.data.synthetic import write_dataset
write_dataset(sys.argv[1], clips=3, seed=0, workers=int(sys.argv[4]),
              image_size=32)
"""


def test_same_files_in_any_process_with_any_workers(tmp_path):
    """The same seed writes the same bytes in-process and in worker
    processes, with TensorFlow loaded first, and on one CPU or all."""
    runs = {
        "here": None,
        "two_workers_tensorflow": ("tensorflow", "all-cpus", "2"),
        "one_cpu": ("none", "one-cpu", "1"),
    }
    for name, child in runs.items():
        if child is None:
            write_dataset(
                str(tmp_path / name), clips=3, workers=1, image_size=32
            )
            continue
        subprocess.run(
            [sys.executable, "-c", WRITE_IN_CHILD, str(tmp_path / name)]
            + list(child),
            check=True,
            capture_output=True,
        )
    here = digests(tmp_path / "here")
    assert len(here) == 3 + len(SPLITS)
    for name in runs:
        assert digests(tmp_path / name) == here, name


def test_another_seed_gives_other_clips(datasets):
    root, _ = datasets
    assert read_lines(root / "a") != read_lines(root / "other_seed")
    a_clip = read_clip(root / "a" / "videos" / "clip_00000.mp4")
    other = read_clip(root / "other_seed" / "videos" / "clip_00000.mp4")
    assert np.abs(a_clip["video"].astype(int) - other["video"]).mean() > 5


def test_a_clip_does_not_depend_on_the_clip_count(datasets):
    root, counts = datasets
    assert sum(counts["fewer"].values()) == 3

    many, few = _group(root / "a"), _group(root / "fewer")
    assert sorted(few) == ["clip_00000", "clip_00001", "clip_00002"]
    for clip_id, lines in few.items():
        assert lines == many[clip_id]
    many_clip = read_clip(root / "a" / "videos" / "clip_00002.mp4")
    few_clip = read_clip(root / "fewer" / "videos" / "clip_00002.mp4")
    np.testing.assert_array_equal(many_clip["video"], few_clip["video"])


def _group(folder):
    grouped = {}
    for lines in read_lines(folder).values():
        for line in lines:
            grouped.setdefault(json.loads(line)["clip_id"], []).append(line)
    return grouped


def test_an_existing_clip_file_is_kept(tmp_path):
    write(tmp_path, clips=2)
    path = tmp_path / "videos" / "clip_00000.mp4"
    path.write_bytes(b"kept")
    before = read_lines(tmp_path)
    write(tmp_path, clips=2)
    assert path.read_bytes() == b"kept"
    assert read_lines(tmp_path) == before
    assert not [n for n in os.listdir(tmp_path / "videos") if "tmp" in n]


LONG = dict(
    num_snippets=32,
    num_events=4,
    snippet_seconds=0.5,
    fps=8,
    image_size=32,
    sample_rate=8000,
)


@pytest.mark.parametrize("seed", range(4))
def test_long_clip_events_sit_in_their_segments_and_nothing_else(seed):
    video, audio, facts = render_clip(np.random.default_rng(seed), **LONG)
    assert video.shape == (128, 32, 32, 3) and audio.shape == (128000,)
    segments = facts["segments"]
    assert len(segments) == 4 and segments == sorted(set(segments))
    assert len(set(facts["colours"])) == 4
    assert sorted(facts["sounds"]) == sorted(SOUNDS)
    for t in range(32):
        frames = video[4 * t : 4 * t + 4]
        sound = audio[4000 * t : 4000 * (t + 1)]
        if t not in segments:
            # Black and silent.
            assert not frames.any() and not sound.any()
            continue
        event = segments.index(t)
        colour = np.array(COLOURS[facts["colours"][event]])
        for frame in frames:
            assert (frame == colour).all(axis=-1).sum() > 20
        assert np.sqrt(np.mean(sound[500:3500] ** 2)) > 0.1


def test_long_clip_events_reach_every_part_of_the_clip():
    segments = [
        t
        for seed in range(40)
        for t in render_clip(np.random.default_rng(seed), **LONG)[2]["segments"]
    ]
    # Evidence anywhere: the first and last quarter both hold events.
    assert min(segments) < 8 and max(segments) >= 24
    assert len(set(segments)) > 24


def test_long_clip_questions_ask_about_the_events_in_time_order():
    rng = np.random.default_rng(5)
    _, _, facts = render_clip(rng, **LONG)
    questions = make_questions(facts, rng)
    caption = questions[-1]["answer"].split()
    assert caption[0::2] == facts["colours"]
    assert caption[1::2] == facts["sounds"]
    shown = re.fullmatch(
        r"what colour is shown (\w+)\?", questions[0]["question"]
    )
    assert questions[0]["answer"] == facts["colours"][ORDINALS.index(shown[1])]


def test_too_many_events_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="num_events"):
        write_dataset(str(tmp_path / "out"), clips=2, num_snippets=8)
    with pytest.raises(ValueError, match="num_events=1 must be between 2"):
        render_clip(np.random.default_rng(0), num_snippets=8, num_events=1)
    assert not (tmp_path / "out").exists()


def test_a_written_long_clip_decodes_to_the_rendered_content(tmp_path):
    settings = dict(LONG, sample_rate=16000)
    write_dataset(
        str(tmp_path), clips=1, workers=1, splits=(("train", 1.0),), **settings
    )
    clip = read_clip(tmp_path / "videos" / "clip_00000.mp4")
    video, audio, facts = render_clip(np.random.default_rng([0, 0]), **settings)
    assert_decodes_losslessly(clip, video, audio)
    lines = (tmp_path / "train.jsonl").read_text().splitlines()
    caption = json.loads(lines[-1])["answer"].split()
    assert caption[0::2] == facts["colours"]
