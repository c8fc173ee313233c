"""`keras_mirasol.training`: what `keras-mirasol train` runs."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_mirasol import cli
from keras_mirasol import training
from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models.tokenizer import train_tokenizer
from tests.conftest import h5_arrays


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


def train_bf16(avqa_records, out, steps, epochs, capsys):
    """`keras-mirasol train --dtype mixed_bfloat16`; its history."""
    argv = ["train", "--train", avqa_records["train"], "--out", str(out)]
    argv += ["--steps", str(steps), "--epochs", str(epochs)]
    argv += ["--batch-size", "12", "--dtype", "mixed_bfloat16"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    return json.loads((out / "history.json").read_text())


@pytest.mark.one_backend
def test_train_in_mixed_bfloat16_computes_in_bfloat16(
    avqa_records, tmp_path, capsys
):
    out = tmp_path / "run"
    history = train_bf16(avqa_records, out, steps=4, epochs=2, capsys=capsys)
    assert np.isfinite(history["loss"]).all()
    lm = MirasolCausalLM.from_preset(str(out))
    backbone = lm.backbone
    assert backbone.dtype_policy.name == "mixed_bfloat16"
    assert {w.dtype for w in backbone.weights} == {"float32"}
    alone = MirasolBackbone.from_preset(str(out))
    assert alone.dtype_policy.name == "mixed_bfloat16"
    x, _, _ = lm.preprocessor(
        {
            "video": np.zeros((1, 16, 32, 32, 3), "float32"),
            "audio": np.zeros((1, 32000), "float32"),
            "prompts": ["what colour?"],
            "responses": ["red"],
        }
    )
    outputs = backbone(x)
    dtypes = {k: str(v.dtype) for k, v in outputs.items()}
    # The losses' own arithmetic stays in float32.
    assert dtypes == {
        "av_latents": "bfloat16",
        "sequence_output": "bfloat16",
        "latent_loss": "float32",
    }


@pytest.mark.large
@pytest.mark.one_backend
def test_500_steps_in_mixed_bfloat16_stay_finite(
    avqa_records, tmp_path, capsys
):
    """500 steps of `mirasol_tiny` in bfloat16: no NaN or Inf loss (the
    run would stop with `NonFiniteLossError`), finite weights, learning."""
    out = tmp_path / "run"
    history = train_bf16(avqa_records, out, steps=500, epochs=10, capsys=capsys)
    assert len(history["loss"]) == 10
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] < history["loss"][0] / 2
    lm = MirasolCausalLM.from_preset(str(out))
    for w in lm.backbone.weights:
        assert np.isfinite(keras.ops.convert_to_numpy(w.value)).all(), w.path


@pytest.mark.one_backend
def test_train_skips_damaged_records_and_lists_them(
    avqa_records, tmp_path, capsys
):
    records = tmp_path / "records"
    shutil.copytree(avqa_records["train"], records)
    (shard,) = records.glob("*.tfrecord")
    data = bytearray(shard.read_bytes())
    data[len(data) - 100] ^= 0x01  # inside the last clip's data
    shard.write_bytes(bytes(data))
    out = tmp_path / "run"
    argv = ["train", "--train", str(records), "--out", str(out)]
    argv += ["--steps", "1", "--epochs", "1", "--batch-size", "2"]
    argv += ["--config", '{"av_num_layers": 1, "text_num_layers": 1}']
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["damaged_records"] == str(out / "damaged_records.json")
    with open(out / "damaged_records.json") as f:
        (line,) = json.load(f)
    assert line.startswith(f"{shard}: record 3 at byte ")
    assert line.endswith(": damaged data (its checksum fails)")


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(
    avqa_records, tmp_path
):
    # A learning rate of 1e30 is a real divergence: step 1 starts from the
    # initial weights (a finite loss) and moves them by about 1e29; the
    # loss of step 2, the first of epoch 2, overflows.
    _, texts = annotation_texts(avqa_records["train_annotations"])
    tokenizer = MirasolTokenizer(proto=train_tokenizer(texts, 100))
    overrides = dict(
        max_sequence_length=24,
        use_audio=False,
        av_num_layers=1,
        text_num_layers=1,
    )
    out = tmp_path / "run"
    with pytest.raises(training.NonFiniteLossError) as error:
        training.train(
            avqa_records["train"],
            str(out),
            tokenizer=tokenizer,
            steps=2,
            epochs=2,
            batch_size=2,
            learning_rate=1e30,
            verbose=0,
            **overrides,
        )
    assert isinstance(error.value, RuntimeError)
    assert error.value.step == 2
    assert not np.isfinite(error.value.loss)
    message = str(error.value)
    assert f"The loss is {error.value.loss} at step 2 (epoch 2)" in message
    checkpoint = str(out / "checkpoints" / "epoch_001.weights.h5")
    assert error.value.checkpoint == checkpoint
    assert f"The last good checkpoint, {checkpoint} (after step 1)" in message

    # Nothing after step 1 was saved: no checkpoint of epoch 2, no preset,
    # no history; every weights file left (the checkpoint and the backup
    # of epoch 1) holds finite values only.
    assert os.listdir(out / "checkpoints") == ["epoch_001.weights.h5"]
    assert not (out / "config.json").exists()
    assert not (out / "model.weights.h5").exists()
    assert not (out / "history.json").exists()
    weight_files = [
        os.path.join(folder, name)
        for folder, _, names in os.walk(out)
        for name in names
        if name.endswith(".h5")
    ]
    assert checkpoint in weight_files
    for path in weight_files:
        arrays = list(h5_arrays(path).values())
        assert arrays
        for array in arrays:
            if np.issubdtype(array.dtype, np.floating):
                assert np.isfinite(array).all(), path

    # The checkpoint loads into the model the run built (optimizer state
    # included), with the weights of epoch 1, not the initial ones.
    lm = training.build_task("mirasol_tiny", tokenizer, **overrides)
    lm.optimizer.build(lm.trainable_variables)
    initial = [w.numpy() for w in lm.weights]
    lm.load_weights(checkpoint)
    assert int(lm.optimizer.iterations) == 1
    loaded = [w.numpy() for w in lm.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(initial, loaded))
    for w in lm.weights + lm.optimizer.variables:
        assert np.isfinite(w.numpy()).all(), w.path


def test_the_nan_guard_names_the_global_step_and_a_non_finite_weight(
    tmp_path,
):
    # The callback `train` puts first, on a small model: the step counts
    # over epochs, and weights that overflow while the loss stays finite
    # stop training before the epoch's checkpoint.
    pattern = str(tmp_path / "epoch_{epoch:03d}.weights.h5")
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    guard = training._StopOnNonFiniteLoss(3, pattern, 0.1)
    guard.set_model(model)
    for epoch in (0, 1):
        guard.on_epoch_begin(epoch)
        guard.on_batch_end(0, {"loss": 1.0})
        guard.on_epoch_end(epoch, {"loss": 1.0})
        model.save_weights(pattern.format(epoch=epoch + 1))
    guard.on_epoch_begin(2)
    with pytest.raises(training.NonFiniteLossError) as error:
        guard.on_batch_end(1, {"loss": float("inf")})
    assert error.value.step == 2 * 3 + 2
    assert "The loss is inf at step 8 (epoch 3)" in str(error.value)
    assert error.value.checkpoint == pattern.format(epoch=2)

    kernel = model.layers[0].kernel
    kernel.assign(np.full(kernel.shape, np.inf, "float32"))
    with pytest.raises(training.NonFiniteLossError) as error:
        guard.on_epoch_end(2, {"loss": 1.0})
    assert error.value.step == 9
    assert f"The weight {kernel.path} holds NaN or Inf" in str(error.value)


def train_command(records, out):
    config = {"max_sequence_length": 24, "av_num_layers": 1}
    config["text_num_layers"] = 1
    return [
        sys.executable,
        "-m",
        "keras_mirasol.cli",
        "train",
        "--train",
        records,
        "--out",
        str(out),
        "--steps",
        "8",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "1",
        "--config",
        json.dumps(config),
    ]


def complete_steps(backup):
    if not backup.is_dir():
        return []
    return [
        int(path.name[len("step_") :])
        for path in backup.iterdir()
        if path.name.startswith("step_") and not path.name.endswith(".partial")
    ]


@pytest.mark.one_backend
@pytest.mark.parametrize(
    "backend",
    [
        "jax",
        # The same checkpoint code on the other backends: 4-5 minutes of
        # subprocesses, run with `-m large` (passed at the last change of
        # the checkpoint code).
        pytest.param("tensorflow", marks=pytest.mark.large),
        pytest.param("torch", marks=pytest.mark.large),
    ],
)
def test_a_killed_train_process_resumes_to_the_uninterrupted_weights(
    avqa_records, tmp_path, backend
):
    # `keras-mirasol train` killed with SIGKILL in epoch 2 (once step 5 of
    # 8 is checkpointed: the kill lands wherever the process is, maybe in
    # the middle of writing step 6), then the same command again: the
    # final weights and the history equal those of an uninterrupted run,
    # bit for bit (same machine, same threads, deterministic CPU kernels).
    # The backend is the subprocesses': this test runs once, under JAX.
    env = dict(os.environ, KERAS_BACKEND=backend)
    reference = tmp_path / "reference"
    subprocess.run(
        train_command(avqa_records["train"], reference),
        env=env,
        check=True,
        capture_output=True,
    )
    out = tmp_path / "killed"
    command = train_command(avqa_records["train"], out)
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while max(complete_steps(out / "backup"), default=0) < 5:
            assert process.poll() is None, "the run ended before the kill"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "model.weights.h5").exists()
    # A newer checkpoint half-written at a kill: never loaded, deleted.
    partial = out / "backup" / "step_000007.partial"
    partial.mkdir(exist_ok=True)
    (partial / "model.weights.h5").write_bytes(b"\x89HDF\r\n")

    resumed = subprocess.run(
        command, env=env, check=True, capture_output=True, text=True
    )
    step = max(complete_steps(out / "backup"), default=None)
    assert step is None  # a finished run leaves no backup
    assert "Resuming " in resumed.stdout
    resumed_at = int(resumed.stdout.split(" at step ")[1].split()[0])
    assert 5 <= resumed_at < 8
    want = h5_arrays(reference / "model.weights.h5")
    got = h5_arrays(out / "model.weights.h5")
    assert sorted(got) == sorted(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    history = json.loads((reference / "history.json").read_text())
    assert json.loads((out / "history.json").read_text()) == history
    assert sorted(os.listdir(out / "checkpoints")) == [
        "epoch_001.weights.h5",
        "epoch_002.weights.h5",
    ]


@pytest.mark.one_backend
def test_resuming_with_other_arguments_names_them(avqa_records, tmp_path):
    # A backup left by a run with another batch size and seed: `train`
    # refuses it before it builds anything, and says what to do.
    out = tmp_path / "run"
    run = training._run_arguments(avqa_records["train"], batch_size=4, seed=0)
    (out / "backup" / "step_000003").mkdir(parents=True)
    state = {"step": 3, "epochs_done": 0, "history": {}, "run": run}
    (out / "backup" / "step_000003" / "state.json").write_text(
        json.dumps(state)
    )
    with pytest.raises(ValueError) as error:
        training.train(avqa_records["train"], str(out), batch_size=2, seed=1)
    message = str(error.value)
    assert f"{out} holds an unfinished run with other arguments" in message
    assert "batch_size: 4 then, 2 now" in message
    assert "seed: 0 then, 1 now" in message
    assert "Run the same command again to resume it" in message
    assert str(out / "backup") in message


def saved_model_of_pretrained_parts(folder):
    """A tiny VideoPrism (frozen) and Gemma3 model saved as a preset."""
    from keras_mirasol.models import MirasolCausalLMPreprocessor
    from keras_mirasol.models import chat_template
    from tests.models.test_pretrained_parts import from_components
    from tests.models.test_pretrained_parts import tiny_gemma3
    from tests.models.test_pretrained_parts import tiny_gemma3_tokenizer

    keras.utils.set_random_seed(0)
    tokenizer = tiny_gemma3_tokenizer()
    backbone = from_components(
        text_decoder=tiny_gemma3(tokenizer.vocabulary_size()),
        freeze=("video_encoder",),
    )
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer, prompt_template=chat_template(tokenizer)
    )
    MirasolCausalLM(backbone, preprocessor).save_to_preset(str(folder))
    return {w.path: w.numpy() for w in backbone.weights}


def test_train_fine_tunes_a_saved_model_of_pretrained_parts(
    avqa_records, tmp_path
):
    """`keras-mirasol train --preset <saved task>`: its weights, tokenizer,
    prompt template and frozen parts are kept; only trainable ones move."""
    import keras_hub

    saved = tmp_path / "start"
    before = saved_model_of_pretrained_parts(saved)
    assert training.is_task_preset(str(saved))
    assert not training.is_task_preset("mirasol_tiny")
    out = tmp_path / "run"
    command = ["train", "--preset", str(saved), "--train"]
    command += [avqa_records["train"], "--out", str(out), "--steps", "3"]
    command += ["--epochs", "1", "--batch-size", "4"]
    assert cli.main(command) == 0
    tuned = MirasolCausalLM.from_preset(str(out))
    start = MirasolCausalLM.from_preset(str(saved))
    tokenizer = tuned.preprocessor.tokenizer
    assert isinstance(tokenizer, keras_hub.tokenizers.Gemma3Tokenizer)
    question = "what colour is the square"
    assert tokenizer.detokenize(tokenizer(question)) == question
    assert tuned.preprocessor.prompt_template == (
        start.preprocessor.prompt_template
    )
    assert tuned.backbone.get_config() == start.backbone.get_config()
    prism = tuned.backbone.video_encoder.backbone
    assert not prism.trainable
    frozen = {w.path for w in prism.weights}
    moved = 0
    for w in tuned.backbone.weights:
        if w.path in frozen:
            np.testing.assert_array_equal(w.numpy(), before[w.path], w.path)
        else:
            moved += not np.array_equal(w.numpy(), before[w.path])
    # The gated cross-attention opened and Mirasol's own parts trained.
    gates = [
        float(block.attention_gate.numpy())
        for block in tuned.backbone.text_decoder.cross_attention_blocks
    ]
    assert all(gate != 0 for gate in gates)
    assert moved > len(tuned.backbone.trainable_weights) // 2


@pytest.mark.one_backend
def test_fine_tuning_a_saved_model_refuses_a_new_tokenizer_or_config(
    avqa_records, tmp_path
):
    saved = tmp_path / "start"
    saved_model_of_pretrained_parts(saved)
    common = dict(steps=1, epochs=1, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match="leave out the tokenizer"):
        training.train(
            avqa_records["train"],
            str(tmp_path / "a"),
            preset=str(saved),
            tokenizer="vocab.spm",
            **common,
        )
    with pytest.raises(ValueError, match=r"\['av_num_layers'\] cannot be"):
        training.train(
            avqa_records["train"],
            str(tmp_path / "b"),
            preset=str(saved),
            av_num_layers=3,
            **common,
        )
    # The clip may grow by whole snippets only.
    with pytest.raises(ValueError, match="by whole snippets"):
        training.train(
            avqa_records["train"],
            str(tmp_path / "c"),
            preset=str(saved),
            num_frames=24,
            num_snippets=2,
            **common,
        )


def test_a_saved_model_loads_for_longer_clips_with_its_parts(tmp_path):
    """`train --preset <saved task> --config '{"num_snippets": ...}'`: the
    same weights, frozen parts, tokenizer and template, on longer clips."""
    saved = tmp_path / "start"
    before = saved_model_of_pretrained_parts(saved)
    start = MirasolCausalLM.from_preset(str(saved))
    snippets = start.backbone.num_snippets
    lm = training.load_task(str(saved), num_snippets=2 * snippets)
    assert lm.backbone.num_snippets == 2 * snippets
    assert lm.backbone.num_frames == 2 * start.backbone.num_frames
    assert lm.preprocessor.num_frames == lm.backbone.num_frames
    assert lm.preprocessor.prompt_template == (
        start.preprocessor.prompt_template
    )
    assert lm.backbone.count_params() == start.backbone.count_params()
    for w in lm.backbone.weights:
        np.testing.assert_array_equal(w.numpy(), before[w.path], w.path)
    assert not lm.backbone.video_encoder.backbone.trainable
    assert [w.path for w in lm.backbone.trainable_weights] == [
        w.path for w in start.backbone.trainable_weights
    ]
    assert lm.optimizer is not None  # compiled, ready to fine-tune
