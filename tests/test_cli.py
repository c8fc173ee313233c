import json

import keras
import numpy as np
import pytest

from keras_mirasol import cli
from keras_mirasol.data.synthetic import QUESTION_TYPES
from keras_mirasol.evaluation import normalize_answer
from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from tests.conftest import random_inputs
from tests.conftest import small_config


def test_tiny_model_overfits_one_batch():
    config = small_config()
    model = MirasolCausalLM(MirasolBackbone(**config))
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = random_inputs(config, batch_size=4, length=8)
    y = np.roll(x["token_ids"], -1, axis=1)
    history = model.fit(x, y, batch_size=4, epochs=300, verbose=0)
    text = history.history["text_loss"]
    assert text[-1] < 0.1 * text[0], (text[0], text[-1])
    total = history.history["loss"]
    assert total[-1] < 0.1 * total[0]
    assert "latent_loss" in history.history


@pytest.mark.one_backend
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


# The commands' plumbing (arguments, files, printed JSON) is the same on
# every backend; training, generation and export are tested per backend in
# tests/models, tests/test_training.py and tests/test_export.py.
@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A few-step demo: synth, convert, train, evaluate (with ablations)."""
    workdir = tmp_path_factory.mktemp("demo")
    argv = ["demo", "--workdir", str(workdir), "--clips", "10"]
    argv += ["--steps", "2", "--epochs", "1", "--batch-size", "4"]
    argv += ["--workers", "1", "--questions-per-clip", "2"]
    return workdir, argv


@pytest.mark.one_backend
def test_demo_runs_the_main_job_and_ends_with_json(demo_run, capsys):
    workdir, argv = demo_run
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    # 10 clips: 8 train, 1 val, 1 test; 6 questions per clip.
    assert summary["examples"] == 6
    assert set(summary["per_type"]) == set(QUESTION_TYPES)
    assert set(summary["zero_video"]) == set(summary["per_type"])
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert any(line.startswith("evaluation") for line in out)
    records = workdir / "data" / "demo" / "records"
    for split in ("train", "val", "test"):
        report = json.loads((records / split / "report.json").read_text())
        assert report["skipped"] == []
    assert (workdir / "runs" / "demo" / "config.json").exists()
    assert not (workdir / "runs" / "demo" / "backup").exists()


@pytest.mark.one_backend
def test_evaluate_and_generate_commands_load_the_run(demo_run, capsys):
    workdir, _ = demo_run
    run = str(workdir / "runs" / "demo")
    test_records = str(workdir / "data" / "demo" / "records" / "test")
    predictions = workdir / "predictions.jsonl"
    argv = ["evaluate", "--model", run, "--data", test_records]
    argv += ["--batch-size", "4", "--predictions", str(predictions)]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert result["examples"] == len(rows) == 6
    correct = [
        normalize_answer(r["prediction"]) == normalize_answer(r["answer"])
        for r in rows
    ]
    assert result["accuracy"] == pytest.approx(np.mean(correct))

    video = workdir / "data" / "demo" / "avqa" / "videos" / "clip_00009.mp4"
    argv = ["generate", "--model", run, "--video", str(video)]
    argv += ["--question", "what colour is the circle?"]
    argv += ["--question", "when does the hiss play?"]
    argv += ["--attention", str(workdir / "attention.png")]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("what colour is the circle? ->")
    assert lines[1].startswith("when does the hiss play? ->")
    # One map per question, as NAME_<index>.png.
    assert lines[2:] == [
        f"attention: {workdir / 'attention_0.png'}",
        f"attention: {workdir / 'attention_1.png'}",
    ]
    for index in range(2):
        png = (workdir / f"attention_{index}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.one_backend
def test_train_command_options(demo_run, capsys):
    # --text-loss-reduction is kept in the saved task; --questions-per-clip
    # trains on 2 clips x 2 of their questions per step.
    workdir, argv = demo_run
    if not (workdir / "runs" / "demo").exists():
        assert cli.main(argv) == 0
    records = workdir / "data" / "demo" / "records"
    out = workdir / "runs" / "per_response"
    argv = ["train", "--train", str(records / "train"), "--out", str(out)]
    argv += ["--steps", "2", "--epochs", "1", "--batch-size", "4"]
    argv += ["--text-loss-reduction", "response"]
    argv += ["--questions-per-clip", "2"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    from keras_mirasol.models import MirasolCausalLM

    lm = MirasolCausalLM.from_preset(str(out))
    assert lm.text_loss_reduction == "response"


COMMANDS = [
    "demo",
    "synth",
    "convert",
    "train",
    "evaluate",
    "generate",
    "export",
    "params",
    "bench",
    "tokenizer",
]


@pytest.mark.one_backend
@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_help_reads_like_a_manual(command, capsys):
    # What it does, an example of it, and help for every option.
    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    usage, rest = text.split("\n\n", 1)
    description = rest.split("\n\n", 1)[0]
    assert len(description.split()) >= 15, description
    assert f"\n  keras-mirasol {command} " in text.split("example:")[1]
    lines = text.split("options:")[1].split("example:")[0].splitlines()
    for i, line in enumerate(lines):
        if not line.startswith("  -") or line.startswith("  -h"):
            continue
        said = len(line.strip().split("  ")) > 1
        continued = i + 1 < len(lines) and lines[i + 1].startswith(" " * 24)
        assert said or continued, f"{command}: {line.strip()} has no help"
    if command in ("demo", "train"):
        # A default of 0 is shown as well.
        options = text.split("options:")[1]
        seed_help = options.split("--seed SEED")[1].split("\n  -")[0]
        assert "(default: 0)" in seed_help
