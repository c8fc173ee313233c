"""Real datasets' annotation layouts, and clips cut from longer videos.

Each layout is written here exactly as its dataset ships it (VGGSound's
CSV without a header, ActivityNet-QA's question and answer files,
ActivityNet Captions' json, NExT-QA's CSV and its numbered folders), over
a few generated videos, and converted with `convert`.
"""

import json

import numpy as np
import pytest

from keras_mirasol.data import convert
from keras_mirasol.data import read_clip
from keras_mirasol.data import read_clips
from keras_mirasol.data import write_clip
from keras_mirasol.data.annotations import file_texts
from keras_mirasol.data.records import load_annotations
from keras_mirasol.data.snippets import record_texts
from tests.data.test_records import read_records

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend

RATE = 8000
FPS = 4
SETTINGS = dict(fps=FPS, image_size=(16, 16), sample_rate=RATE)


def long_video(path, seconds, seed):
    """Random frames at 8 fps and noise, lossless: every frame differs."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 255, (seconds * 8, 16, 16, 3), dtype=np.uint8)
    audio = rng.uniform(-0.5, 0.5, seconds * RATE).astype("float32")
    write_clip(path, video, 8, audio, RATE, lossless=True)


def convert_layout(tmp_path, annotations, **kwargs):
    out = tmp_path / "out"
    report = convert(
        str(tmp_path / "videos"),
        [str(a) for a in annotations],
        str(out),
        workers=1,
        verbose=False,
        **SETTINGS,
        **kwargs,
    )
    return report, {r["clip_id"].decode(): r for r in read_records(out)}


def assert_cut_from(record, path, start, seconds):
    """The record holds `[start, start + seconds)` of the whole file."""
    whole = read_clip(path, **SETTINGS)
    frame, sample = int(round(start * FPS)), int(round(start * RATE))
    np.testing.assert_array_equal(
        record["video"], whole["video"][frame : frame + int(seconds * FPS)]
    )
    np.testing.assert_allclose(
        record["audio"],
        whole["audio"][sample : sample + int(seconds * RATE)],
        atol=2 / 32768,
    )


def texts(record, key):
    return [t.decode() for t in record[key]]


# --- read_clips ---------------------------------------------------------


@pytest.mark.parametrize("lossless", [True, False])
def test_ranges_equal_the_whole_file_sliced(tmp_path, lossless):
    """40 s: x264 puts a key frame at 31.25 s, so the late range is read
    after a seek. Ranges in any order, overlapping, to the end."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (320, 16, 16, 3), dtype=np.uint8)
    audio = rng.uniform(-0.5, 0.5, 40 * RATE).astype("float32")
    path = tmp_path / "long.mp4"
    write_clip(path, video, 8, audio, RATE, lossless=lossless)
    whole = read_clip(path, **SETTINGS)
    ranges = [(33.5, 36), (2.25, 5), (4, 4.5), (36, None)]
    clips = read_clips(path, ranges, **SETTINGS)
    for (start, end), clip in zip(ranges, clips):
        seconds = (end or 40) - start
        assert clip["start"] == start and clip["seconds"] == seconds
        frame, sample = int(start * FPS), int(start * RATE)
        np.testing.assert_array_equal(
            clip["video"], whole["video"][frame : frame + int(seconds * FPS)]
        )
        np.testing.assert_array_equal(
            clip["audio"], whole["audio"][sample : sample + int(seconds * RATE)]
        )
        assert clip["has_audio"] and clip["fps"] == FPS
    # The whole file as one range is `read_clip`.
    (full,) = read_clips(path, [(0, None)], **SETTINGS)
    np.testing.assert_array_equal(full["video"], whole["video"])
    np.testing.assert_array_equal(full["audio"], whole["audio"])


def test_a_range_past_the_end_costs_only_itself(tmp_path):
    path = tmp_path / "v.mp4"
    long_video(path, 4, seed=1)
    late, early, partly = read_clips(path, [(5, 6), (1, 2), (3, 9)], **SETTINGS)
    assert "starts at or after the video's end (4 s)" in str(late)
    assert early["video"].shape[0] == FPS
    # A range running past the end stops there.
    assert partly["seconds"] == 1 and partly["video"].shape[0] == FPS
    assert partly["audio"].shape == (RATE,)


@pytest.mark.parametrize(
    "bad, words",
    [((2, 1), "must come after the start"), ((-1, 2), ">= 0"), (3, "give")],
)
def test_a_malformed_range_is_refused(tmp_path, bad, words):
    path = tmp_path / "v.mp4"
    long_video(path, 2, seed=1)
    with pytest.raises(ValueError, match=words):
        read_clips(path, [(0, 1), bad], **SETTINGS)


# --- VGGSound -----------------------------------------------------------


@pytest.fixture
def vggsound(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    long_video(videos / "-abc_12.mp4", 24, seed=2)  # a whole download
    long_video(videos / "xyz_000030.mp4", 10, seed=3)  # cut to the range
    csv = tmp_path / "vggsound.csv"
    csv.write_text(
        "-abc_12,2,dog barking,train\n"
        "-abc_12,12,cat meowing,test\n"
        "xyz,30,rain on a roof,train\n"
        "gone,5,wind,train\n"
        "-abc_12,3,dog barking\n"
    )
    return tmp_path, csv


def test_vggsound_csv_cuts_ten_seconds_per_row(vggsound, monkeypatch):
    tmp_path, csv = vggsound
    from keras_mirasol.data import records

    calls = []

    def counted(path, ranges, *args):
        calls.append((path, list(ranges)))
        return read_clips(path, ranges, *args)

    monkeypatch.setattr(records, "read_clips", counted)
    report, clips = convert_layout(tmp_path, [csv])
    videos = tmp_path / "videos"
    # Both rows of the whole download come from one decoding pass.
    assert calls.count((str(videos / "-abc_12.mp4"), [(2, 12), (12, 22)])) == 1
    assert sorted(clips) == ["-abc_12_12_22", "-abc_12_2_12", "xyz_30_40"]
    first = clips["-abc_12_2_12"]
    assert texts(first, "questions") == [""]
    assert texts(first, "answers") == ["dog barking"]
    assert texts(first, "tasks") == ["class"]
    assert_cut_from(first, videos / "-abc_12.mp4", 2, 10)
    assert_cut_from(clips["-abc_12_12_22"], videos / "-abc_12.mp4", 12, 10)
    # Only the pre-cut file is there: it is the clip.
    assert_cut_from(clips["xyz_30_40"], videos / "xyz_000030.mp4", 0, 10)
    assert "rain on a roof" in set(file_texts(csv))
    reasons = {item["input"]: item["reason"] for item in report["skipped"]}
    assert reasons == {
        f"{csv}:4": "file not found",
        f"{csv}:5": "3 fields, VGGSound rows have 4 "
        "(youtube_id,start_seconds,label,split)",
    }


def test_vggsound_split_keeps_one_split(vggsound):
    tmp_path, csv = vggsound
    report, clips = convert_layout(tmp_path, [csv], splits="test")
    assert sorted(clips) == ["-abc_12_12_22"]
    clips, _ = load_annotations([str(csv)], splits=["train"])
    assert [key for key, _ in clips] == [
        ("-abc_12", 2.0, 12.0),
        ("xyz", 30.0, 40.0),
        ("gone", 5.0, 15.0),
    ]


def test_a_csv_without_header_that_is_not_vggsound_is_refused(tmp_path):
    csv = tmp_path / "qa.csv"
    csv.write_text("a.mp4,what colour?,red\n")
    with pytest.raises(ValueError, match="Add a header line"):
        load_annotations([str(csv)])


# --- ActivityNet-QA -----------------------------------------------------


def write_json(path, value):
    path.write_text(json.dumps(value))
    return path


def test_activitynet_qa_reads_questions_with_their_answers(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    long_video(videos / "v_JDg--pjY5gg.mp4", 3, seed=4)
    questions = write_json(
        tmp_path / "val_q.json",
        [
            {"video_name": "JDg--pjY5gg", "question": "is it day",
             "question_id": "JDg--pjY5gg_0"},
            {"video_name": "JDg--pjY5gg", "question": "what colour is it",
             "question_id": "JDg--pjY5gg_1"},
            {"video_name": "JDg--pjY5gg", "question": "unanswered",
             "question_id": "JDg--pjY5gg_2"},
        ],
    )  # fmt: skip
    write_json(
        tmp_path / "val_a.json",
        [
            {"answer": "yes", "type": 3, "question_id": "JDg--pjY5gg_0"},
            {"answer": "red", "type": 4, "question_id": "JDg--pjY5gg_1"},
        ],
    )
    report, clips = convert_layout(tmp_path, [questions])
    (record,) = clips.values()
    assert texts(record, "questions") == ["is it day", "what colour is it"]
    assert texts(record, "answers") == ["yes", "red"]
    assert texts(record, "types") == ["yes_no", "color"]
    assert texts(record, "tasks") == ["qa", "qa"]
    ((item),) = report["skipped"]
    assert item["input"] == f"{questions}[2]"
    assert "'JDg--pjY5gg_2' has no answer" in item["reason"]


def test_activitynet_qa_without_its_answers_file_is_refused(tmp_path):
    questions = write_json(tmp_path / "test_q.json", [])
    with pytest.raises(ValueError, match="test_a.json, which does not exist"):
        load_annotations([str(questions)])


# --- ActivityNet Captions ------------------------------------------------


def test_activitynet_captions_cut_one_clip_per_sentence(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    long_video(videos / "v_QOlSCBRmfWY.mp4", 12, seed=5)
    captions = write_json(
        tmp_path / "val_1.json",
        {
            "v_QOlSCBRmfWY": {
                "duration": 12.0,
                "timestamps": [[0.5, 4.5], [3.0, 11.0], [13.0, 15.0]],
                "sentences": ["a man talks.", " he waves.", "late."],
            },
            "v_broken": {"duration": 3.0, "timestamps": [[0, 1]],
                         "sentences": []},
        },
    )  # fmt: skip
    report, clips = convert_layout(tmp_path, [captions])
    path = videos / "v_QOlSCBRmfWY.mp4"
    assert sorted(clips) == ["v_QOlSCBRmfWY_0.5_4.5", "v_QOlSCBRmfWY_3_11"]
    first = clips["v_QOlSCBRmfWY_0.5_4.5"]
    assert texts(first, "answers") == ["a man talks."]
    assert texts(first, "tasks") == ["caption"]
    assert_cut_from(first, path, 0.5, 4)
    assert_cut_from(clips["v_QOlSCBRmfWY_3_11"], path, 3, 8)
    reasons = {item["input"]: item["reason"] for item in report["skipped"]}
    assert reasons[f"{captions}['v_broken']"].startswith(
        "1 timestamps but 0 sentences"
    )
    late = reasons[f"{captions}['v_QOlSCBRmfWY'][2]"]
    assert "from 13 s starts at or after the video's end (12 s)" in late
    assert len(reasons) == 2


# --- NExT-QA ------------------------------------------------------------


def test_nextqa_csv_finds_videos_in_folders_and_keeps_the_choices(tmp_path):
    videos = tmp_path / "videos"
    (videos / "1025").mkdir(parents=True)
    long_video(videos / "1025" / "4010069381.mp4", 2, seed=6)
    csv = tmp_path / "val.csv"
    csv.write_text(
        "video,frame_count,width,height,question,answer,qid,type,"
        "a0,a1,a2,a3,a4\n"
        "4010069381,369,640,480,how do the two man play,3,6,CH,"
        "with a ball,stand,dance,ski,jump\n"
        "4010069381,369,640,480,why,7,7,CW,a,b,c,d,e\n"
    )
    report, clips = convert_layout(tmp_path, [csv])
    (record,) = clips.values()
    assert texts(record, "questions") == ["how do the two man play"]
    assert texts(record, "answers") == ["ski"]
    assert texts(record, "tasks") == ["choice"]
    assert texts(record, "choices") == [
        "\x1f".join(["with a ball", "stand", "dance", "ski", "jump"])
    ]
    assert texts(record, "types") == ["CH"]
    ((item),) = report["skipped"]
    assert item["input"] == f"{csv}:3"
    assert "answer index 7 is outside the 5 choices" in item["reason"]
    # A vocabulary trained on the records or the file sees every choice.
    stored = list(record_texts(str(tmp_path / "out")))
    assert stored == [
        "how do the two man play",
        "ski",
        "with a ball",
        "stand",
        "dance",
        "ski",
        "jump",
    ]
    assert {"with a ball", "stand", "dance", "jump"} <= set(file_texts(csv))


@pytest.mark.parametrize(
    "record, words",
    [
        ({"start": 3, "end": 1}, "ends at 1 s, not after its start at 3 s"),
        ({"start": "soon"}, "start must be a time in seconds"),
        ({"segment": [1]}, "segment must be"),
        ({"choices": ["only"]}, "needs >= 2 choices"),
        ({"choices": ["a", "b"], "answer": "c"}, "neither one of the choices"),
    ],
)
def test_malformed_ranges_and_choices_name_the_field(tmp_path, record, words):
    path = tmp_path / "qa.jsonl"
    base = {"video": "v.mp4", "question": "q", "answer": "a"}
    path.write_text(json.dumps({**base, **record}) + "\n")
    clips, skipped = load_annotations([str(path)])
    assert clips == []
    ((item),) = skipped
    assert words in item["reason"]


# --- max_seconds --------------------------------------------------------


def test_max_seconds_stores_the_start_of_each_clip(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    long_video(videos / "a.mp4", 6, seed=7)
    annotations = tmp_path / "qa.jsonl"
    annotations.write_text(
        json.dumps({"video": "a.mp4", "question": "q", "answer": "x"})
        + "\n"
        + json.dumps({"video": "a.mp4", "caption": "c", "start": 1, "end": 5})
        + "\n"
    )
    report, clips = convert_layout(tmp_path, [annotations], max_seconds=2.5)
    assert report["clips"] == 2
    assert_cut_from(clips["a"], videos / "a.mp4", 0, 2.5)
    assert_cut_from(clips["a_1_5"], videos / "a.mp4", 1, 2.5)
    assert clips["a"]["video"].shape[0] == 10
    with pytest.raises(ValueError, match="max_seconds=0"):
        convert_layout(tmp_path, [annotations], max_seconds=0)
