"""SentencePiece tokenizer for Mirasol text, and offline vocabulary training."""

import io
import os

import keras
import keras_hub
import sentencepiece

from keras_mirasol.data.annotations import iter_records
from keras_mirasol.models.backbone import MirasolBackbone

PAD_PIECE = "<pad>"
UNK_PIECE = "<unk>"
START_PIECE = "<s>"
END_PIECE = "</s>"


@keras.saving.register_keras_serializable(package="keras_mirasol")
class MirasolTokenizer(keras_hub.tokenizers.SentencePieceTokenizer):
    """A `keras_hub` SentencePiece tokenizer with Mirasol's special tokens.

    The vocabulary must define `<pad>` (id 0), `<unk>`, `<s>` (start) and
    `</s>` (end), as `train_tokenizer` does. It runs eagerly on Python
    strings and inside `tf.data` (TensorFlow Text ops).

    Args:
        proto: bytes or path. A serialized SentencePiece model.

    Example:
    ```python
    proto = keras_mirasol.models.train_tokenizer(
        ["what colour is the square?", "red"] * 50, vocabulary_size=40
    )
    tokenizer = keras_mirasol.models.MirasolTokenizer(proto=proto)
    tokenizer("what colour is the square?")
    ```
    """

    backbone_cls = MirasolBackbone

    def __init__(self, proto=None, **kwargs):
        self._add_special_token(START_PIECE, "start_token")
        self._add_special_token(END_PIECE, "end_token")
        self._add_special_token(PAD_PIECE, "pad_token")
        super().__init__(proto=proto, **kwargs)


# Annotation fields whose text trains the vocabulary.
TEXT_FIELDS = ("question", "answer", "caption", "prompt", "response")


def _annotation_texts(record):
    for field in TEXT_FIELDS:
        value = record.get(field)
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):
            yield from (v for v in value if isinstance(v, str))


def _read_file(path):
    """Texts of an annotation file (JSONL, JSON, CSV) or lines of a text file.

    Annotation files are read like `convert` reads them; entries that
    cannot be read are skipped (`convert` reports them).
    """
    if path.endswith((".jsonl", ".json", ".csv")):
        for _, record, _ in iter_records(path):
            if record is not None:
                yield from _annotation_texts(record)
        return
    with open(path, encoding="utf-8") as file:
        yield from file


def _read_lines(texts_or_files):
    for item in texts_or_files:
        lines = _read_file(item) if os.path.isfile(item) else [item]
        for line in lines:
            if line.strip():
                yield line.strip()


def train_tokenizer(
    texts_or_files,
    vocabulary_size,
    model_type="bpe",
    lowercase=False,
    byte_fallback=True,
    output_path=None,
):
    """Train a SentencePiece vocabulary offline, with Mirasol's tokens.

    Args:
        texts_or_files: iterable of str. Sentences, or paths of UTF-8
            files: `.txt` read line by line; `.jsonl`, `.json` (a list of
            records, or MSRVTT-QA style) and `.csv` annotations, whose
            `question`, `answer`, `caption`, `prompt` and `response`
            fields are read. Both may be mixed.
        vocabulary_size: int. Largest vocabulary size. A small corpus may
            give fewer pieces (the limit is not hard).
        model_type: str. `"bpe"` (default: it merges well even on small
            corpora), `"unigram"`, `"word"` or `"char"`.
        lowercase: bool. Lowercase text before training and tokenizing.
        byte_fallback: bool. Spell unseen characters as UTF-8 bytes, so any
            text can be tokenized. Needs `vocabulary_size > 260`; turned off
            below that.
        output_path: str or None. Also write the model to this file.

    Returns:
        bytes: the serialized SentencePiece model, for
        `MirasolTokenizer(proto=...)`.
    """
    lines = list(_read_lines(texts_or_files))
    if not lines:
        raise ValueError(
            "train_tokenizer got no text: pass sentences or paths of "
            "non-empty text files."
        )
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocabulary_size,
        model_type=model_type,
        hard_vocab_limit=False,
        byte_fallback=byte_fallback and vocabulary_size > 260,
        pad_id=0,
        unk_id=1,
        bos_id=2,
        eos_id=3,
        pad_piece=PAD_PIECE,
        unk_piece=UNK_PIECE,
        bos_piece=START_PIECE,
        eos_piece=END_PIECE,
        normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
        minloglevel=2,
    )
    proto = model.getvalue()
    if output_path:
        with open(output_path, "wb") as file:
            file.write(proto)
    return proto
