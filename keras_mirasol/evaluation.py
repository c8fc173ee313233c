"""Evaluation of a MirasolCausalLM on TFRecords.

`evaluate()` is what `keras-mirasol evaluate` runs. Each annotation is
scored as its task says (`keras_mirasol.data.annotations`):
- `qa` and `class`: the generated answer (greedy, centred window) against
  the reference, after `normalize_answer` (exact match);
- `choice`: the candidate answer the model finds most likely
  (`MirasolCausalLM.score`) against the right one;
- `caption`: one generated caption per clip against all of the clip's
  reference captions, by BLEU-4 and CIDEr (`caption_metrics`).

`zero_video` / `zero_audio` replace a modality with zeros (black frames,
silence) to measure how much the answers depend on it.
"""

import re
import string
import time

import numpy as np

from keras_mirasol.data.annotations import CHOICE_SEPARATOR
from keras_mirasol.data.record_io import DamagedRecords
from keras_mirasol.data.snippets import count_questions
from keras_mirasol.data.snippets import snippet_dataset

# Tasks scored right or wrong, question by question.
ACCURACY_TASKS = ("qa", "class", "choice")


def normalize_answer(text):
    """Lowercase, drop punctuation at the ends, collapse whitespace.

    Args:
        text: str, or anything `str()` turns into the answer.

    Returns:
        str: the normalised answer, e.g. `"Red."` -> `"red"`.
    """
    text = re.sub(r"\s+", " ", str(text).strip().lower())
    return text.strip(" .,!?;:\"'")


def _to_str(values):
    return [
        v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values
    ]


_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")


def caption_tokens(text):
    """Lowercased words without punctuation, joined by single spaces.

    What the COCO caption toolkit's tokenizer does to captions before
    scoring (it drops the same punctuation), without the Java program it
    runs for it.

    Args:
        text: str.

    Returns:
        str, e.g. `"A dog, running."` -> `"a dog running"`.
    """
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def caption_metrics(references, hypotheses):
    """Corpus BLEU-4 and CIDEr-D of generated captions.

    Scored by the COCO caption toolkit (`pycocoevalcap`, in the `eval`
    extra) on `caption_tokens` of each caption; CIDEr's document
    frequencies come from these references.

    Args:
        references: dict `{clip_id: [reference caption, ...]}`.
        hypotheses: dict `{clip_id: generated caption}`, the same keys.

    Returns:
        dict with `bleu4` and `cider` (floats) and `clips`.

    Raises:
        ImportError: `pycocoevalcap` is not installed (names the extra).
        ValueError: the keys differ, or a clip has no reference.
    """
    try:
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
    except ImportError as error:
        raise ImportError(
            "Caption metrics need the COCO caption toolkit: "
            "pip install 'keras-mirasol[eval]' (or pycocoevalcap)."
        ) from error
    if set(references) != set(hypotheses):
        raise ValueError(
            "references and hypotheses must have the same clips; only in "
            f"one of them: {sorted(set(references) ^ set(hypotheses))[:5]}"
        )
    if not references:
        raise ValueError("No captions to score.")
    empty = [key for key, refs in references.items() if not refs]
    if empty:
        raise ValueError(f"Clips without a reference caption: {empty[:5]}")
    gts = {
        key: [caption_tokens(r) for r in refs]
        for key, refs in references.items()
    }
    res = {key: [caption_tokens(hypotheses[key])] for key in references}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {
        "bleu4": round(float(bleu[3]), 4),
        "cider": round(float(cider), 4),
        "clips": len(references),
    }


def evaluate(
    lm,
    data,
    batch_size=64,
    zero_video=False,
    zero_audio=False,
    max_examples=None,
    verbose=False,
):
    """Accuracy of answers, labels and choices; BLEU-4/CIDEr of captions.

    Args:
        lm: `MirasolCausalLM` with a preprocessor.
        data: records (folder, glob, files) written by `convert`.
        batch_size: int. Every batch is padded to this size, so `generate`
            and `score` compile once. Defaults to `64`.
        zero_video: bool. Replace frames with black frames.
            Defaults to `False`.
        zero_audio: bool. Replace audio with silence (no effect on a
            video-only model). Defaults to `False`.
        max_examples: int or None. Stop after this many questions.
            Defaults to `None`, which means every question.
        verbose: bool. Show a progress bar over the questions.
            Defaults to `False`.

    Returns:
        dict: `accuracy` and `examples` over the questions scored right or
        wrong (`qa`, `class` and `choice` tasks; `accuracy` is None when
        there are only captions), `per_type` (`{type: {accuracy,
        examples}}`; questions annotated without a type count only in the
        overall figures), `per_task` (`{task: {accuracy, examples}}`, and
        for captions `{bleu4, cider, clips, examples}`), `seconds`, the
        ablation flags, `damaged_records` (records skipped because their
        checksum failed or their file was cut short, each with its file,
        number, byte offset and reason; see `keras-mirasol check-records`)
        and `predictions` (a list of `{clip_id, type, task, question,
        answer, prediction}`, with `choices` and their `scores` for
        multiple-choice questions).

    Raises:
        ValueError: `batch_size` or `max_examples` below 1, a task without
            a preprocessor, no records at `data`, or records without a
            question.
        TypeError: `batch_size` is not an int.
    """
    if max_examples is not None and max_examples < 1:
        raise ValueError(
            f"max_examples={max_examples}: give a positive number of "
            "questions, or None for all of them."
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(
            f"batch_size must be an int, got {batch_size!r} "
            f"({type(batch_size).__name__})."
        )
    if batch_size < 1:
        raise ValueError(
            f"batch_size={batch_size}: give a positive number of questions "
            "per batch."
        )
    preprocessor = getattr(lm, "preprocessor", None)
    if preprocessor is None:
        raise ValueError(
            f"evaluate needs a task with a preprocessor (it tokenizes the "
            f"questions), got {type(lm).__name__} without one: load it with "
            "`MirasolCausalLM.from_preset(...)`, or pass `preprocessor=` "
            "when you build the task."
        )
    start = time.time()
    damaged = DamagedRecords()
    ds = snippet_dataset(
        data, preprocessor, batch_size, keep_metadata=True, damaged=damaged
    )
    progress = None
    if verbose:
        import keras

        total = count_questions(data, damaged)
        if max_examples is not None:
            total = min(total, max_examples)
        progress = keras.utils.Progbar(total, unit_name="question")
    media_keys = ["video", "audio"] if preprocessor.use_audio else ["video"]
    predictions = []
    captions = {}  # (clip_id, prompt) -> the caption generated once
    for batch in ds.as_numpy_iterator():
        count = len(batch["prompts"])
        if max_examples is not None:
            count = min(count, max_examples - len(predictions))
        media = {key: batch[key][:count] for key in media_keys}
        if zero_video:
            media["video"] = np.zeros_like(media["video"])
        if zero_audio and "audio" in media:
            media["audio"] = np.zeros_like(media["audio"])
        rows = [
            {
                "clip_id": _to_str([batch["clip_id"][i]])[0],
                "type": _to_str([batch["types"][i]])[0],
                "task": _to_str([batch["tasks"][i]])[0],
                "question": _to_str([batch["prompts"][i]])[0],
                "answer": _to_str([batch["responses"][i]])[0],
            }
            for i in range(count)
        ]
        _choose(lm, media, rows, batch["choices"], batch_size)
        _generate(lm, media, rows, captions, batch_size)
        predictions.extend(rows)
        if progress is not None:
            progress.add(count)
        if max_examples is not None and len(predictions) >= max_examples:
            break
    if not predictions:
        raise ValueError(f"No questions in the records at {data}.")
    return {
        **_scores(predictions),
        "zero_video": zero_video,
        "zero_audio": zero_audio,
        "seconds": round(time.time() - start, 1),
        "damaged_records": [str(record) for record in damaged],
        "predictions": predictions,
    }


def _padded(inputs, size):
    """Rows repeated at the end up to `size`: one shape, one compile."""
    pad = size - len(inputs["prompts"])
    if not pad:
        return inputs
    return {
        key: (
            value + value[-1:] * pad
            if isinstance(value, list)
            else np.concatenate([value, np.repeat(value[-1:], pad, axis=0)])
        )
        for key, value in inputs.items()
    }


def _generate(lm, media, rows, captions, batch_size):
    """Fill `prediction` of the rows answered by generation.

    A clip's caption is generated once, however many references it has.
    """
    wanted = []
    for index, row in enumerate(rows):
        if row["task"] == "choice":
            continue
        key = (row["clip_id"], row["question"])
        if row["task"] != "caption" or key not in captions:
            wanted.append(index)
            if row["task"] == "caption":
                captions[key] = None
    if wanted:
        inputs = {key: value[wanted] for key, value in media.items()}
        inputs["prompts"] = [rows[i]["question"] for i in wanted]
        inputs = _padded(inputs, batch_size)
        outputs = lm.generate(
            inputs, max_length=lm.preprocessor.sequence_length
        )
        for index, output in zip(wanted, outputs):
            rows[index]["prediction"] = output.strip()
            if rows[index]["task"] == "caption":
                key = (rows[index]["clip_id"], rows[index]["question"])
                captions[key] = rows[index]["prediction"]
    for row in rows:
        if row["task"] == "caption" and "prediction" not in row:
            row["prediction"] = captions[(row["clip_id"], row["question"])]


def _choose(lm, media, rows, choices, batch_size):
    """Score the candidates of the multiple-choice rows; pick the likeliest.

    Each candidate is one row of `score` batches (its clip, the question,
    the candidate as the response), `batch_size` rows at a time.
    """
    flat = []  # (row index, candidate)
    for index, row in enumerate(rows):
        if row["task"] == "choice":
            candidates = _to_str([choices[index]])[0].split(CHOICE_SEPARATOR)
            row["choices"] = candidates
            flat.extend((index, candidate) for candidate in candidates)
    scores = []
    for begin in range(0, len(flat), batch_size):
        chunk = flat[begin : begin + batch_size]
        picked = [index for index, _ in chunk]
        inputs = {key: value[picked] for key, value in media.items()}
        inputs["prompts"] = [rows[i]["question"] for i in picked]
        inputs["responses"] = [candidate for _, candidate in chunk]
        result = lm.score(_padded(inputs, batch_size))
        scores.extend(np.asarray(result, "float64")[: len(chunk)].tolist())
    for (index, _), value in zip(flat, scores):
        rows[index].setdefault("scores", []).append(round(value, 4))
    for row in rows:
        if row["task"] == "choice":
            best = int(np.argmax(row["scores"]))
            row["prediction"] = row["choices"][best]


def _scores(predictions):
    """`accuracy`, `examples`, `per_type` and `per_task` of predictions."""
    scored = [p for p in predictions if p["task"] in ACCURACY_TASKS]
    correct = np.array(
        [
            normalize_answer(p["prediction"]) == normalize_answer(p["answer"])
            for p in scored
        ],
        bool,
    )

    def accuracy(mask):
        return {
            "accuracy": round(float(correct[mask].mean()), 4),
            "examples": int(mask.sum()),
        }

    types = np.array([p["type"] for p in scored], str)
    tasks = np.array([p["task"] for p in scored], str)
    per_task = {
        task: accuracy(tasks == task)
        for task in ACCURACY_TASKS
        if (tasks == task).any()
    }
    caption_rows = [p for p in predictions if p["task"] == "caption"]
    if caption_rows:
        references, hypotheses = {}, {}
        for row in caption_rows:
            references.setdefault(row["clip_id"], []).append(row["answer"])
            hypotheses[row["clip_id"]] = row["prediction"]
        per_task["caption"] = {
            **caption_metrics(references, hypotheses),
            "examples": len(caption_rows),
        }
    return {
        "accuracy": (round(float(correct.mean()), 4) if len(scored) else None),
        "examples": len(scored),
        "per_type": {
            str(name): accuracy(types == name)
            for name in sorted(set(types.tolist()) - {""})
        },
        "per_task": per_task,
    }
