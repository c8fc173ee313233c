"""Read question/answer, multiple-choice, caption and label annotations.

Formats:
- JSONL: one object per line, e.g.
  `{"video": "clip_001.mp4", "question": "...", "answer": "..."}`;
- CSV with a header, columns `video`, `question`, `answer` (or `caption`);
  this covers NExT-QA (`video,frame_count,width,height,question,answer,
  qid,type,a0,a1,a2,a3,a4`: `answer` is the index of the right `a<i>`);
- VGGSound's CSV without a header, `youtube_id,start_seconds,label,split`:
  the 10 seconds from `start_seconds` of video `youtube_id`, labelled;
- JSON: a list of such objects, or `{"annotations": [...]}`; this covers
  the MSRVTT-QA layout (`{"video_id": 7010, "question", "answer"}`, video
  file `video7010.mp4`);
- ActivityNet-QA: `<split>_q.json` (`video_name`, `question`,
  `question_id`) read together with the `<split>_a.json` beside it
  (`question_id`, `answer`, `type` 0-8, named as in `ACTIVITYNET_QA_TYPES`);
- ActivityNet Captions: `{video_id: {"duration", "timestamps": [[start,
  end], ...], "sentences": [...]}}`, one caption per time range.

Every annotation has a task, which says how evaluation scores it:
- `qa`: a question and its open-ended answer (exact match);
- `choice`: a question, its candidate answers (`choices`, a list; or the
  columns `a0`, `a1`, ...) and the right one (`answer`: its text or its
  index); evaluation picks the candidate the model finds most likely;
- `caption`: `caption` in place of a question and answer (BLEU-4, CIDEr);
- `class`: a `label` in place of a question and answer (exact match).

Optional fields: `type` (question type, reported per type by evaluation),
`clip_id`, `split` (`convert --split` keeps one), and a time range that
cuts the clip from a longer video: `start` and `end` in seconds (or
`start_seconds`/`end_seconds`, or `segment`/`timestamp` `[start, end]`).
"""

import csv
import json
import math
import os

VIDEO_FIELDS = (
    "video",
    "video_path",
    "video_id",
    "video_name",
    "youtube_id",
    "clip",
    "file",
)
TASKS = ("qa", "choice", "caption", "class")
# Joins a question's candidate answers into one string in the records.
CHOICE_SEPARATOR = "\x1f"
# VGGSound's clips are the 10 seconds from `start_seconds`.
VGGSOUND_SECONDS = 10.0
VGGSOUND_FIELDS = ("youtube_id", "start_seconds", "label", "split")
# ActivityNet-QA's `type` numbers (its dataset README).
ACTIVITYNET_QA_TYPES = (
    "motion",
    "spatial_relation",
    "temporal_relation",
    "yes_no",
    "color",
    "object",
    "location",
    "number",
    "other",
)
# Header names that mark a CSV file's first line as its header.
_HEADER_FIELDS = set(VIDEO_FIELDS) | {"question", "answer", "caption"}


def iter_records(path):
    """Yield `(location, record, error)` for every annotation in `path`.

    `location` is `"file:line"` (JSONL, CSV) or `"file[index]"` (JSON);
    `record` is a dict, or None with `error` saying why the entry cannot be
    read (a JSONL line that is not JSON, text that is not UTF-8). Reading
    goes on after a bad entry.

    Args:
        path: str. A `.jsonl`, `.json` or `.csv` file.

    Raises:
        ValueError: an unknown extension, or a `.json` file that does not
            parse as a whole.
    """
    path = str(path)
    # utf-8-sig: spreadsheets often start CSV files with a byte-order mark.
    # Bytes that are not UTF-8 are kept as lone surrogates
    # ("surrogateescape"), so that only their own entry is reported.
    with open(path, encoding="utf-8-sig", errors="surrogateescape") as file:
        for location, record, error in _read_entries(path, file):
            if error is None:
                error = _text_error(record)
            if error is not None:
                record = None
            yield location, record, error


def _read_entries(path, file):
    """`(location, record or None, error or None)` of each entry, by the
    file's extension."""
    if path.endswith(".jsonl"):
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            location = f"{path}:{number}"
            if _bad_text(line) is not None:
                yield location, None, _utf8_error(line)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                yield location, None, f"not JSON ({error})"
                continue
            if not isinstance(record, dict):
                yield location, None, "not a JSON object"
                continue
            yield location, record, None
    elif path.endswith(".json"):
        records = _load_json(path, file)
        if _is_activitynet_captions(records):
            yield from _activitynet_captions(path, records)
            return
        if isinstance(records, dict):
            records = records.get("annotations", [records])
        answers = None
        if path.endswith("_q.json"):
            answers = _activitynet_qa_answers(path)
        for index, record in enumerate(records):
            location = f"{path}[{index}]"
            if not isinstance(record, dict):
                yield location, None, "not a JSON object"
                continue
            if answers is not None:
                record, error = _with_answer(record, answers, path)
                if error is not None:
                    yield location, None, error
                    continue
            yield location, record, None
    elif path.endswith(".csv"):
        yield from _read_csv(path, file)
    else:
        raise ValueError(
            f"Unknown annotation format {path!r}: use .jsonl, .json or "
            ".csv (see keras_mirasol/data/annotations.py)."
        )


def _load_json(path, file):
    try:
        return json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


def _read_csv(path, file):
    """Entries of a CSV file with a header, or of VGGSound's (without)."""
    rows = csv.reader(file)
    first = next(rows, None)
    if first is None:
        return
    if _HEADER_FIELDS & {name.strip() for name in first}:
        header = [name.strip() for name in first]
        # Line 1 is the header.
        for number, row in enumerate(rows, 2):
            yield f"{path}:{number}", _csv_record(header, row), None
        return
    if len(first) != len(VGGSOUND_FIELDS) or not _is_number(first[1]):
        raise ValueError(
            f"{path} starts with {first}, which is neither a header naming "
            f"a video field (one of {list(VIDEO_FIELDS)}) and `question`/"
            "`answer` or `caption`, nor a VGGSound row "
            f"({','.join(VGGSOUND_FIELDS)}). Add a header line."
        )
    for number, row in enumerate([first, *rows], 1):
        location = f"{path}:{number}"
        if len(row) != len(VGGSOUND_FIELDS):
            yield (
                location,
                None,
                f"{len(row)} fields, VGGSound rows have "
                f"{len(VGGSOUND_FIELDS)} ({','.join(VGGSOUND_FIELDS)})",
            )
            continue
        yield location, dict(zip(VGGSOUND_FIELDS, row)), None


def _csv_record(header, row):
    record = dict(zip(header, row))
    if len(row) > len(header):
        record[None] = row[len(header) :]  # as csv.DictReader keeps them
    return record


def _is_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _is_activitynet_captions(records):
    if not isinstance(records, dict) or not records:
        return False
    value = next(iter(records.values()))
    return isinstance(value, dict) and "timestamps" in value


def _activitynet_captions(path, records):
    """One caption entry per time range of each video."""
    for video, entry in records.items():
        location = f"{path}[{video!r}]"
        timestamps = entry.get("timestamps") if isinstance(entry, dict) else 0
        sentences = entry.get("sentences") if isinstance(entry, dict) else 0
        if not isinstance(timestamps, list) or not isinstance(sentences, list):
            yield location, None, "needs lists `timestamps` and `sentences`"
            continue
        if len(timestamps) != len(sentences):
            yield (
                location,
                None,
                f"{len(timestamps)} timestamps but {len(sentences)} "
                "sentences: they pair up one to one",
            )
            continue
        for index, (segment, sentence) in enumerate(zip(timestamps, sentences)):
            record = {"video": video, "segment": segment, "caption": sentence}
            yield f"{location}[{index}]", record, None


def _activitynet_qa_answers(path):
    """ActivityNet-QA's answers beside `<split>_q.json`, by question id."""
    answers_path = path[: -len("_q.json")] + "_a.json"
    if not os.path.isfile(answers_path):
        raise ValueError(
            f"{path} holds ActivityNet-QA questions, whose answers are in "
            f"{answers_path}, which does not exist. Put the dataset's "
            f"{os.path.basename(answers_path)} beside it."
        )
    with open(answers_path, encoding="utf-8-sig") as file:
        answers = _load_json(answers_path, file)
    if not isinstance(answers, list):
        raise ValueError(
            f"{answers_path} must hold a list of {{question_id, answer, "
            f"type}} objects, got a {type(answers).__name__}."
        )
    return {
        str(entry.get("question_id")): entry
        for entry in answers
        if isinstance(entry, dict)
    }


def _with_answer(record, answers, path):
    """An ActivityNet-QA question with its answer and named type."""
    question_id = str(record.get("question_id"))
    answer = answers.get(question_id)
    if answer is None:
        answers_path = path[: -len("_q.json")] + "_a.json"
        reason = f"question_id {question_id!r} has no answer in {answers_path}"
        return None, reason
    record = {**record, "answer": answer.get("answer")}
    kind = answer.get("type")
    if isinstance(kind, int) and 0 <= kind < len(ACTIVITYNET_QA_TYPES):
        record["type"] = ACTIVITYNET_QA_TYPES[kind]
    elif kind is not None:
        record["type"] = str(kind)
    return record, None


def _bad_text(value):
    """The first string in `value` (nested lists and dicts, keys too) that
    is not valid Unicode text, or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value
        return None
    if isinstance(value, dict):
        value = [*value.keys(), *value.values()]
    if isinstance(value, list):
        for item in value:
            bad = _bad_text(item)
            if bad is not None:
                return bad
    return None


def _utf8_error(text):
    """Where `text` (read with "surrogateescape") holds bytes that are not
    UTF-8."""
    column = next(
        i for i, char in enumerate(text) if "\udc80" <= char <= "\udcff"
    )
    byte = ord(text[column]) - 0xDC00
    return f"not UTF-8 text (byte 0x{byte:02x} at character {column + 1})"


def _text_error(record):
    """Why `record` holds text that cannot be stored as UTF-8, or None."""
    bad = _bad_text(record)
    if bad is None:
        return None
    if any("\udc80" <= char <= "\udcff" for char in bad):
        return _utf8_error(bad)
    return (
        "text that is not valid Unicode (a lone surrogate escape): "
        f"{bad[:80]!r}"
    )


def normalize(record):
    """One annotation as `{video, question, answer, type, clip_id, task,
    choices, start, end, split, precut}`.

    `task` is one of `TASKS`; `choices` the candidate answers of a
    multiple-choice question (else `[]`); `start`/`end` the time range in
    seconds (None for the whole video); `precut` the name of a file that
    holds only the range (VGGSound's `<youtube_id>_<start:06d>`), used
    when the whole video is not there; else "".

    Raises:
        ValueError: naming the missing or malformed field.
    """
    video = next(
        (record[k] for k in VIDEO_FIELDS if record.get(k) not in (None, "")),
        None,
    )
    if video is None:
        raise ValueError(
            f"no video field (one of {list(VIDEO_FIELDS)}) in {record}"
        )
    if isinstance(video, int):
        video = f"video{video}"  # MSRVTT-QA numbers its videos
    start, end = _time_range(record)
    precut = ""
    if "start_seconds" in record and "youtube_id" in record:
        if end is None:  # VGGSound: 10 s from start_seconds
            end = start + VGGSOUND_SECONDS
        precut = f"{record['youtube_id']}_{int(start):06d}"
    choices = _choices(record)
    if choices:
        task = "choice"
        question = record.get("question")
        answer = _chosen(record.get("answer"), choices)
    elif "caption" in record and "answer" not in record:
        task, question, answer = "caption", "", record["caption"]
    elif "label" in record and "answer" not in record:
        task, question, answer = "class", "", record["label"]
    else:
        task = "qa"
        question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise ValueError(
            "needs text 'question' and 'answer' (or 'caption', or "
            f"'label'), got {record}"
        )
    return {
        "video": str(video),
        "question": question,
        "answer": answer,
        "type": str(record.get("type") or ""),
        "clip_id": str(record.get("clip_id") or ""),
        "task": task,
        "choices": choices,
        "start": start,
        "end": end,
        "split": str(record.get("split") or ""),
        "precut": precut,
    }


def _seconds(value, field):
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(
            f"{field} must be a time in seconds >= 0, got {value!r}"
        )
    return seconds


def _time_range(record):
    """`(start, end)` seconds of the annotation, `(None, None)` if none."""
    for pair in ("segment", "timestamp"):
        if record.get(pair) is not None:
            value = record[pair]
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(
                    f"{pair} must be [start, end] in seconds, got {value!r}"
                )
            start, end = value
            break
    else:
        start = record.get("start", record.get("start_seconds"))
        end = record.get("end", record.get("end_seconds"))
    if start in (None, "") and end in (None, ""):
        return None, None
    start = 0.0 if start in (None, "") else _seconds(start, "start")
    end = None if end in (None, "") else _seconds(end, "end")
    if end is not None and end <= start:
        raise ValueError(
            f"the time range ends at {end:g} s, not after its start at "
            f"{start:g} s"
        )
    return start, end


def _choices(record):
    """The candidate answers: `choices`, or the columns `a0`, `a1`, ..."""
    choices = record.get("choices")
    if choices is None:
        choices, index = [], 0
        while f"a{index}" in record:
            choices.append(record[f"a{index}"])
            index += 1
    if not isinstance(choices, list) or not all(
        isinstance(c, str) and c.strip() for c in choices
    ):
        raise ValueError(
            f"choices must be a list of non-empty texts, got {choices!r}"
        )
    if len(choices) == 1:
        raise ValueError(
            f"a multiple-choice question needs >= 2 choices, got {choices!r}"
        )
    if any(CHOICE_SEPARATOR in c for c in choices):
        raise ValueError(
            "a choice holds the character U+001F, which "
            "separates choices in the records"
        )
    return choices


def _chosen(answer, choices):
    """The right choice's text, from its text or its index."""
    if isinstance(answer, str) and answer in choices:
        return answer
    if isinstance(answer, str) and answer.strip().isdigit():
        answer = int(answer.strip())
    if isinstance(answer, int) and not isinstance(answer, bool):
        if 0 <= answer < len(choices):
            return choices[answer]
        raise ValueError(
            f"answer index {answer} is outside the {len(choices)} choices"
        )
    raise ValueError(
        f"answer {answer!r} is neither one of the choices {choices} nor "
        "an index into them"
    )


# Annotation fields whose text trains a vocabulary.
TEXT_FIELDS = (
    "question",
    "answer",
    "caption",
    "label",
    "prompt",
    "response",
    "choices",
)


def _record_texts(record):
    for field in TEXT_FIELDS:
        value = record.get(field)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))
    index = 0  # NExT-QA's candidate answers, a0, a1, ...
    while isinstance(record.get(f"a{index}"), str):
        yield record[f"a{index}"]
        index += 1


def file_texts(path):
    """Texts of an annotation file (JSONL, JSON, CSV) or lines of a text file.

    Annotation files are read like `convert` reads them, for their
    `question`, `answer`, `caption`, `label`, `prompt`, `response` and
    `choices` fields (and NExT-QA's `a0`, `a1`, ...);
    entries that cannot be read are skipped (`convert` reports them).

    Args:
        path: str. A UTF-8 file.

    Yields:
        str.
    """
    path = str(path)
    if path.endswith((".jsonl", ".json", ".csv")):
        for _, record, _ in iter_records(path):
            if record is not None:
                yield from _record_texts(record)
        return
    with open(path, encoding="utf-8") as file:
        yield from file


def corpus_texts(texts_or_files):
    """Sentences from a mix of strings and paths, for `train_tokenizer`.

    Args:
        texts_or_files: iterable of str. Sentences, or paths of UTF-8
            files: `.txt` read line by line; `.jsonl`, `.json` (a list of
            records, or MSRVTT-QA style) and `.csv` annotations
            (`file_texts`).

    Yields:
        str: non-blank, stripped lines.
    """
    for item in texts_or_files:
        lines = file_texts(item) if os.path.isfile(item) else [item]
        for line in lines:
            if line.strip():
                yield line.strip()
