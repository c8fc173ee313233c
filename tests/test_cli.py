import json

import keras

from keras_mirasol import cli
from keras_mirasol.demo import random_batch
from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from tests.conftest import small_config


def test_tiny_model_overfits_one_batch():
    backbone = MirasolBackbone(**small_config())
    model = MirasolCausalLM(backbone)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
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


def test_tokenizer_command_reads_annotations(tmp_path, capsys):
    annotations = tmp_path / "train.jsonl"
    rows = [
        {"video": f"{i}.mp4", "question": "what colour?", "answer": c}
        for i, c in enumerate(["red", "green", "blue"] * 20)
    ]
    annotations.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "vocab.spm"
    code = cli.main(
        ["tokenizer", str(annotations), "--output", str(out)]
        + ["--vocabulary-size", "300"]
    )
    assert code == 0 and out.exists()
    assert "wrote" in capsys.readouterr().out
    from keras_mirasol.models import MirasolTokenizer

    tokenizer = MirasolTokenizer(proto=str(out))
    ids = tokenizer("what colour? green")
    assert tokenizer.detokenize(ids) == "what colour? green"
    # Trained on the annotations: their words are whole pieces.
    assert len(ids) <= 5
