"""The main job at demo size: media files to answers, with nothing to download.

`run_demo()` (`keras-mirasol demo`) runs every step a user runs on their own
data, in order:

1. `synth`: write the synthetic audio-visual QA dataset (real mp4 files,
   `keras_mirasol.data.synthetic`) and its train/val/test annotations;
2. `convert`: decode each split into TFRecord shards;
3. `train`: fit the preset on the training records;
4. `evaluate`: exact-match accuracy on the test split per question type,
   then again with the video zeroed and with the audio zeroed.

It prints a results table and ends with one JSON line. Running it again
reuses the clips and records already written; training starts over, unless
the previous run was stopped midway (it resumes from its last checkpoint).

`run_demo(long=True)` (`keras-mirasol demo --long`) does the same on 16 s
clips of 32 snippets in which 4 events sit anywhere (`LONG_CLIPS`): the
preset's snippets are kept and their number grows to 32, with the
Transformer or TTM Combiner (`combiner`), or as the unchunked baseline
(`unchunked`, see `keras_mirasol.models.unchunked_config`). Mirasol first
trains on the 2 s clips of the plain demo (`short_steps`), then the same
weights (`MirasolCausalLM.with_num_snippets`: no weight depends on the
number of snippets) are fine-tuned on the 16 s clips. The baseline's
weights depend on the clip's length, so it trains on the long clips
only.
"""

import json
import os
import shutil
import time

from keras_mirasol.data.records import SettingsChanged
from keras_mirasol.data.records import convert
from keras_mirasol.data.synthetic import write_dataset

SPLITS = ("train", "val", "test")
# The long-clip data of `demo --long`: 32 segments of 0.5 s (16 s), 4 of
# them events at random places; the others black and silent.
LONG_CLIPS = dict(num_snippets=32, num_events=4)
# Defaults per kind of demo: clips, steps and questions per step.
# With long clips, `short_steps` on the plain demo's clips come first.
DEFAULTS = {
    False: dict(clips=2000, steps=2000, batch_size=96),
    True: dict(clips=1200, steps=600, batch_size=48, short_steps=1000),
}


def prepare_data(data_dir, clips, seed, image_size, workers=None, **clip):
    """Synthesize clips and convert every split; returns record folders.

    `clip` goes to `write_dataset` (e.g. `LONG_CLIPS`).
    """
    avqa = os.path.join(data_dir, "avqa")
    counts = write_dataset(
        avqa,
        clips=clips,
        seed=seed,
        workers=workers,
        image_size=image_size[0],
        verbose=True,
        **clip,
    )
    print(f"synth: {counts} clips in {avqa}", flush=True)
    records = {}
    for split in SPLITS:
        records[split] = os.path.join(data_dir, "records", split)
        arguments = (
            os.path.join(avqa, "videos"),
            os.path.join(avqa, f"{split}.jsonl"),
            records[split],
        )
        options = dict(image_size=image_size, workers=workers, verbose=False)
        try:
            report = convert(*arguments, **options)
        except SettingsChanged:
            # Records of an earlier demo run with other settings (e.g.
            # another --clips): the demo wrote them, so it replaces them.
            print(f"convert {split}: replacing records of another run")
            shutil.rmtree(records[split])
            report = convert(*arguments, **options)
        print(
            f"convert {split}: {report['clips']} clips, "
            f"{report['annotations']} questions, "
            f"{report['skipped_annotations']} skipped",
            flush=True,
        )
    return records


def results_table(results):
    """Accuracy per question type for the full model and the ablations."""
    names = sorted(results["full"]["per_type"])
    header = ["evaluation", "overall"] + names
    rows = []
    for key, result in results.items():
        row = [key, f"{result['accuracy']:.3f}"]
        row += [f"{result['per_type'][n]['accuracy']:.3f}" for n in names]
        rows.append(row)
    widths = [
        max(len(r[i]) for r in [header] + rows) for i in range(len(header))
    ]
    lines = []
    for row in [header] + rows:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)))
    return "\n".join(lines)


def _preset_config(preset):
    """The backbone config of a preset name or folder."""
    from keras_mirasol.models import backbone_presets

    if preset in backbone_presets:
        return dict(backbone_presets[preset]["config"])
    with open(os.path.join(preset, "config.json")) as f:
        return dict(json.load(f)["config"])


def model_overrides(preset, long=False, combiner=None, unchunked=False):
    """The backbone config keys a demo changes in `preset`.

    Args:
        preset: str. Backbone preset name or folder.
        long: bool. 32 snippets of the preset's length (`LONG_CLIPS`).
            Defaults to `False`.
        combiner: str or None. `"transformer"` or `"ttm"`. Defaults to
            `None`, which keeps the preset's.
        unchunked: bool. The unchunked baseline of that config
            (`keras_mirasol.models.unchunked_config`). Defaults to `False`.

    Returns:
        dict of config keys to pass to `train`.

    Example:
    ```python
    keras_mirasol.demo.model_overrides("mirasol_tiny", long=True)
    # {'num_frames': 128, 'num_snippets': 32}
    ```
    """
    from keras_mirasol.models import unchunked_config

    config = _preset_config(preset)
    changed = dict(config)
    if long:
        per_snippet = config["num_frames"] // config["num_snippets"]
        snippets = LONG_CLIPS["num_snippets"]
        changed.update(num_frames=per_snippet * snippets, num_snippets=snippets)
    if combiner is not None:
        changed["combiner_type"] = combiner
    if unchunked:
        changed = unchunked_config(changed)
    return {k: v for k, v in changed.items() if config.get(k) != v}


def run_demo(
    workdir=".",
    clips=None,
    steps=None,
    epochs=10,
    batch_size=None,
    learning_rate=1e-3,
    preset="mirasol_tiny",
    seed=0,
    workers=None,
    questions_per_clip=6,
    long=False,
    combiner=None,
    unchunked=False,
    short_steps=None,
    short_clips=None,
):
    """Synthesize, convert, train, evaluate; returns the summary dict.

    Training encodes each clip once for all 6 of its questions
    (`questions_per_clip`): a step of `batch_size` questions runs the
    media encoders on `batch_size / 6` clips.

    Args:
        workdir: str. Writes `data/demo` and `runs/demo` here (`demo_long`
            for long clips, the run folder also named after a non-default
            Combiner or the baseline, e.g. `runs/demo_long_ttm`; the
            short-clip stage of a long demo in `runs/demo_long_2s`).
            Defaults to `"."`.
        clips: int or None. Clips over all splits. Defaults to `None`:
            2,000, or 1,200 long ones (`DEFAULTS`).
        steps: int or None. Training steps (on the long clips, with
            `long`). Defaults to `None`: 2,000, or 600 with long clips.
        epochs: int. Checkpoints every `steps / epochs` steps. Defaults to
            `10`.
        batch_size: int or None. Questions per step. Defaults to `None`:
            96, or 48 with long clips.
        learning_rate: float. Peak learning rate. Defaults to `1e-3`.
        preset: str. Backbone preset to train. Defaults to
            `"mirasol_tiny"`.
        seed: int. Seeds the data, the weights and the batch order.
            Defaults to `0`.
        workers: int or None. Processes writing and decoding clips.
            Defaults to `None`, which means all cores.
        questions_per_clip: int. Questions per clip per step. Defaults to
            `6`.
        long: bool. 16 s clips of 32 snippets with 4 events anywhere
            (`LONG_CLIPS`). Defaults to `False`.
        combiner: str or None. `"transformer"` or `"ttm"`. Defaults to
            `None`, which keeps the preset's.
        unchunked: bool. Train the unchunked baseline instead of Mirasol.
            Defaults to `False`.
        short_steps: int or None. With `long`: steps on the plain demo's
            2 s clips (`data/demo`, batches of twice `batch_size`) before
            the long clips, with the same weights; 0 trains on the long
            clips from the start. Defaults to `None`: 1,000, or 0 for the
            baseline, whose weights depend on the clip's length.
        short_clips: int or None. Clips of the short-clip stage's data.
            Defaults to `None`: the plain demo's 2,000.

    Returns:
        dict: the JSON line's summary.
    """
    import keras

    from keras_mirasol.evaluation import evaluate
    from keras_mirasol.training import train

    if unchunked and combiner is not None:
        raise ValueError(
            f"combiner={combiner!r} with unchunked=True: the unchunked "
            "baseline keeps every token and has no Combiner to choose. Pass "
            "one of them."
        )
    if short_steps and not long:
        raise ValueError(
            f"short_steps={short_steps} without long=True: the short-clip "
            "stage comes before training on long clips (demo --long)."
        )
    if short_steps and unchunked:
        raise ValueError(
            f"short_steps={short_steps} with unchunked=True: the baseline's "
            "one snippet spans the whole clip, so its weights are sized by "
            "the clip's length and cannot move from 2 s to 16 s clips. Use "
            "short_steps=0 (--short-steps 0) for the baseline."
        )
    defaults = DEFAULTS[bool(long)]
    clips = defaults["clips"] if clips is None else clips
    steps = defaults["steps"] if steps is None else steps
    batch_size = defaults["batch_size"] if batch_size is None else batch_size
    if short_steps is None:
        short_steps = 0 if unchunked else defaults.get("short_steps", 0)
    name = "demo_long" if long else "demo"
    run_name = name
    if unchunked:
        run_name += "_unchunked"
    elif combiner is not None:
        run_name += f"_{combiner}"
    start = time.time()
    base_preset = preset
    run_dir = os.path.join(workdir, "runs", run_name)
    print(f"backend {keras.backend.backend()}", flush=True)
    common = dict(
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        cache=True,
        threads=1,  # the other core(s) run the model
        verbose=2,
        questions_per_clip=questions_per_clip,
    )
    short, data_seconds = {}, 0.0
    if short_steps:
        # Stage 1: the plain demo's 2 s clips, then the same weights on
        # the long clips (the saved run loads at any number of snippets).
        if short_clips is None:
            short_clips = DEFAULTS[False]["clips"]
        short_records = prepare_data(
            os.path.join(workdir, "data", "demo"),
            short_clips,
            seed,
            (32, 32),
            workers,
        )
        data_seconds += time.time() - start
        short_dir = run_dir + "_2s"
        began = time.time()
        print(
            f"stage 1: {short_steps} steps on 2 s clips -> {short_dir}",
            flush=True,
        )
        train(
            short_records["train"],
            short_dir,
            preset=preset,
            steps=short_steps,
            # Twice the long clips' batch: the plain demo's 96 by default.
            batch_size=2 * batch_size,
            **common,
            **model_overrides(preset, combiner=combiner),
        )
        short = dict(
            short_steps=short_steps,
            short_train_seconds=round(time.time() - began, 1),
        )
        print(f"stage 2: {steps} steps on 16 s clips -> {run_dir}")
    data_began = time.time()
    records = prepare_data(
        os.path.join(workdir, "data", name),
        clips,
        seed,
        (32, 32),
        workers,
        **(LONG_CLIPS if long else {}),
    )
    data_seconds += time.time() - data_began
    began = time.time()
    if short:
        # The short run's weights, tokenizer and Combiner, on 32 snippets.
        overrides = model_overrides(preset, long)
        preset = short_dir
    else:
        overrides = model_overrides(preset, long, combiner, unchunked)
    lm, history = train(
        records["train"],
        run_dir,
        preset=preset,
        val_data=records["val"],
        steps=steps,
        batch_size=batch_size,
        # Validation after the last epoch only: each pass costs time the
        # demo's budget gives to training.
        validation_freq=epochs,
        **common,
        **overrides,
    )
    train_seconds = time.time() - began
    results = {
        "full": evaluate(lm, records["test"], batch_size, verbose=True),
        "zero_video": evaluate(
            lm, records["test"], batch_size, zero_video=True, verbose=True
        ),
        "zero_audio": evaluate(
            lm, records["test"], batch_size, zero_audio=True, verbose=True
        ),
    }
    print(results_table(results), flush=True)
    full = results["full"]
    summary = {
        "preset": base_preset,
        "clip_seconds": lm.backbone.num_frames / lm.backbone.frame_rate,
        "num_snippets": lm.backbone.num_snippets,
        "combiner": lm.backbone.combiner_type,
        "parameters": lm.backbone.count_params(),
        **short,
        "steps": steps,
        "batch_size": batch_size,
        "questions_per_clip": questions_per_clip,
        "learning_rate": learning_rate,
        "examples": full["examples"],
        "accuracy": full["accuracy"],
        "per_type": {k: v["accuracy"] for k, v in full["per_type"].items()},
        "zero_video": {
            k: v["accuracy"]
            for k, v in results["zero_video"]["per_type"].items()
        },
        "zero_audio": {
            k: v["accuracy"]
            for k, v in results["zero_audio"]["per_type"].items()
        },
        "final_loss": round(history["loss"][-1], 4),
        "data_seconds": round(data_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(run_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plots = draw_plots(run_dir, summary)
    if plots:
        summary["plots"] = plots
    print(json.dumps(summary), flush=True)
    return summary


def draw_plots(run_dir, summary):
    """The run's training curves and per-type accuracy as PNGs in
    `run_dir`, when matplotlib is installed (the `guides` extra).

    Args:
        run_dir: str. The run folder (with `history.json`).
        summary: dict. The demo's summary.

    Returns:
        list of str: the PNGs written (none without matplotlib).
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return []
    from keras_mirasol.plots import plot_accuracy_by_type
    from keras_mirasol.plots import plot_history

    return [
        plot_history(
            run_dir,
            os.path.join(run_dir, "training.png"),
            steps=summary["steps"],
        ),
        plot_accuracy_by_type(
            summary, os.path.join(run_dir, "accuracy_by_type.png")
        ),
    ]
