import json

from keras_mirasol import cli
from keras_mirasol.demo import random_batch
from keras_mirasol.demo import training_model
from keras_mirasol.models import MirasolBackbone
from tests.conftest import small_config


def test_tiny_model_overfits_one_batch():
    backbone = MirasolBackbone(**small_config())
    model = training_model(backbone)
    x, y = random_batch(backbone, batch_size=4, length=8)
    history = model.fit(x, y, batch_size=4, epochs=300, verbose=0)
    text = history.history["text_loss"]
    assert text[-1] < 0.1 * text[0], (text[0], text[-1])
    total = history.history["loss"]
    assert total[-1] < 0.1 * total[0]
    assert "latent_loss" in history.history


def test_demo_command_prints_a_falling_loss(capsys):
    code = cli.main(["demo", "--steps", "3", "--batch-size", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert code == 0
    assert result["steps"] == 3
    assert result["last_loss"] < result["first_loss"]
