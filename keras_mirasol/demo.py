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
"""

import json
import os
import time

from keras_mirasol.data.records import convert
from keras_mirasol.data.synthetic import write_dataset

SPLITS = ("train", "val", "test")


def prepare_data(data_dir, clips, seed, image_size, workers=None):
    """Synthesize clips and convert every split; returns record folders."""
    avqa = os.path.join(data_dir, "avqa")
    counts = write_dataset(
        avqa,
        clips=clips,
        seed=seed,
        workers=workers,
        image_size=image_size[0],
        verbose=True,
    )
    print(f"synth: {counts} clips in {avqa}", flush=True)
    records = {}
    for split in SPLITS:
        records[split] = os.path.join(data_dir, "records", split)
        report = convert(
            os.path.join(avqa, "videos"),
            os.path.join(avqa, f"{split}.jsonl"),
            records[split],
            image_size=image_size,
            workers=workers,
            verbose=False,
        )
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


def run_demo(
    workdir=".",
    clips=2000,
    steps=2000,
    epochs=10,
    batch_size=96,
    learning_rate=1e-3,
    preset="mirasol_tiny",
    seed=0,
    workers=None,
    questions_per_clip=6,
):
    """Synthesize, convert, train, evaluate; returns the summary dict.

    Training encodes each clip once for all 6 of its questions
    (`questions_per_clip`): a step of `batch_size` questions runs the
    media encoders on `batch_size / 6` clips.
    """
    import keras

    from keras_mirasol.evaluation import evaluate
    from keras_mirasol.training import train

    start = time.time()
    data_dir = os.path.join(workdir, "data", "demo")
    run_dir = os.path.join(workdir, "runs", "demo")
    print(f"backend {keras.backend.backend()}", flush=True)
    records = prepare_data(data_dir, clips, seed, (32, 32), workers)
    data_seconds = time.time() - start
    lm, history = train(
        records["train"],
        run_dir,
        preset=preset,
        val_data=records["val"],
        steps=steps,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        cache=True,
        threads=1,  # the other core(s) run the model
        verbose=2,
        # Validation after the last epoch only: each pass costs time the
        # demo's budget gives to training.
        validation_freq=epochs,
        questions_per_clip=questions_per_clip,
    )
    train_seconds = time.time() - start - data_seconds
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
        "preset": preset,
        "parameters": lm.backbone.count_params(),
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
    print(json.dumps(summary), flush=True)
    return summary
