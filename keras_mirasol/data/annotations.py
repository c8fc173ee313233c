"""Read question/answer and caption annotations.

Formats:
- JSONL: one object per line, e.g.
  `{"video": "clip_001.mp4", "question": "...", "answer": "..."}`;
- CSV with a header, columns `video`, `question`, `answer` (or `caption`);
- JSON: a list of such objects, or `{"annotations": [...]}`; this covers
  the MSRVTT-QA layout (`{"video_id": 7010, "question", "answer"}`, video
  file `video7010.mp4`).

A caption annotation (`caption` instead of `question`/`answer`) becomes an
empty question answered by the caption. Optional fields: `type` (question
type, reported per type by evaluation) and `clip_id`.
"""

import csv
import json
import os

VIDEO_FIELDS = ("video", "video_path", "video_id", "clip", "file")


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
        try:
            records = json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if isinstance(records, dict):
            records = records.get("annotations", [records])
        for index, record in enumerate(records):
            if not isinstance(record, dict):
                yield f"{path}[{index}]", None, "not a JSON object"
                continue
            yield f"{path}[{index}]", record, None
    elif path.endswith(".csv"):
        # Line 1 is the header.
        for number, record in enumerate(csv.DictReader(file), 2):
            yield f"{path}:{number}", record, None
    else:
        raise ValueError(
            f"Unknown annotation format {path!r}: use .jsonl, .json or "
            ".csv (see keras_mirasol/data/annotations.py)."
        )


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
    """One annotation as `{video, question, answer, type, clip_id}`.

    Raises:
        ValueError: naming the missing field.
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
    if "caption" in record and "answer" not in record:
        question, answer = "", record["caption"]
    else:
        question, answer = record.get("question"), record.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise ValueError(
            f"needs text 'question' and 'answer' (or 'caption'), got {record}"
        )
    return {
        "video": str(video),
        "question": question,
        "answer": answer,
        "type": str(record.get("type") or ""),
        "clip_id": str(record.get("clip_id") or ""),
    }


# Annotation fields whose text trains a vocabulary.
TEXT_FIELDS = ("question", "answer", "caption", "prompt", "response")


def _record_texts(record):
    for field in TEXT_FIELDS:
        value = record.get(field)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def file_texts(path):
    """Texts of an annotation file (JSONL, JSON, CSV) or lines of a text file.

    Annotation files are read like `convert` reads them, for their
    `question`, `answer`, `caption`, `prompt` and `response` fields;
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
