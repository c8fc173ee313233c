"""Train a MirasolCausalLM on TFRecords written by `convert`.

`train()` is what `keras-mirasol train` runs: a tokenizer trained on the
records' questions and answers (or one given), a preset backbone sized to
it (or a whole saved task, its tokenizer and weights kept, to fine-tune:
a run folder, or a model built from pretrained keras-hub parts and saved
with `save_to_preset`), AdamW with warmup and cosine decay, the tf.data
snippet pipeline,
`model.fit` with atomic checkpoints of the whole run (weights, optimizer,
random generators, data position; see `keras_mirasol.checkpointing`) so
that a killed run started again with the same arguments continues where
it stopped and ends with the weights an uninterrupted run has, then the
trained task saved as a preset folder that `MirasolCausalLM.from_preset`,
`keras-mirasol evaluate` and `keras-mirasol generate` load. A loss that
becomes NaN or Inf stops the run with a `NonFiniteLossError`, and nothing
is saved from the diverged weights.
"""

import json
import math
import os
import shutil
import time

import keras

from keras_mirasol.checkpointing import RunCheckpoints
from keras_mirasol.checkpointing import latest_checkpoint
from keras_mirasol.checkpointing import restore
from keras_mirasol.data.record_io import DamagedRecords
from keras_mirasol.data.snippets import count_questions
from keras_mirasol.data.snippets import record_files
from keras_mirasol.data.snippets import record_texts
from keras_mirasol.data.snippets import snippet_dataset
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.causal_lm import MirasolCausalLM
from keras_mirasol.models.preprocessor import MirasolCausalLMPreprocessor
from keras_mirasol.models.tokenizer import MirasolTokenizer
from keras_mirasol.models.tokenizer import train_tokenizer

# Written in the run folder when damaged records were skipped.
DAMAGED_RECORDS_FILE = "damaged_records.json"


def data_parallel_size(distribution):
    """How many ways `distribution` splits each batch.

    Args:
        distribution: `keras.distribution.Distribution` with a
            `device_mesh` and a `batch_dim_name` (`DataParallel`,
            `ModelParallel`).

    Returns:
        int: the size of the mesh's data-parallel axis.
    """
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def build_task(
    preset,
    tokenizer,
    learning_rate=1e-3,
    steps=1000,
    warmup_steps=100,
    weight_decay=0.01,
    text_loss_reduction="token",
    **overrides,
):
    """A compiled `MirasolCausalLM` from a preset and a tokenizer.

    The backbone's vocabulary is the tokenizer's; `overrides` change
    other backbone config keys. The optimizer is AdamW (global gradient
    norm clipped to 1) with a linear warmup from 0 to `learning_rate`, then
    cosine decay to 5% of it.

    Args:
        preset: str. Backbone preset name or preset folder.
        tokenizer: `MirasolTokenizer` with a vocabulary; it sets the
            backbone's `vocabulary_size`.
        learning_rate: float. Peak learning rate, reached after the
            warmup. Defaults to `1e-3`.
        steps: int. Training steps the schedule spans (warmup included).
            Defaults to `1000`.
        warmup_steps: int. Steps of linear warmup. Defaults to `100`.
        weight_decay: float. AdamW weight decay. Defaults to `0.01`.
        text_loss_reduction: str. `"token"` or `"response"` (see
            `MirasolCausalLM`). Defaults to `"token"`.
        **overrides: backbone config keys to change.

    Returns:
        A compiled `MirasolCausalLM` with a preprocessor.
    """
    backbone = MirasolBackbone.from_preset(
        preset, vocabulary_size=tokenizer.vocabulary_size(), **overrides
    )
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    lm = MirasolCausalLM(
        backbone, preprocessor, text_loss_reduction=text_loss_reduction
    )
    _compile(lm, learning_rate, steps, warmup_steps, weight_decay)
    return lm


def is_task_preset(preset):
    """Whether `preset` is a folder holding a whole task to fine-tune.

    Such a folder, written by `MirasolCausalLM.save_to_preset` (a `train`
    run folder, or a model built with `MirasolBackbone.from_components`),
    carries its tokenizer and preprocessor besides the backbone.

    Args:
        preset: str. A preset name or folder.

    Returns:
        bool.
    """
    return os.path.isfile(os.path.join(str(preset), "preprocessor.json"))


def load_task(
    preset,
    learning_rate=1e-3,
    steps=1000,
    warmup_steps=100,
    weight_decay=0.01,
    text_loss_reduction="token",
    **overrides,
):
    """A compiled `MirasolCausalLM` from a saved task, to fine-tune.

    Weights, tokenizer, preprocessor (its prompt template too) and which
    parts are frozen come from the folder; the optimizer is `build_task`'s.

    Args:
        preset: str. A folder written by `MirasolCausalLM.save_to_preset`.
        learning_rate: float. Peak learning rate, reached after the
            warmup. Defaults to `1e-3`.
        steps: int. Training steps the schedule spans (warmup included).
            Defaults to `1000`.
        warmup_steps: int. Steps of linear warmup. Defaults to `100`.
        weight_decay: float. AdamW weight decay. Defaults to `0.01`.
        text_loss_reduction: str. `"token"` or `"response"` (see
            `MirasolCausalLM`). Defaults to `"token"`.
        **overrides: `dtype`, and the clip length as `num_snippets`
            (with `num_frames`, if given, `num_snippets` times the saved
            frames per snippet): the saved weights take clips of any
            number of snippets (`MirasolCausalLM.with_num_snippets`), so a
            model trained on short clips is fine-tuned on long ones. The
            rest of the architecture is the saved one.

    Returns:
        A compiled `MirasolCausalLM` with a preprocessor.

    Raises:
        ValueError: an override of another key, or a `num_frames` that
            changes the snippets' length.
    """
    unknown = sorted(set(overrides) - {"dtype", "num_snippets", "num_frames"})
    if unknown:
        raise ValueError(
            f"{preset} holds a trained model, whose architecture cannot "
            f"change: {unknown} cannot be overridden (only dtype, and the "
            "clip length as num_snippets). Start from a preset name to "
            "train another configuration."
        )
    num_snippets = overrides.pop("num_snippets", None)
    num_frames = overrides.pop("num_frames", None)
    lm = MirasolCausalLM.from_preset(
        preset, text_loss_reduction=text_loss_reduction, **overrides
    )
    saved = lm.backbone
    if num_frames is not None or num_snippets is not None:
        per_snippet = saved.num_frames // saved.num_snippets
        if num_snippets is None:
            num_snippets = num_frames // per_snippet
        if num_frames is None:
            num_frames = num_snippets * per_snippet
        if num_frames != num_snippets * per_snippet:
            raise ValueError(
                f"{preset} was trained on snippets of {per_snippet} frames "
                f"({saved.num_frames} frames in {saved.num_snippets} "
                f"snippets); num_frames={num_frames} with num_snippets="
                f"{num_snippets} would change their length, and with it "
                "what the weights were trained on. Change the clip length "
                f"by whole snippets: num_frames = {per_snippet} x "
                "num_snippets."
            )
        if num_snippets != saved.num_snippets:
            lm = lm.with_num_snippets(num_snippets)
    _compile(lm, learning_rate, steps, warmup_steps, weight_decay)
    return lm


def _compile(lm, learning_rate, steps, warmup_steps, weight_decay):
    """AdamW, warmup then cosine decay to 5%, global norm clipped to 1."""
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        max(steps - warmup_steps, 1),
        alpha=0.05,
        warmup_target=learning_rate,
        warmup_steps=warmup_steps,
    )
    lm.compile(
        optimizer=keras.optimizers.AdamW(
            schedule, weight_decay=weight_decay, global_clipnorm=1.0
        )
    )


class NonFiniteLossError(RuntimeError):
    """`train` stopped: the loss (or a weight) became NaN or Inf.

    A `RuntimeError`, as Keras' `TerminateOnNaN(raise_error=True)` raises.

    Attributes:
        step: int. The global optimizer step (1 for the first) whose loss
            was not finite; for weights that became non-finite while the
            loss stayed finite, the epoch's last step.
        loss: float. The loss Keras logged there.
        checkpoint: str or None. The last checkpoint written before it,
            whose weights are finite; None when no epoch finished.
    """

    def __init__(self, message, step, loss, checkpoint):
        super().__init__(message)
        self.step = step
        self.loss = loss
        self.checkpoint = checkpoint


def _first_non_finite(weights):
    """Path of the first float weight holding NaN or Inf, or None."""
    for weight in weights:
        if "float" not in str(weight.dtype):
            continue
        # One small reduction at a time, each read back before the next:
        # on a sharded weight each is a program with collectives, and
        # XLA's CPU devices abort when many such programs are in flight
        # at once (a rendezvous times out). Only booleans leave devices.
        if not bool(keras.ops.all(keras.ops.isfinite(weight.value))):
            return weight.path
    return None


class _StopOnNonFiniteLoss(keras.callbacks.TerminateOnNaN):
    """Keras' `TerminateOnNaN`, saying where and what was kept.

    Keras' callback names the batch within the epoch, and its graceful stop
    still runs the epoch's end, where the checkpoint callback would save
    the diverged weights. This one raises a
    `NonFiniteLossError` naming the global step, the loss and the last
    good checkpoint, and it checks the weights at each epoch's end: listed
    before the callbacks that save, it raises before they run.
    """

    def __init__(
        self, steps_per_epoch, checkpoint_pattern, learning_rate, start_step=0
    ):
        super().__init__(raise_error=True)
        self.steps_per_epoch = steps_per_epoch
        self.checkpoint_pattern = checkpoint_pattern
        self.learning_rate = learning_rate
        self.start_step = start_step
        self.epoch = 0
        self.first_step = 0
        self.good_epochs = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        # A run resumed in the middle of an epoch begins at its step.
        self.first_step = max(epoch * self.steps_per_epoch, self.start_step)
        if self.good_epochs is None:  # a resumed run starts after these
            self.good_epochs = epoch

    def _stop(self, what, step, loss):
        checkpoint = None
        if self.good_epochs:
            path = self.checkpoint_pattern.format(epoch=self.good_epochs)
            checkpoint = path if os.path.exists(path) else None
        if checkpoint:
            kept = (
                f"The last good checkpoint, {checkpoint} (after step "
                f"{self.good_epochs * self.steps_per_epoch}), is kept; "
                "`MirasolCausalLM.load_weights` reads it."
            )
        else:
            kept = "No epoch finished before it: there is no checkpoint."
        raise NonFiniteLossError(
            f"{what} at step {step} (epoch {self.epoch + 1}): training "
            "stopped there, and nothing was saved from the diverged "
            f"weights. {kept} Lower the learning rate (it peaked at "
            f"{self.learning_rate:g}) or check the data, and train again "
            "in a new folder (or delete the run's `backup` folder): the "
            "same arguments would resume from its last checkpoint and "
            "meet the same step.",
            step=step,
            loss=loss,
            checkpoint=checkpoint,
        )

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            step = self.first_step + batch + 1
            self._stop(f"The loss is {float(loss)}", step, float(loss))

    def on_epoch_end(self, epoch, logs=None):
        weight = _first_non_finite(self.model.weights)
        if weight is not None:
            loss = float((logs or {}).get("loss", math.nan))
            self._stop(
                f"The weight {weight} holds NaN or Inf (the loss, {loss:g}, "
                "did not)",
                (epoch + 1) * self.steps_per_epoch,
                loss,
            )
        self.good_epochs = epoch + 1


class _Printer(keras.callbacks.Callback):
    """One line per epoch: step, losses, seconds."""

    def __init__(self, steps_per_epoch):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        parts = [f"{k} {v:.4f}" for k, v in sorted((logs or {}).items())]
        step = (epoch + 1) * self.steps_per_epoch
        elapsed = time.time() - self.start
        print(f"step {step}: " + ", ".join(parts) + f" ({elapsed:.0f} s)")


def train(
    train_data,
    out_dir,
    preset="mirasol_tiny",
    val_data=None,
    tokenizer=None,
    steps=1000,
    epochs=10,
    batch_size=64,
    learning_rate=1e-3,
    vocabulary_size=256,
    seed=0,
    cache=False,
    threads=None,
    verbose=1,
    validation_freq=1,
    distribution=None,
    text_loss_reduction="token",
    questions_per_clip=None,
    checkpoint_every=None,
    **overrides,
):
    """Train a model on TFRecords and save it as a preset folder.

    Args:
        train_data: records of the training split (folder, glob, files).
        out_dir: str. Run folder: the trained preset (`config.json`,
            weights, tokenizer, preprocessor), `checkpoints/` (weights at
            each epoch's end), `backup/` (the checkpoints a killed run
            resumes from, deleted after a finished run),
            `history.json` and, if the records held damaged ones (a
            failed checksum, a file cut short: skipped and logged, see
            `snippet_dataset`), `damaged_records.json` listing them.
        preset: str. Backbone preset name or folder to start from; or
            a folder written by `MirasolCausalLM.save_to_preset` (a run
            folder, a model from `MirasolBackbone.from_components`), which
            is fine-tuned with its weights, tokenizer, preprocessor and
            frozen parts (`is_task_preset`). Defaults to `"mirasol_tiny"`.
        val_data: records of the validation split, or None.
            Defaults to `None`.
        tokenizer: path of a SentencePiece model, a `MirasolTokenizer`,
            or None. Defaults to `None`, which trains one on the training
            records' text (or, for a saved task, keeps its own).
        steps: int. Training steps in total (rounded down to a multiple
            of `epochs`, at least one per epoch). Defaults to `1000`.
        epochs: int. Checkpoint and validation every `steps // epochs`.
            Defaults to `10`.
        batch_size: int. Questions per step. Defaults to `64`.
        learning_rate: float. Peak of the warmup + cosine schedule.
            Defaults to `1e-3`.
        vocabulary_size: int. Largest vocabulary of a trained tokenizer.
            Defaults to `256`.
        seed: int. Seeds weights, data order and windows. Defaults to `0`.
        cache: bool. Keep the decoded training clips in memory (see
            `snippet_dataset`). Defaults to `False`.
        threads: int or None. The training pipeline's thread pool size
            (see `snippet_dataset`). Defaults to `None`, which means
            tf.data's shared pool.
        verbose: int. Keras progress bar (1), one line per epoch (2), or
            quiet (0). Defaults to `1`.
        validation_freq: int. Validate every this many epochs (and the
            first time after that many). Defaults to `1`.
        distribution: a `keras.distribution.Distribution` (see
            `keras_mirasol.distribution.make_distribution`) to build and
            train the model under, or None for one device. `batch_size`
            must divide over its data-parallel axis; the last partial
            validation batch is dropped. Defaults to `None`.
        text_loss_reduction: str. `"token"` or `"response"` (see
            `MirasolCausalLM`). Defaults to `"token"`.
        questions_per_clip: int or None. Train on `k` questions per clip
            per step, encoding each clip once for all `k` (`batch_size`
            questions = `batch_size / k` clips per step; see
            `snippet_dataset`). Defaults to `None`: one clip per question.
        checkpoint_every: int or None. Checkpoint the whole run (see
            `keras_mirasol.checkpointing`) every this many steps, besides
            each epoch's end: a killed run redoes at most that many.
            Defaults to `None`: at epoch ends only.
        **overrides: backbone config keys to change.

    A run killed at any point (SIGKILL, a preempted VM) and called again
    with the same arguments and `out_dir` resumes from its last complete
    checkpoint (`out_dir/backup`), skips to the same place in the seeded
    batch sequence, and ends with the weights an uninterrupted run ends
    with. Called with other arguments, it raises a `ValueError` naming
    them.

    Returns:
        `(lm, history_dict)`.

    Raises:
        NonFiniteLossError: the loss became NaN or Inf (or a weight did, at
            an epoch's end). Training stops at that step, and nothing is
            written from the diverged weights: the checkpoints of the
            epochs before stay (the error names the last one), no later
            checkpoint, backup, preset or `history.json` is written.
        CheckpointError: writing a checkpoint failed (a full disk); the
            last complete checkpoint is kept, and the same call resumes
            from it.
    """
    if distribution is not None:
        replicas = data_parallel_size(distribution)
        clips = batch_size // (questions_per_clip or 1)
        if batch_size % replicas or clips % replicas:
            raise ValueError(
                f"batch_size={batch_size} ({clips} clips) does not split "
                f"over the {replicas} data-parallel replicas of the "
                f"distribution; use a multiple of {replicas} clips."
            )
        with distribution.scope():
            return train(
                train_data,
                out_dir,
                preset=preset,
                val_data=val_data,
                tokenizer=tokenizer,
                steps=steps,
                epochs=epochs,
                batch_size=batch_size,
                learning_rate=learning_rate,
                vocabulary_size=vocabulary_size,
                seed=seed,
                cache=cache,
                threads=threads,
                verbose=verbose,
                validation_freq=validation_freq,
                text_loss_reduction=text_loss_reduction,
                questions_per_clip=questions_per_clip,
                checkpoint_every=checkpoint_every,
                **overrides,
            )
    fine_tune = is_task_preset(preset)
    if fine_tune and tokenizer is not None:
        raise ValueError(
            f"{preset} is a saved model with its own tokenizer, which its "
            "weights were trained with: leave out the tokenizer argument "
            "(--tokenizer) to fine-tune it."
        )
    os.makedirs(out_dir, exist_ok=True)
    backup_dir = os.path.join(out_dir, "backup")
    steps_per_epoch = max(1, steps // epochs)
    run = _run_arguments(
        train_data,
        preset=os.path.abspath(preset) if fine_tune else preset,
        tokenizer=tokenizer
        if tokenizer is None or isinstance(tokenizer, str)
        else "given",
        steps=steps_per_epoch * epochs,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        vocabulary_size=vocabulary_size,
        seed=seed,
        cache=cache,
        text_loss_reduction=text_loss_reduction,
        questions_per_clip=questions_per_clip,
        overrides=overrides,
    )
    resume_from, resume_state = latest_checkpoint(backup_dir)
    if resume_from is not None:
        _check_same_run(resume_state["run"], run, out_dir, backup_dir)
    keras.utils.set_random_seed(seed)
    damaged = DamagedRecords()
    if fine_tune:
        tokenizer = None  # the saved task's own, loaded with it
    elif resume_from is not None:
        # The run's own tokenizer, whatever was given or would be trained.
        tokenizer = MirasolTokenizer(
            proto=os.path.join(resume_from, "tokenizer.model")
        )
    elif tokenizer is None:
        proto = train_tokenizer(
            record_texts(train_data, damaged),
            vocabulary_size=vocabulary_size,
        )
        tokenizer = MirasolTokenizer(proto=proto)
    elif isinstance(tokenizer, str):
        tokenizer = MirasolTokenizer(proto=tokenizer)
    else:
        # Seeding clears TensorFlow's eager caches, and with them the
        # SentencePiece op of a tokenizer made before: make it again.
        tokenizer.set_proto(tokenizer.proto)
    schedule = dict(
        learning_rate=learning_rate,
        steps=steps_per_epoch * epochs,
        warmup_steps=min(100, steps // 10),
        text_loss_reduction=text_loss_reduction,
    )
    if fine_tune:
        lm = load_task(preset, **schedule, **overrides)
        tokenizer = lm.preprocessor.tokenizer
    else:
        lm = build_task(preset, tokenizer, **schedule, **overrides)
    start_step, history, metrics = 0, {}, None
    if resume_from is not None:
        resume_from, resume_state = restore(lm, resume_from)
        start_step = resume_state["step"]
        history = resume_state["history"]
        if start_step % steps_per_epoch:
            # The running means of the epoch the checkpoint was taken in.
            metrics = resume_state["metrics"]
        if verbose:
            print(
                f"Resuming {out_dir} at step {start_step} of "
                f"{steps_per_epoch * epochs} from {resume_from}."
            )

    def train_dataset(start_batch):
        return snippet_dataset(
            train_data,
            lm.preprocessor,
            batch_size,
            training=True,
            seed=seed,
            cache=cache,
            threads=threads,
            questions_per_clip=questions_per_clip,
            start_batch=start_batch,
            damaged=damaged,
        )

    val_ds, val_steps = None, None
    if val_data is not None:
        # A distributed step needs whole batches: drop the last one.
        distributed = keras.distribution.distribution() is not None
        questions = count_questions(val_data, damaged)
        val_steps = questions // batch_size
        if not distributed:
            val_steps = -(-questions // batch_size)
        if val_steps:
            val_ds = snippet_dataset(
                val_data,
                lm.preprocessor,
                batch_size,
                drop_remainder=distributed,
                damaged=damaged,
            )
        else:
            val_steps = None
    checkpoints = os.path.join(out_dir, "checkpoints")
    os.makedirs(checkpoints, exist_ok=True)
    checkpoint_pattern = os.path.join(
        checkpoints, "epoch_{epoch:03d}.weights.h5"
    )
    saver = RunCheckpoints(
        backup_dir,
        checkpoint_pattern,
        steps_per_epoch,
        every=checkpoint_every,
        start_step=start_step,
        run=run,
        history=history,
        metrics=metrics,
        # A saved task's tokenizer is read from it again on resuming.
        tokenizer_proto=None if fine_tune else tokenizer.proto,
    )
    callbacks = [
        # First: it raises before the callback that saves.
        _StopOnNonFiniteLoss(
            steps_per_epoch, checkpoint_pattern, learning_rate, start_step
        ),
        saver,
    ]
    if verbose == 2:
        callbacks.append(_Printer(steps_per_epoch))
    fit_options = dict(
        validation_data=val_ds,
        validation_steps=val_steps,
        validation_freq=validation_freq,
        shuffle=False,  # the pipeline shuffles (seeded)
        callbacks=callbacks,
        verbose=1 if verbose == 1 else 0,
    )
    epoch, done = divmod(start_step, steps_per_epoch)
    if done:
        # The rest of the epoch the checkpoint was taken in.
        lm.fit(
            train_dataset(start_step),
            steps_per_epoch=steps_per_epoch - done,
            initial_epoch=epoch,
            epochs=epoch + 1,
            **fit_options,
        )
        epoch += 1
    if epoch < epochs:
        lm.fit(
            train_dataset(epoch * steps_per_epoch),
            steps_per_epoch=steps_per_epoch,
            initial_epoch=epoch,
            epochs=epochs,
            **fit_options,
        )
    lm.save_to_preset(out_dir)
    history = saver.history
    with open(os.path.join(out_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    if len(damaged):
        with open(os.path.join(out_dir, DAMAGED_RECORDS_FILE), "w") as f:
            json.dump([str(record) for record in damaged], f, indent=1)
    # The run is complete: nothing is left to resume.
    shutil.rmtree(backup_dir, ignore_errors=True)
    return lm, history


def _run_arguments(train_data, **arguments):
    """What a resumed run must share with the run it continues (JSON)."""
    files = [os.path.abspath(path) for path in record_files(train_data)]
    return json.loads(json.dumps(dict(arguments, train_data=files)))


def _check_same_run(saved, run, out_dir, backup_dir):
    """Refuse to resume a run with other arguments, naming them."""
    differ = sorted(
        key for key in set(saved) | set(run) if saved.get(key) != run.get(key)
    )
    if differ:
        changes = "; ".join(
            f"{key}: {saved.get(key)!r} then, {run.get(key)!r} now"
            for key in differ
        )
        raise ValueError(
            f"{out_dir} holds an unfinished run with other arguments "
            f"({changes}). Run the same command again to resume it, or "
            f"start a new run in another folder (or delete {backup_dir})."
        )
