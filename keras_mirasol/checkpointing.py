"""Checkpoints of a training run that a killed process resumes from.

`train` saves the whole state of a run, atomically, every
`checkpoint_every` steps and at the end of each epoch:

    OUT/backup/step_000120/
        model.weights.h5   weights and optimizer state (step, moments)
        state.npz          random generator states and the epoch's
                           running metrics
        state.json         step, finished epochs, history, the run's
                           arguments
        tokenizer.model    the run's SentencePiece model

Each checkpoint is written into `step_NNNNNN.partial`, every file and the
folder are flushed to disk (`fsync`), and only then is it renamed to
`step_NNNNNN`: a process killed while writing leaves a `.partial` folder,
which is never loaded (and is deleted by the next run), next to the last
complete checkpoint. The two newest complete checkpoints are kept; if the
newest cannot be read (a damaged disk), the one before it is used. The
data position is the step: `snippet_dataset(start_batch=step)` continues
the seeded batch sequence where the checkpoint was taken, so a resumed run
computes what an uninterrupted one would.

The per-epoch weights in `OUT/checkpoints/` are written the same way
(a temporary file, `fsync`, rename).
"""

import json
import os
import shutil

import keras
import numpy as np

STEP_PREFIX = "step_"
PARTIAL = ".partial"


class CheckpointError(OSError):
    """Writing a checkpoint failed (a full disk, a read-only folder).

    The half-written checkpoint is deleted; the last complete one is kept.

    Attributes:
        step: int. The step whose checkpoint failed.
        checkpoint: str or None. The last complete checkpoint, which the
            same command resumes from; None when there is none.
    """

    def __init__(self, message, step, checkpoint):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_weights_atomically(model, path):
    """`model.save_weights(path)`, all or nothing.

    The weights go to a temporary file beside `path`, which is flushed to
    disk and renamed over `path`: a reader finds the old file or the new
    one, never a part of it.

    Args:
        model: a built Keras model.
        path: str. Ends with `.weights.h5`.
    """
    folder, name = os.path.split(path)
    partial = os.path.join(folder, f".{name[: -len('.weights.h5')]}")
    partial += f"{PARTIAL}.weights.h5"
    try:
        model.save_weights(partial, overwrite=True)
        _fsync(partial)
        os.replace(partial, path)
        _fsync(folder or ".")
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _seed_states(model):
    # The random generators' states (dropout): not in the weights file.
    return [
        v for v in model.variables if v.path.endswith("seed_generator_state")
    ]


def _step_folders(backup_dir):
    """Complete checkpoints, oldest first."""
    if not os.path.isdir(backup_dir):
        return []
    names = [
        name
        for name in os.listdir(backup_dir)
        if name.startswith(STEP_PREFIX) and not name.endswith(PARTIAL)
    ]
    return [os.path.join(backup_dir, name) for name in sorted(names)]


def remove_partial_checkpoints(backup_dir):
    """Delete what a killed process left half-written in `backup_dir`.

    Args:
        backup_dir: str.

    Returns:
        list of the deleted paths.
    """
    if not os.path.isdir(backup_dir):
        return []
    removed = []
    for name in sorted(os.listdir(backup_dir)):
        if name.endswith(PARTIAL):
            path = os.path.join(backup_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
            removed.append(path)
    return removed


def latest_checkpoint(backup_dir):
    """The newest complete checkpoint of `backup_dir` and its state.

    Half-written checkpoints are deleted first. A checkpoint whose
    `state.json` cannot be read is passed over (with a warning) for the
    one before it.

    Args:
        backup_dir: str.

    Returns:
        `(folder, state)` with `state` the dict of `state.json`, or
        `(None, None)` when there is no readable checkpoint.
    """
    remove_partial_checkpoints(backup_dir)
    for folder in reversed(_step_folders(backup_dir)):
        try:
            with open(os.path.join(folder, "state.json")) as f:
                return folder, json.load(f)
        except (OSError, ValueError) as error:
            print(f"Skipping the unreadable checkpoint {folder}: {error}")
    return None, None


def restore(model, folder):
    """Load a checkpoint written by `RunCheckpoints` into `model`.

    Weights, optimizer state and random generator states are restored.
    If this checkpoint cannot be read, the one before it in the same
    backup folder is tried.

    Args:
        model: the compiled model the run built (same config).
        folder: str. A `step_NNNNNN` checkpoint folder.

    Returns:
        `(folder, state)`: the checkpoint loaded (`folder` or an older
        one) and its `state.json` dict, with `metrics` the saved running
        metric values (a list of arrays) for `RunCheckpoints`.

    Raises:
        OSError: no checkpoint of the backup folder could be read.
    """
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    backup_dir = os.path.dirname(folder)
    candidates = [path for path in _step_folders(backup_dir) if path <= folder]
    errors = []
    for path in reversed(candidates):
        try:
            with open(os.path.join(path, "state.json")) as f:
                state = json.load(f)
            model.load_weights(os.path.join(path, "model.weights.h5"))
            with np.load(os.path.join(path, "state.npz")) as arrays:
                seeds = _seed_states(model)
                if int(arrays["seed_count"]) != len(seeds):
                    raise ValueError(
                        f"{len(seeds)} random generators in the model, "
                        f"{int(arrays['seed_count'])} in the checkpoint"
                    )
                for i, variable in enumerate(seeds):
                    variable.assign(arrays[f"seed_{i}"])
                state["metrics"] = [
                    arrays[f"metric_{i}"]
                    for i in range(int(arrays["metric_count"]))
                ]
            return path, state
        except (OSError, ValueError, KeyError) as error:
            errors.append(f"{path}: {error}")
            print(f"Could not restore {path} ({error}); trying an older one.")
    raise OSError(
        f"No checkpoint in {backup_dir} could be read ("
        + "; ".join(errors)
        + f"). Delete {backup_dir} to start the run over."
    )


class RunCheckpoints(keras.callbacks.Callback):
    """Saves a run's full state every `every` steps and at each epoch end.

    At each epoch's end it also writes `epoch_pattern` (the model's
    weights, for `load_weights`). Both writes are atomic; a failed write
    (a full disk) raises `CheckpointError`, leaving the last complete
    checkpoint. List it after callbacks that must stop a run before it
    saves (`train`'s non-finite loss guard).

    Args:
        backup_dir: str. Folder of the step checkpoints.
        epoch_pattern: str. Path of the per-epoch weights, with
            `{epoch:03d}`-style formatting of the epoch number (from 1).
        steps_per_epoch: int.
        every: int or None. Save every this many steps, besides the epoch
            ends. Defaults to `None`: at epoch ends only.
        start_step: int. Steps done before this process (a resumed run).
            Defaults to `0`.
        run: dict. JSON-serializable arguments of the run, stored in each
            checkpoint for the next run to compare. Defaults to `None`.
        history: dict or None. Per-epoch logs of the epochs before
            `start_step`. Defaults to `None`.
        metrics: list of arrays or None. Running metric values at
            `start_step`, in the middle of an epoch (added to the model's
            after the resumed epoch's first step, so that its logged means
            cover the whole epoch). Defaults to `None`.
        tokenizer_proto: bytes or None. The SentencePiece model to store.
            Defaults to `None`.
        keep: int. Complete checkpoints kept. Defaults to `2`.
    """

    def __init__(
        self,
        backup_dir,
        epoch_pattern,
        steps_per_epoch,
        every=None,
        start_step=0,
        run=None,
        history=None,
        metrics=None,
        tokenizer_proto=None,
        keep=2,
    ):
        super().__init__()
        self.backup_dir = backup_dir
        self.epoch_pattern = epoch_pattern
        self.steps_per_epoch = steps_per_epoch
        self.every = every
        self.step = start_step
        self.run = run or {}
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.pending_metrics = metrics
        self.tokenizer_proto = tokenizer_proto
        self.keep = keep

    def on_train_batch_end(self, batch, logs=None):
        if self.pending_metrics is not None:
            # The running metrics are sums (a mean's total and count): the
            # checkpoint's add to those of the resumed epoch's first step.
            # Not before it: TensorFlow builds some only as the step is
            # traced.
            variables = self.model.metrics_variables
            if len(variables) == len(self.pending_metrics):
                for variable, saved in zip(variables, self.pending_metrics):
                    variable.assign(variable.value + saved)
            self.pending_metrics = None
        self.step += 1
        at_epoch_end = self.step % self.steps_per_epoch == 0
        if self.every and self.step % self.every == 0 and not at_epoch_end:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        path = self.epoch_pattern.format(epoch=epoch + 1)
        self._guard(lambda: save_weights_atomically(self.model, path))
        self.save()

    def save(self):
        """Write the checkpoint of the current step.

        Returns:
            str: its folder.
        """
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"{STEP_PREFIX}{self.step:06d}"
        final = os.path.join(self.backup_dir, name)
        partial = final + PARTIAL

        def write():
            shutil.rmtree(partial, ignore_errors=True)
            os.makedirs(partial)
            model = self.model
            model.save_weights(os.path.join(partial, "model.weights.h5"))
            seeds = _seed_states(model)
            arrays = {
                f"seed_{i}": keras.ops.convert_to_numpy(v.value)
                for i, v in enumerate(seeds)
            }
            arrays["seed_count"] = np.array(len(seeds))
            metrics = model.metrics_variables
            for i, v in enumerate(metrics):
                arrays[f"metric_{i}"] = keras.ops.convert_to_numpy(v.value)
            arrays["metric_count"] = np.array(len(metrics))
            np.savez(os.path.join(partial, "state.npz"), **arrays)
            state = {
                "step": self.step,
                "epochs_done": self.step // self.steps_per_epoch,
                "history": self.history,
                "run": self.run,
            }
            with open(os.path.join(partial, "state.json"), "w") as f:
                json.dump(state, f, indent=1)
            if self.tokenizer_proto is not None:
                with open(os.path.join(partial, "tokenizer.model"), "wb") as f:
                    f.write(self.tokenizer_proto)
            for file in os.listdir(partial):
                _fsync(os.path.join(partial, file))
            _fsync(partial)
            if os.path.exists(final):  # the same step, saved again
                shutil.rmtree(final)
            os.rename(partial, final)
            _fsync(self.backup_dir)

        self._guard(write, cleanup=partial)
        for old in _step_folders(self.backup_dir)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def _guard(self, write, cleanup=None):
        try:
            write()
        except OSError as error:
            if cleanup:
                shutil.rmtree(cleanup, ignore_errors=True)
            folders = _step_folders(self.backup_dir)
            last = folders[-1] if folders else None
            kept = (
                f"The last complete checkpoint, {last}, is kept: run the "
                "same command again to resume from it"
                if last
                else "No checkpoint was completed before it"
            )
            raise CheckpointError(
                f"Writing the checkpoint of step {self.step} failed: "
                f"{error}. Training stopped there. {kept}. Free disk space "
                "(or make the run folder writable) first.",
                step=self.step,
                checkpoint=last,
            ) from error
