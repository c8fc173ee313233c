"""`keras_mirasol.training`: what `keras-mirasol train` runs."""

import json
import os

import keras
import numpy as np
import pytest

from keras_mirasol import training
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models.tokenizer import train_tokenizer


def annotation_texts(path):
    with open(path) as f:
        rows = [json.loads(line) for line in f]
    return rows, [t for r in rows for t in (r["question"], r["answer"])]


def test_build_task_sizes_the_backbone_and_schedules_the_rate(avqa_records):
    _, texts = annotation_texts(avqa_records["train_annotations"])
    tokenizer = MirasolTokenizer(proto=train_tokenizer(texts, 100))
    lm = training.build_task(
        "mirasol_tiny",
        tokenizer,
        learning_rate=0.02,
        steps=110,
        warmup_steps=10,
        weight_decay=0.5,
        text_loss_reduction="response",
        av_num_layers=3,
    )
    config = lm.backbone.get_config()
    assert config["vocabulary_size"] == tokenizer.vocabulary_size()
    assert config["av_num_layers"] == 3
    assert lm.text_loss_reduction == "response"
    assert lm.preprocessor.tokenizer is tokenizer
    optimizer = lm.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW)
    assert optimizer.weight_decay == 0.5
    assert optimizer.global_clipnorm == 1.0
    rate = keras.optimizers.schedules.deserialize(
        optimizer.get_config()["learning_rate"]
    )
    at = [float(rate(step)) for step in (0, 5, 10, 110)]
    np.testing.assert_allclose(at, [0.0, 0.01, 0.02, 0.001], rtol=1e-5)


def test_train_saves_checkpoints_history_and_a_preset_that_reloads(
    avqa_records, tmp_path
):
    out = tmp_path / "run"
    lm, history = training.train(
        avqa_records["train"],
        str(out),
        val_data=avqa_records["test"],
        steps=5,  # rounded down to 2 steps in each of 2 epochs
        epochs=2,
        batch_size=4,
        vocabulary_size=100,
        verbose=0,
        max_sequence_length=24,
        av_num_layers=1,
        text_num_layers=1,
    )
    assert int(lm.optimizer.iterations) == 4
    assert len(history["loss"]) == len(history["val_loss"]) == 2
    assert json.loads((out / "history.json").read_text()) == history
    # A finished run leaves no backup to restore from.
    assert not (out / "backup").exists()
    assert sorted(os.listdir(out / "checkpoints")) == [
        "epoch_001.weights.h5",
        "epoch_002.weights.h5",
    ]

    # The tokenizer was trained on the records' questions and answers.
    tokenizer = lm.preprocessor.tokenizer
    assert tokenizer.vocabulary_size() <= 100
    question = "what colour is on screen when the hiss plays?"
    assert tokenizer.detokenize(tokenizer(question)) == question

    restored = MirasolCausalLM.from_preset(str(out))
    assert restored.backbone.get_config() == lm.backbone.get_config()
    trained = {w.path: w.numpy() for w in lm.backbone.weights}
    for w in restored.backbone.weights:
        np.testing.assert_array_equal(w.numpy(), trained[w.path])

    # The last epoch's checkpoint holds the final weights.
    fresh = MirasolCausalLM.from_preset(str(out))
    for w in fresh.backbone.weights:
        w.assign(np.zeros(w.shape, w.dtype))
    fresh.load_weights(str(out / "checkpoints" / "epoch_002.weights.h5"))
    for w in fresh.backbone.weights:
        np.testing.assert_array_equal(w.numpy(), trained[w.path])


@pytest.mark.one_backend
def test_train_takes_a_tokenizer_made_before_it_seeds(avqa_records, tmp_path):
    # Seeding inside `train` clears TensorFlow's eager caches, which held
    # this tokenizer's op (tensorflow/text#570): train must still run.
    _, texts = annotation_texts(avqa_records["train_annotations"])
    tokenizer = MirasolTokenizer(proto=train_tokenizer(texts, 80))
    lm, _ = training.train(
        avqa_records["train"],
        str(tmp_path / "run"),
        tokenizer=tokenizer,
        steps=1,
        epochs=1,
        batch_size=2,
        verbose=0,
        av_num_layers=1,
        text_num_layers=1,
    )
    config = lm.backbone.get_config()
    assert config["vocabulary_size"] == tokenizer.vocabulary_size()
    assert lm.preprocessor.tokenizer is tokenizer
