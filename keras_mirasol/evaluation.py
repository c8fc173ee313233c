"""Exact-match evaluation of a MirasolCausalLM on TFRecords.

`evaluate()` is what `keras-mirasol evaluate` runs: it generates an answer
for every question of the records (greedy, centred window) and compares it
with the reference after `normalize_answer`. `zero_video` / `zero_audio`
replace a modality with zeros (black frames, silence) to measure how much
the answers depend on it.
"""

import re
import time

import numpy as np

from keras_mirasol.data.record_io import DamagedRecords
from keras_mirasol.data.snippets import count_questions
from keras_mirasol.data.snippets import snippet_dataset


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


def evaluate(
    lm,
    data,
    batch_size=64,
    zero_video=False,
    zero_audio=False,
    max_examples=None,
    verbose=False,
):
    """Exact-match accuracy of generated answers, overall and per type.

    Args:
        lm: `MirasolCausalLM` with a preprocessor.
        data: records (folder, glob, files) written by `convert`.
        batch_size: int. Every batch is padded to this size, so `generate`
            compiles once. Defaults to `64`.
        zero_video: bool. Replace frames with black frames.
            Defaults to `False`.
        zero_audio: bool. Replace audio with silence (no effect on a
            video-only model). Defaults to `False`.
        max_examples: int or None. Stop after this many questions.
            Defaults to `None`, which means every question.
        verbose: bool. Show a progress bar over the questions.
            Defaults to `False`.

    Returns:
        dict: `accuracy`, `examples`, `per_type` (`{type: {accuracy,
        examples}}`; questions annotated without a type count only in
        the overall figures), `seconds`, the ablation flags,
        `damaged_records` (records skipped because their checksum failed or
        their file was cut short, each with its file, number, byte offset
        and reason; see `keras-mirasol check-records`) and
        `predictions` (a list of `{clip_id, type, question, answer,
        prediction}`).

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
    predictions = []
    for batch in ds.as_numpy_iterator():
        count = len(batch["prompts"])
        if max_examples is not None:
            count = min(count, max_examples - len(predictions))
        inputs = {"video": batch["video"], "prompts": batch["prompts"]}
        if preprocessor.use_audio:
            inputs["audio"] = batch["audio"]
        if zero_video:
            inputs["video"] = np.zeros_like(inputs["video"])
        if zero_audio and "audio" in inputs:
            inputs["audio"] = np.zeros_like(inputs["audio"])
        pad = batch_size - len(batch["prompts"])
        if pad:
            inputs = {
                k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
                for k, v in inputs.items()
            }
        inputs["prompts"] = _to_str(inputs["prompts"])
        outputs = lm.generate(inputs, max_length=preprocessor.sequence_length)
        for i in range(count):
            predictions.append(
                {
                    "clip_id": _to_str([batch["clip_id"][i]])[0],
                    "type": _to_str([batch["types"][i]])[0],
                    "question": _to_str([batch["prompts"][i]])[0],
                    "answer": _to_str([batch["responses"][i]])[0],
                    "prediction": outputs[i].strip(),
                }
            )
        if progress is not None:
            progress.add(count)
        if max_examples is not None and len(predictions) >= max_examples:
            break
    if not predictions:
        raise ValueError(f"No questions in the records at {data}.")
    correct = np.array(
        [
            normalize_answer(p["prediction"]) == normalize_answer(p["answer"])
            for p in predictions
        ]
    )
    types = np.array([p["type"] for p in predictions])
    per_type = {
        str(name): {
            "accuracy": round(float(correct[types == name].mean()), 4),
            "examples": int((types == name).sum()),
        }
        for name in sorted(set(types) - {""})
    }
    return {
        "accuracy": round(float(correct.mean()), 4),
        "examples": len(predictions),
        "per_type": per_type,
        "zero_video": zero_video,
        "zero_audio": zero_audio,
        "seconds": round(time.time() - start, 1),
        "damaged_records": [str(record) for record in damaged],
        "predictions": predictions,
    }
