"""`keras_mirasol.evaluation`: what `keras-mirasol evaluate` runs.

The model is untrained: what is checked is how answers are collected
and scored, not how good they are.
"""

import json
import shutil

import keras
import numpy as np
import pytest

from keras_mirasol.data.records import convert
from keras_mirasol.data.snippets import snippet_dataset
from keras_mirasol.evaluation import caption_metrics
from keras_mirasol.evaluation import evaluate
from keras_mirasol.evaluation import normalize_answer
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models.tokenizer import train_tokenizer
from keras_mirasol.training import build_task


def read_rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def model_and_result(avqa_records):
    """An untrained task and its evaluation on the test records."""
    rows = read_rows(avqa_records["train_annotations"])
    texts = [t for r in rows for t in (r["question"], r["answer"])]
    keras.utils.set_random_seed(1)  # before the tokenizer: see its notes
    tokenizer = MirasolTokenizer(proto=train_tokenizer(texts, 100))
    lm = build_task("mirasol_tiny", tokenizer, max_sequence_length=24)
    return lm, evaluate(lm, avqa_records["test"], batch_size=4)


@pytest.mark.one_backend
def test_normalize_answer():
    assert normalize_answer("  Red. ") == "red"
    assert normalize_answer('"Dark \n  Blue!"') == "dark blue"
    assert normalize_answer("it's red, then blue") == "it's red, then blue"
    assert normalize_answer(b"x".decode()) == "x"
    assert normalize_answer(3) == "3"


def test_every_question_is_answered_in_record_order(
    model_and_result, avqa_records
):
    _, result = model_and_result
    rows = read_rows(avqa_records["test_annotations"])
    assert result["examples"] == len(rows) == 12
    got = [
        (p["clip_id"], p["type"], p["question"], p["answer"])
        for p in result["predictions"]
    ]
    want = [(r["clip_id"], r["type"], r["question"], r["answer"]) for r in rows]
    assert got == want
    assert sum(t["examples"] for t in result["per_type"].values()) == 12
    assert not result["zero_video"] and not result["zero_audio"]


def test_accuracy_counts_normalised_exact_matches(
    model_and_result, avqa_records, tmp_path
):
    # Records whose reference answers are the model's own predictions
    # (in other case and punctuation) for every `video` question and for
    # the first question of each clip: exactly those are right.
    lm, result = model_and_result
    rows = read_rows(avqa_records["test_annotations"])
    right = [r["type"] == "video" or i % 6 == 0 for i, r in enumerate(rows)]
    for row, prediction, is_right in zip(rows, result["predictions"], right):
        if is_right:
            row["answer"] = prediction["prediction"].upper() + "!"
        # One question without a type: overall figures only.
        if row["type"] == "order":
            row["type"] = ""
    annotations = tmp_path / "test.jsonl"
    annotations.write_text("\n".join(json.dumps(r) for r in rows))
    records = str(tmp_path / "records")
    convert(
        avqa_records["videos"],
        str(annotations),
        records,
        workers=1,
        verbose=False,
    )
    scored = evaluate(lm, records, batch_size=4)
    assert [p["prediction"] for p in scored["predictions"]] == [
        p["prediction"] for p in result["predictions"]
    ]
    assert scored["accuracy"] == round(np.mean(right), 4)
    types = np.array([r["type"] for r in rows])
    assert set(scored["per_type"]) == set(types) - {""}
    for name, entry in scored["per_type"].items():
        assert entry["examples"] == (types == name).sum()
        expected = np.mean(np.array(right)[types == name])
        assert entry["accuracy"] == round(expected, 4)
    assert scored["per_type"]["video"]["accuracy"] == 1.0


def test_padding_and_max_examples_change_no_answer(
    model_and_result, avqa_records, capsys
):
    # Batches of 5 (the last padded from 2) instead of 4, stopped at 7.
    lm, result = model_and_result
    part = evaluate(
        lm, avqa_records["test"], batch_size=5, max_examples=7, verbose=True
    )
    assert "7/7" in capsys.readouterr().out  # the progress bar's end
    assert part["examples"] == 7
    assert part["predictions"] == result["predictions"][:7]


def test_zeroed_media_are_what_the_model_sees(model_and_result, avqa_records):
    lm, _ = model_and_result
    zeroed = evaluate(
        lm, avqa_records["test"], batch_size=4, zero_video=True, zero_audio=True
    )
    assert zeroed["zero_video"] and zeroed["zero_audio"]
    config = lm.backbone.get_config()
    frames = (4, config["num_frames"], *config["image_size"], 3)
    samples = lm.preprocessor.num_audio_samples
    prompts = [p["question"] for p in zeroed["predictions"][:4]]
    inputs = {
        "video": np.zeros(frames, "float32"),
        "audio": np.zeros((4, samples), "float32"),
        "prompts": prompts,
    }
    answers = lm.generate(inputs, max_length=lm.preprocessor.sequence_length)
    assert [a.strip() for a in answers] == [
        p["prediction"] for p in zeroed["predictions"][:4]
    ]


def test_max_examples_must_be_positive(model_and_result, avqa_records):
    lm, _ = model_and_result
    with pytest.raises(ValueError, match="max_examples=0"):
        evaluate(lm, avqa_records["test"], max_examples=0)


def test_a_damaged_record_is_skipped_and_reported(
    model_and_result, avqa_records, tmp_path
):
    """A flipped bit in the first clip's record: the other clip's six
    questions are answered as before, and the record is reported."""
    lm, result = model_and_result
    records = tmp_path / "records"
    shutil.copytree(avqa_records["test"], records)
    (shard,) = records.glob("*.tfrecord")
    data = bytearray(shard.read_bytes())
    data[1000] ^= 0x01
    shard.write_bytes(bytes(data))
    damaged = evaluate(lm, str(records), batch_size=4)
    assert damaged["predictions"] == result["predictions"][6:]
    assert damaged["damaged_records"] == [
        f"{shard}: record 0 at byte 0: damaged data (its checksum fails)"
    ]
    assert result["damaged_records"] == []


@pytest.mark.parametrize(
    "batch_size, error, words",
    [(0, ValueError, "batch_size=0"), (2.0, TypeError, "must be an int")],
)
def test_a_bad_batch_size_is_refused(
    model_and_result, avqa_records, batch_size, error, words
):
    lm, _ = model_and_result
    with pytest.raises(error, match=words):
        evaluate(lm, avqa_records["test"], batch_size=batch_size)


def test_a_task_without_a_preprocessor_is_refused(
    model_and_result, avqa_records
):
    lm, _ = model_and_result
    bare = MirasolCausalLM(backbone=lm.backbone, preprocessor=None)
    with pytest.raises(ValueError, match="needs a task with a preprocessor"):
        evaluate(bare, avqa_records["test"])


# --- Multiple choice and captions ----------------------------------------

CHOICES = ["red", "blue", "green", "a moving square"]


def write_mixed(folder, avqa_records, answers=None):
    """Per test clip: a multiple-choice question, two captions, a label
    and an open-ended question; `answers[clip]` is the right choice's
    index. Returns the records folder."""
    folder.mkdir(exist_ok=True)
    clips = sorted(
        {r["video"] for r in read_rows(avqa_records["test_annotations"])}
    )
    lines = []
    for index, video in enumerate(clips):
        stem = video.removesuffix(".mp4")
        right = (answers or {}).get(stem, index % len(CHOICES))
        lines += [
            {"video": video, "question": "what colour is shown first?",
             "choices": CHOICES, "answer": right, "type": "video"},
            {"video": video, "caption": "A red square, then a blue one."},
            {"video": video, "caption": "squares change colour"},
            {"video": video, "label": "beep"},
            {"video": video, "question": "when does the buzz play?",
             "answer": "first", "type": "audio"},
        ]  # fmt: skip
    annotations = folder / "mixed.jsonl"
    annotations.write_text("".join(json.dumps(line) + "\n" for line in lines))
    convert(
        avqa_records["videos"],
        str(annotations),
        str(folder / "records"),
        workers=1,
        verbose=False,
    )
    return str(folder / "records")


@pytest.fixture(scope="module")
def mixed(model_and_result, avqa_records, tmp_path_factory):
    lm, _ = model_and_result
    records = write_mixed(tmp_path_factory.mktemp("mixed"), avqa_records)
    return records, evaluate(lm, records, batch_size=4)


def clip_inputs(lm, records, clip_id):
    """The clip's media as the evaluation pipeline gives them."""
    ds = snippet_dataset(records, lm.preprocessor, 1, keep_metadata=True)
    for batch in ds.as_numpy_iterator():
        if batch["clip_id"][0].decode() == clip_id:
            return {"video": batch["video"], "audio": batch["audio"]}
    raise AssertionError(clip_id)


def test_multiple_choice_takes_the_likeliest_candidate(model_and_result, mixed):
    lm, _ = model_and_result
    records, result = mixed
    rows = [p for p in result["predictions"] if p["task"] == "choice"]
    assert len(rows) == 2 and result["per_task"]["choice"]["examples"] == 2
    for row in rows:
        assert row["choices"] == CHOICES
        # Each candidate scored alone, with no other row in its batch.
        media = clip_inputs(lm, records, row["clip_id"])
        alone = [
            float(
                lm.score(
                    {**media, "prompts": [row["question"]],
                     "responses": [candidate]}
                )[0]
            )
            for candidate in CHOICES
        ]  # fmt: skip
        np.testing.assert_allclose(row["scores"], alone, rtol=1e-4, atol=1e-3)
        assert row["prediction"] == CHOICES[int(np.argmax(alone))]


def test_choice_accuracy_follows_the_right_answer(
    model_and_result, avqa_records, mixed, tmp_path
):
    """Answers rewritten to the model's own pick score 1; to its least
    likely candidate, 0. Open-ended and label accuracy are unchanged."""
    lm, _ = model_and_result
    _, result = mixed
    rows = [p for p in result["predictions"] if p["task"] == "choice"]
    best = {r["clip_id"]: int(np.argmax(r["scores"])) for r in rows}
    worst = {r["clip_id"]: int(np.argmin(r["scores"])) for r in rows}
    for picks, expected in ((best, 1.0), (worst, 0.0)):
        records = write_mixed(tmp_path / str(expected), avqa_records, picks)
        again = evaluate(lm, records, batch_size=4)
        assert again["per_task"]["choice"]["accuracy"] == expected
        for task in ("qa", "class"):
            assert again["per_task"][task] == result["per_task"][task]


def test_a_clip_is_captioned_once_against_all_its_references(
    model_and_result, mixed
):
    lm, _ = model_and_result
    records, result = mixed
    captions = [p for p in result["predictions"] if p["task"] == "caption"]
    assert len(captions) == 4
    references, hypotheses = {}, {}
    for row in captions:
        references.setdefault(row["clip_id"], []).append(row["answer"])
        hypotheses.setdefault(row["clip_id"], set()).add(row["prediction"])
    assert all(len(h) == 1 for h in hypotheses.values())
    hypotheses = {k: h.pop() for k, h in hypotheses.items()}
    for clip_id, caption in hypotheses.items():
        media = clip_inputs(lm, records, clip_id)
        (expected,) = lm.generate(
            {**media, "prompts": [""]},
            max_length=lm.preprocessor.sequence_length,
        )
        assert caption == expected.strip()
    assert references == {
        k: ["A red square, then a blue one.", "squares change colour"]
        for k in hypotheses
    }
    scores = result["per_task"]["caption"]
    assert scores == {
        **caption_metrics(references, hypotheses),
        "examples": 4,
    }
    assert scores["clips"] == 2
    # Accuracy is over the questions scored right or wrong only.
    tasks = result["per_task"]
    assert result["examples"] == sum(
        tasks[t]["examples"] for t in ("qa", "class", "choice")
    ) == 6  # fmt: skip


@pytest.mark.one_backend
def test_caption_metrics():
    references = {
        "a": ["a man is playing a guitar on stage", "someone plays guitar"],
        "b": ["a cat sits on a red mat", "a cat on a mat"],
    }
    perfect = {
        "a": "A man is playing a guitar, on stage.",
        "b": "a cat on a mat",
    }
    scores = caption_metrics(references, perfect)
    # Case and punctuation do not count; each matches a reference.
    assert scores["bleu4"] == pytest.approx(1.0, abs=1e-3)
    assert scores["cider"] > 1 and scores["clips"] == 2
    partly = caption_metrics(
        references, {"a": "a man plays", "b": "a dog runs on grass"}
    )
    assert 0 < partly["cider"] < scores["cider"]
    assert partly["bleu4"] < scores["bleu4"]
    unrelated = caption_metrics(
        references, {"a": "xylophone zebra", "b": "quartz yodel"}
    )
    assert unrelated["bleu4"] == pytest.approx(0, abs=1e-6)
    assert unrelated["cider"] == 0
    with pytest.raises(ValueError, match="same clips"):
        caption_metrics(references, {"a": "x"})


@pytest.mark.one_backend
def test_caption_metrics_without_the_toolkit_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pycocoevalcap.bleu.bleu", None)
    with pytest.raises(ImportError, match=r"keras-mirasol\[eval\]"):
        caption_metrics({"a": ["x"]}, {"a": "x"})
