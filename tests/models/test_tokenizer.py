import numpy as np
import pytest
import tensorflow as tf

from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models import train_tokenizer
from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY

TEXTS = [
    "what colour is the square?",
    "red",
    "which sound came first?",
    "a high tone",
] * 30


def test_trained_vocabulary_has_the_special_tokens():
    proto = train_tokenizer(TEXTS, vocabulary_size=300)
    tokenizer = MirasolTokenizer(proto=proto)
    assert tokenizer.pad_token_id == 0
    assert tokenizer.start_token_id == 2 and tokenizer.end_token_id == 3
    ids = tokenizer("what colour is the ✓ square?")
    # Byte fallback spells characters never seen in training.
    assert tokenizer.token_to_id("<unk>") not in np.asarray(ids).tolist()
    assert tokenizer.detokenize(ids) == "what colour is the ✓ square?"


def test_runs_inside_tf_data():
    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    ds = tf.data.Dataset.from_tensor_slices(["red square", "a beep"])
    out = [x.tolist() for x in ds.map(tokenizer).as_numpy_iterator()]
    assert out == [
        np.asarray(tokenizer("red square")).tolist(),
        np.asarray(tokenizer("a beep")).tolist(),
    ]


def test_empty_corpus_is_an_error():
    with pytest.raises(ValueError, match="no text"):
        train_tokenizer(["", "  "], vocabulary_size=50)


def test_a_file_path_is_an_error_that_names_the_reader(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("red\n")
    with pytest.raises(ValueError, match="is a file.*corpus_texts"):
        train_tokenizer(["red square", str(corpus)], vocabulary_size=50)
