"""`keras_mirasol.checkpointing`: atomic checkpoints a killed run resumes.

A small Keras model with dropout stands in for the task: what is checked
(atomic writes, half-written checkpoints ignored, fallback to an older
checkpoint, random generator state restored, a failed write) does not
depend on the model. `tests/test_training.py` kills a real `keras-mirasol
train` process and resumes it.
"""

import errno
import os
import subprocess

import keras
import numpy as np
import pytest

from keras_mirasol.checkpointing import CheckpointError
from keras_mirasol.checkpointing import RunCheckpoints
from keras_mirasol.checkpointing import latest_checkpoint
from keras_mirasol.checkpointing import restore
from keras_mirasol.checkpointing import save_weights_atomically
from tests.conftest import h5_arrays


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8),
            keras.layers.Dropout(0.5, seed=seed),
            keras.layers.Dense(1),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse", metrics=["mae"])
    return model


def data(count=12):
    x = np.arange(count * 4, dtype="float32").reshape(count, 4) / 40.0
    return x, x.sum(axis=1, keepdims=True)


def fit_with_checkpoints(
    model, folder, epochs, every=1, initial_epoch=0, skip=0, metrics=None
):
    saver = RunCheckpoints(
        str(folder / "backup"),
        str(folder / "epoch_{epoch:03d}.weights.h5"),
        steps_per_epoch=3,
        every=every,
        start_step=initial_epoch * 3 + skip,
        run={"name": "small"},
        tokenizer_proto=b"not a real tokenizer",
        metrics=metrics,
        keep=100,
    )
    x, y = data()
    model.fit(
        x[4 * skip :],
        y[4 * skip :],
        batch_size=4,
        epochs=epochs,
        initial_epoch=initial_epoch,
        shuffle=False,
        callbacks=[saver],
        verbose=0,
    )
    return saver


def test_checkpoints_restore_weights_optimizer_and_dropout_state(tmp_path):
    model = small_model()
    saver = fit_with_checkpoints(model, tmp_path, epochs=2)
    backup = tmp_path / "backup"
    assert sorted(os.listdir(backup)) == [
        f"step_{step:06d}" for step in range(1, 7)
    ]
    assert sorted(os.listdir(tmp_path))[:2] == [
        "backup",
        "epoch_001.weights.h5",
    ]
    folder, state = latest_checkpoint(str(backup))
    assert folder == str(backup / "step_000006")
    assert state["step"] == 6
    assert state["epochs_done"] == 2
    assert state["run"] == {"name": "small"}
    assert state["history"] == saver.history
    assert len(state["history"]["loss"]) == 2
    with open(os.path.join(folder, "tokenizer.model"), "rb") as f:
        assert f.read() == b"not a real tokenizer"

    # A model restored at step 3 and trained for epoch 2 ends where the
    # uninterrupted one did: weights, Adam moments and the dropout
    # masks (whose generator state is not in a weights file) all match.
    resumed = small_model(seed=1)  # other initial weights and seeds
    restore(resumed, str(backup / "step_000003"))
    assert int(resumed.optimizer.iterations) == 3
    fit_with_checkpoints(resumed, tmp_path / "resumed", 2, initial_epoch=1)
    for a, b in zip(model.weights, resumed.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for a, b in zip(model.optimizer.variables, resumed.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_a_resume_mid_epoch_logs_the_whole_epoch(tmp_path):
    # Restored after step 4 (one batch into epoch 2), the rest of epoch 2
    # logs the loss and `mae` means of all its three batches, as the
    # uninterrupted run did, exactly (the sums add in the same order).
    model = small_model()
    saver = fit_with_checkpoints(model, tmp_path, epochs=2)
    resumed = small_model(seed=1)
    _, state = restore(resumed, str(tmp_path / "backup" / "step_000004"))
    assert len(state["metrics"]) == len(model.metrics_variables)
    rest = fit_with_checkpoints(
        resumed,
        tmp_path / "resumed",
        2,
        initial_epoch=1,
        skip=1,
        metrics=state["metrics"],
    )
    assert set(rest.history) == {"loss", "mae"}
    for key in ("loss", "mae"):
        assert rest.history[key] == saver.history[key][1:], key
    # Without the saved sums, the epoch's means cover its last two
    # batches only.
    alone = small_model(seed=1)
    restore(alone, str(tmp_path / "backup" / "step_000004"))
    rest = fit_with_checkpoints(
        alone, tmp_path / "alone", 2, initial_epoch=1, skip=1
    )
    assert rest.history["loss"] != saver.history["loss"][1:]


def test_dropout_state_is_part_of_the_checkpoint(tmp_path):
    # Without the generator state, the resumed dropout masks differ: the
    # equality above depends on it.
    model = small_model()
    fit_with_checkpoints(model, tmp_path, epochs=2)
    resumed = small_model(seed=1)
    restore(resumed, str(tmp_path / "backup" / "step_000003"))
    seed = [v for v in resumed.variables if "seed_generator" in v.path][0]
    seed.assign(keras.ops.zeros_like(seed.value))
    fit_with_checkpoints(resumed, tmp_path / "resumed", 2, initial_epoch=1)
    assert not np.array_equal(
        model.weights[0].numpy(), resumed.weights[0].numpy()
    )


def test_half_written_checkpoints_are_never_loaded(tmp_path, capsys):
    model = small_model()
    fit_with_checkpoints(model, tmp_path, epochs=1)
    backup = tmp_path / "backup"
    # A process killed while writing step 4 leaves `.partial`; a damaged
    # disk leaves a complete-looking step 5 whose weights are cut short.
    partial = backup / "step_000004.partial"
    partial.mkdir()
    (partial / "model.weights.h5").write_bytes(b"\x89HDF\r\n")
    damaged = backup / "step_000005"
    damaged.mkdir()
    for name in ("state.json", "state.npz", "tokenizer.model"):
        (damaged / name).write_bytes(
            (backup / "step_000003" / name).read_bytes()
        )
    weights = (backup / "step_000003" / "model.weights.h5").read_bytes()
    (damaged / "model.weights.h5").write_bytes(weights[: len(weights) // 2])

    folder, state = latest_checkpoint(str(backup))
    assert not partial.exists()
    assert folder == str(damaged)
    restored = small_model(seed=1)
    folder, state = restore(restored, folder)
    assert folder == str(backup / "step_000003")
    assert state["step"] == 3
    assert f"Could not restore {damaged}" in capsys.readouterr().out
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_atomic_save_replaces_the_file_or_leaves_it(tmp_path):
    model = small_model()
    path = str(tmp_path / "model.weights.h5")
    save_weights_atomically(model, path)
    before = h5_arrays(path)
    model.layers[0].kernel.assign(np.ones((4, 8), "float32"))
    save_weights_atomically(model, path)
    assert os.listdir(tmp_path) == ["model.weights.h5"]
    after = h5_arrays(path)
    assert any(not np.array_equal(before[k], after[k]) for k in before)


def fill_disk(path):
    """Write zeros to `path` until the file system is full."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError as error:
        assert error.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (needs root and a kernel that lets the test mount)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("failure", ["full_disk", "path_taken"])
def test_a_failed_write_keeps_the_last_checkpoint(tmp_path, failure, request):
    # Step 1 is saved; before step 2 the disk fills up (a real ENOSPC on a
    # small tmpfs), or a file takes the place of step 2's folder.
    folder = (
        request.getfixturevalue("small_disk")
        if failure == "full_disk"
        else tmp_path
    )
    backup = folder / "backup"
    model = small_model()
    saver = RunCheckpoints(
        str(backup),
        str(folder / "epoch_{epoch:03d}.weights.h5"),
        steps_per_epoch=3,
        every=1,
    )

    class Fail(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch != 1:
                return
            if failure == "full_disk":
                fill_disk(folder / "filler")
            else:
                (backup / "step_000002.partial").write_text("in the way")

    x, y = data()
    with pytest.raises(CheckpointError) as error:
        model.fit(
            x,
            y,
            batch_size=4,
            epochs=1,
            callbacks=[Fail(), saver],
            verbose=0,
        )
    first = str(backup / "step_000001")
    assert isinstance(error.value, OSError)
    assert error.value.step == 2
    assert error.value.checkpoint == first
    message = str(error.value)
    assert "Writing the checkpoint of step 2 failed" in message
    if failure == "full_disk":
        assert "No space left on device" in message
    assert f"The last complete checkpoint, {first}, is kept" in message
    assert "Free disk space" in message
    # The half-written step 2 is gone; step 1 is whole and loads.
    if failure == "full_disk":
        assert os.listdir(backup) == ["step_000001"]
    found, state = latest_checkpoint(str(backup))
    assert found == first and state["step"] == 1
    assert os.listdir(backup) == ["step_000001"]
    restored = small_model(seed=1)
    restore(restored, found)
    assert int(restored.optimizer.iterations) == 1
