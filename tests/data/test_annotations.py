import json

import pytest

from keras_mirasol.data.annotations import corpus_texts
from keras_mirasol.data.annotations import iter_records
from keras_mirasol.data.annotations import normalize

# What `normalize` adds to an annotation without a range, choices or split.
PLAIN = {
    "task": "qa",
    "choices": [],
    "start": None,
    "end": None,
    "split": "",
    "precut": "",
}

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend


def test_jsonl_yields_a_bad_line_with_an_error_and_reads_on(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        json.dumps({"video": "a.mp4", "question": "q1", "answer": "x"})
        + "\n{not json\n\n"
        + "[1, 2]\n"
        + json.dumps({"video": "b.mp4", "question": "q2", "answer": "y"})
        + "\n"
    )
    rows = list(iter_records(path))
    # The blank line 3 is skipped; every other line is reported.
    assert [location for location, _, _ in rows] == [
        f"{path}:1",
        f"{path}:2",
        f"{path}:4",
        f"{path}:5",
    ]
    (_, first, none), (_, bad, why), (_, array, not_dict), (_, last, _) = rows
    assert first == {"video": "a.mp4", "question": "q1", "answer": "x"}
    assert none is None
    assert bad is None and why.startswith("not JSON")
    assert array is None and not_dict == "not a JSON object"
    assert last["video"] == "b.mp4" and last["answer"] == "y"


def test_csv_locations_carry_line_numbers(tmp_path):
    path = tmp_path / "qa.csv"
    path.write_text(
        "video,question,answer\n"
        "clip_1.mp4,what colour?,red\n"
        'clip_2.mp4,"which one, first?",blue\n'
    )
    rows = list(iter_records(path))
    assert [location for location, _, _ in rows] == [
        f"{path}:2",
        f"{path}:3",
    ]
    assert all(error is None for _, _, error in rows)
    records = [normalize(record) for _, record, _ in rows]
    assert records[0]["video"] == "clip_1.mp4"
    assert records[0]["question"] == "what colour?"
    assert records[0]["answer"] == "red"
    # A quoted comma stays inside the field.
    assert records[1]["question"] == "which one, first?"
    assert records[1]["answer"] == "blue"


def test_csv_captions(tmp_path):
    path = tmp_path / "captions.csv"
    path.write_text("video,caption\nclip_9.mp4,a red square moves\n")
    ((location, record, error),) = list(iter_records(path))
    assert location == f"{path}:2" and error is None
    assert normalize(record) == {
        **PLAIN,
        "video": "clip_9.mp4",
        "question": "",
        "answer": "a red square moves",
        "type": "",
        "clip_id": "",
        "task": "caption",
    }


@pytest.mark.parametrize("wrapped", [False, True])
def test_json_list_and_annotations_object(tmp_path, wrapped):
    records = [
        {"video": "a.mp4", "question": "q1", "answer": "x", "type": "t"},
        "not an object",
        {"video": "b.mp4", "question": "q2", "answer": "y"},
    ]
    path = tmp_path / "qa.json"
    path.write_text(
        json.dumps({"annotations": records} if wrapped else records)
    )
    rows = list(iter_records(path))
    assert [location for location, _, _ in rows] == [
        f"{path}[0]",
        f"{path}[1]",
        f"{path}[2]",
    ]
    assert rows[0][1] == records[0] and rows[0][2] is None
    assert rows[1][1] is None and rows[1][2] == "not a JSON object"
    assert rows[2][1] == records[2]
    assert normalize(rows[0][1])["type"] == "t"


def test_msrvtt_qa_layout(tmp_path):
    records = [
        {"video_id": 7010, "question": "what is a man doing?", "answer": "run"},
        {
            "video_id": 7011,
            "question": "who sings?",
            "answer": "woman",
            "id": 1,
        },
    ]
    records[0]["id"] = 0
    path = tmp_path / "val_qa.json"
    path.write_text(json.dumps(records))
    normalized = [normalize(record) for _, record, _ in iter_records(path)]
    assert normalized == [
        {
            **PLAIN,
            "video": "video7010",
            "question": "what is a man doing?",
            "answer": "run",
            "type": "",
            "clip_id": "",
        },
        {
            **PLAIN,
            "video": "video7011",
            "question": "who sings?",
            "answer": "woman",
            "type": "",
            "clip_id": "",
        },
    ]


def test_normalize_keeps_type_and_clip_id_and_the_first_video_field():
    record = normalize(
        {
            "video_path": "x/clip.mp4",
            "file": "other.mp4",
            "question": "q",
            "answer": "a",
            "type": "aligned",
            "clip_id": "clip_7",
        }
    )
    assert record == {
        **PLAIN,
        "video": "x/clip.mp4",
        "question": "q",
        "answer": "a",
        "type": "aligned",
        "clip_id": "clip_7",
    }
    # A numeric string stays as it is: convert looks for "12.mp4", then
    # for MSRVTT-QA's "video12.mp4".
    assert normalize({"video_id": "12", "caption": "c"})["video"] == "12"


def test_normalize_of_a_caption_record():
    record = normalize({"video": "v.mp4", "caption": "a dog barks"})
    assert record["question"] == "" and record["answer"] == "a dog barks"


NEEDS_TEXT = "needs text 'question' and 'answer'"


@pytest.mark.parametrize(
    "record, field",
    [
        ({"question": "q", "answer": "a"}, "no video field"),
        ({"video": "", "question": "q", "answer": "a"}, "no video field"),
        ({"video": "v.mp4", "answer": "a"}, NEEDS_TEXT),
        ({"video": "v.mp4", "question": "q"}, NEEDS_TEXT),
        ({"video": "v.mp4", "question": "q", "answer": 3}, NEEDS_TEXT),
    ],
)
def test_normalize_names_the_missing_field(record, field):
    with pytest.raises(ValueError, match=field):
        normalize(record)


def test_unknown_extension_is_an_error(tmp_path):
    path = tmp_path / "qa.txt"
    path.write_text("video,question,answer\n")
    with pytest.raises(ValueError, match="Unknown annotation format"):
        list(iter_records(path))


def test_corpus_texts_reads_files_and_keeps_sentences(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text("a red square\n\n  a beep  \n")
    rows = [
        {"video": "a.mp4", "question": "what colour?", "answer": "green"},
        {"video": "b.mp4", "caption": "a blue circle"},
    ]
    jsonl = tmp_path / "train.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    texts = list(corpus_texts(["a sentence", str(text), str(jsonl)]))
    assert texts == [
        "a sentence",
        "a red square",
        "a beep",
        "what colour?",
        "green",
        "a blue circle",
    ]


def test_bytes_that_are_not_utf8_cost_only_their_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    good = json.dumps({"video": "a.mp4", "question": "q", "answer": "ü"})
    path.write_bytes(
        good.encode()
        + b'\n{"video": "b.mp4", "question": "q\xff", "answer": "a"}\n'
        + b"\xc3(\n"
        + good.encode()
        + b"\n"
    )
    rows = list(iter_records(path))
    assert [location for location, _, _ in rows] == [
        f"{path}:{line}" for line in (1, 2, 3, 4)
    ]
    assert rows[0][1]["answer"] == "ü" and rows[3][1] == rows[0][1]
    assert rows[1][1] is None
    assert rows[1][2] == "not UTF-8 text (byte 0xff at character 34)"
    assert rows[2][1] is None and rows[2][2].startswith("not UTF-8 text")


def test_a_lone_surrogate_escape_is_reported(tmp_path):
    """JSON can escape half of a UTF-16 pair ("\\ud800"): Python reads
    it, but it cannot be stored as UTF-8."""
    path = tmp_path / "qa.jsonl"
    path.write_text(
        '{"video": "a.mp4", "question": "q \\ud800", "answer": "a"}\n'
        '{"video": "b.mp4", "question": "\\ud83d\\ude00", "answer": "a"}\n'
    )
    (_, bad, why), (_, pair, none) = list(iter_records(path))
    assert bad is None and "not valid Unicode" in why
    assert pair["question"] == "\U0001f600" and none is None


@pytest.mark.parametrize("extension", ["csv", "json"])
def test_csv_and_json_entries_that_are_not_utf8(tmp_path, extension):
    path = tmp_path / f"qa.{extension}"
    if extension == "csv":
        path.write_bytes(b"video,question,answer\na.mp4,q\xfe,a\nb.mp4,q,a\n")
        locations = [f"{path}:2", f"{path}:3"]
    else:
        path.write_bytes(
            b'[{"video": "a.mp4", "question": "q\xfe", "answer": "a"},'
            b' {"video": "b.mp4", "question": "q", "answer": "a"}]'
        )
        locations = [f"{path}[0]", f"{path}[1]"]
    (first, bad, why), (second, good, none) = list(iter_records(path))
    assert [first, second] == locations
    assert bad is None and why.startswith("not UTF-8 text (byte 0xfe")
    assert good["video"] == "b.mp4" and none is None
