"""SentencePiece tokenizer for Mirasol text, and offline vocabulary training."""

import io
import os

import keras
import keras_hub
import sentencepiece

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

    `keras.utils.set_random_seed` clears TensorFlow's eager caches, and
    with them the TensorFlow Text op of every tokenizer made before it
    (tensorflow/text#570: "Resource ... SentencepieceOp ... does not
    exist"). Seed first, or call `tokenizer.set_proto(tokenizer.proto)`
    after seeding; `keras_mirasol.training.train` does the latter.

    Args:
        proto: bytes or path. A serialized SentencePiece model.
            Defaults to `None`, which leaves the vocabulary unset until a
            preset loads it (`from_preset`).

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


def _lines(texts):
    for text in texts:
        if not isinstance(text, str):
            raise ValueError(
                "train_tokenizer takes an iterable of strings, got a "
                f"{type(text).__name__}: {text!r}."
            )
        if os.path.isfile(text):
            raise ValueError(
                f"train_tokenizer takes sentences, but {text!r} is a file. "
                "Read its text first: "
                "`keras_mirasol.data.annotations.corpus_texts([path])` "
                "reads text and annotation files (or use `keras-mirasol "
                "tokenizer PATH ...`)."
            )
        for line in text.splitlines():
            if line.strip():
                yield line.strip()


def train_tokenizer(
    texts,
    vocabulary_size,
    model_type="bpe",
    lowercase=False,
    byte_fallback=True,
    output_path=None,
):
    """Train a SentencePiece vocabulary offline, with Mirasol's tokens.

    Args:
        texts: iterable of str. Sentences (a string with newlines counts
            as one sentence per line; blank lines are skipped). To train on
            files, read them with
            `keras_mirasol.data.annotations.corpus_texts(paths)`.
        vocabulary_size: int. Largest vocabulary size. A small corpus may
            give fewer pieces (the limit is not hard).
        model_type: str. `"bpe"` (it merges well even on small corpora),
            `"unigram"`, `"word"` or `"char"`. Defaults to `"bpe"`.
        lowercase: bool. Lowercase text before training and tokenizing.
            Defaults to `False`.
        byte_fallback: bool. Spell unseen characters as UTF-8 bytes, so any
            text can be tokenized. Needs `vocabulary_size > 260`; turned off
            below that. Defaults to `True`.
        output_path: str or None. Also write the model to this file.
            Defaults to `None`.

    Returns:
        bytes: the serialized SentencePiece model, for
        `MirasolTokenizer(proto=...)`.
    """
    lines = list(_lines(texts))
    if not lines:
        raise ValueError(
            "train_tokenizer got no text: pass non-empty sentences."
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


# Instruction-tuned keras-hub language models' prompt formats, by
# tokenizer class.
CHAT_TEMPLATES = {
    "Gemma3Tokenizer": (
        "<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n"
    ),
    "Qwen3Tokenizer": (
        "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    ),
}


def chat_template(tokenizer):
    """The chat prompt format of a pretrained text decoder's tokenizer.

    For `MirasolCausalLMPreprocessor(prompt_template=...)` when the text
    decoder is an instruction-tuned model (`gemma3_instruct_270m`): the
    question goes where the model was tuned to read a user's turn, and
    the answer is generated as the model's turn.

    Args:
        tokenizer: a keras-hub tokenizer.

    Returns:
        str with one `{prompt}`.

    Raises:
        ValueError: for a tokenizer with no known chat format.

    Example:
    ```python
    # tokenizer = keras_hub.tokenizers.Gemma3Tokenizer.from_preset(
    #     "gemma3_instruct_270m")
    # MirasolCausalLMPreprocessor.from_backbone(
    #     backbone, tokenizer, prompt_template=chat_template(tokenizer))
    template = keras_mirasol.models.tokenizer.CHAT_TEMPLATES[
        "Gemma3Tokenizer"
    ]
    template.format(prompt="what colour is the square?")
    ```
    """
    for cls in type(tokenizer).__mro__:
        if cls.__name__ in CHAT_TEMPLATES:
            return CHAT_TEMPLATES[cls.__name__]
    raise ValueError(
        f"No chat format is known for a {type(tokenizer).__name__}; known: "
        f"{', '.join(CHAT_TEMPLATES)}. Pass `prompt_template` yourself, a "
        "string with one `{prompt}`, or none for a model that is not "
        "instruction-tuned."
    )
