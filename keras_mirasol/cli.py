"""The `keras-mirasol` command line.

Keras is imported only after `--backend` is applied, so every subcommand
imports the library inside its function.
"""

import argparse
import json
import os
import sys
import textwrap

import numpy as np

from keras_mirasol import host_memory
from keras_mirasol.logs import quiet_native_logs


def _json_line(result):
    print(json.dumps(result), flush=True)


def cmd_demo(args):
    """Synthesize, convert, train and evaluate at demo size."""
    from keras_mirasol.demo import run_demo

    run_demo(
        workdir=args.workdir,
        clips=args.clips,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        preset=args.preset,
        seed=args.seed,
        workers=args.workers,
        questions_per_clip=args.questions_per_clip,
        long=args.long,
        combiner=args.combiner,
        unchunked=args.unchunked,
        short_steps=args.short_steps,
        short_clips=args.short_clips,
    )
    return 0


def cmd_synth(args):
    """Write the synthetic audio-visual QA dataset."""
    from keras_mirasol.data.synthetic import write_dataset

    counts = write_dataset(
        args.out,
        clips=args.clips,
        seed=args.seed,
        workers=args.workers,
        image_size=args.image_size,
        fps=args.fps,
        num_snippets=args.snippets,
        num_events=args.events,
        verbose=True,
    )
    _json_line({"out": args.out, "clips": counts})
    return 0


def cmd_convert(args):
    """Decode media files into TFRecord shards, with a report."""
    import shlex

    from keras_mirasol.data.records import REPORT_FILE

    options = dict(
        fps=args.fps,
        image_size=tuple(args.image_size * 2)[:2],
        sample_rate=args.sample_rate,
        clips_per_shard=args.clips_per_shard,
        timeout=args.timeout or None,
        splits=args.split,
        max_seconds=args.max_seconds,
    )
    if args.runner is None:
        if args.pipeline_options:
            raise ValueError(
                "convert: --pipeline-options are Apache Beam flags; give "
                "--runner DirectRunner (or another Beam runner) with them, "
                "or leave them out."
            )
        from keras_mirasol.data.records import convert

        options["workers"] = args.workers
    else:
        if args.workers is not None:
            raise ValueError(
                "convert: --workers sets this machine's decoding processes; "
                "with --runner the Beam runner decides (e.g. "
                "--pipeline-options '--direct_num_workers=4 "
                "--direct_running_mode=multi_processing')."
            )
        from keras_mirasol.data.beam_convert import convert

        options["runner"] = args.runner
        options["pipeline_options"] = shlex.split(args.pipeline_options or "")
    report = convert(args.videos, args.annotations, args.out, **options)
    for item in report["skipped"]:
        print(f"skipped {item['input']}: {item['reason']}", file=sys.stderr)
    summary = {k: v for k, v in report.items() if k not in ("skipped",)}
    summary["report"] = os.path.join(args.out, REPORT_FILE)
    _json_line(summary)
    return 0


def cmd_plot(args):
    """Draw a run's training curves and accuracy, and bench's scaling."""
    from keras_mirasol import plots

    if args.run is None and args.bench is None:
        raise ValueError(
            "plot: give --run RUN_DIR (a folder written by train or demo) "
            "and/or --bench FILE (written by bench --scaling)."
        )
    written = []
    if args.run is not None:
        out = args.out or args.run
        summary_path = os.path.join(args.run, "summary.json")
        summary = None
        if os.path.exists(summary_path):
            with open(summary_path) as f:
                summary = json.load(f)
        written.append(
            plots.plot_history(
                args.run,
                os.path.join(out, "training.png"),
                steps=(summary or {}).get("steps"),
            )
        )
        if summary is not None:
            written.append(
                plots.plot_accuracy_by_type(
                    summary, os.path.join(out, "accuracy_by_type.png")
                )
            )
    if args.bench is not None:
        out = args.out or os.path.dirname(os.path.abspath(args.bench))
        written.append(
            plots.plot_scaling(args.bench, os.path.join(out, "scaling.png"))
        )
    _json_line({"plots": written})
    return 0


def cmd_info(args):
    """Versions, backend, devices and host memory settings of this host."""
    from importlib import metadata

    import keras

    lines = [f"backend: {keras.backend.backend()}"]
    for package in (
        "keras_mirasol",
        "keras",
        "keras-hub",
        "jax",
        "tensorflow",
        "torch",
    ):
        try:
            lines.append(f"{package}: {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            lines.append(f"{package}: not installed")
    lines.append(
        "devices: "
        + ", ".join(str(d) for d in keras.distribution.list_devices())
    )
    lines.append(host_memory.describe())
    print("\n".join(lines), flush=True)
    return 0


def cmd_check_records(args):
    """Read every record; list the damaged ones; repair with --repair."""
    from keras_mirasol.data.record_io import check_records
    from keras_mirasol.data.snippets import record_files

    report = check_records(record_files(args.data), repair=args.repair)
    for line in report["damaged"]:
        print(f"damaged {line}", file=sys.stderr)
    _json_line(report)
    return 1 if report["damaged"] and not args.repair else 0


def cmd_train(args):
    """Train a preset on TFRecords; save the run as a preset folder."""
    from keras_mirasol.training import train

    overrides = json.loads(args.config) if args.config else {}
    if args.dtype:
        overrides["dtype"] = args.dtype
    distribution = None
    if args.mesh or args.data_parallel or args.multi_host:
        import keras

        from keras_mirasol.distribution import make_distribution

        if args.multi_host:
            # Every host of a TPU VM pod runs this same command.
            keras.distribution.initialize()
        distribution = make_distribution(
            mesh=args.mesh, data_parallel=not args.mesh
        )
    _, history = train(
        args.train,
        args.out,
        preset=args.preset,
        val_data=args.val,
        tokenizer=args.tokenizer,
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        cache=args.cache,
        verbose=1,
        distribution=distribution,
        text_loss_reduction=args.text_loss_reduction,
        questions_per_clip=args.questions_per_clip,
        checkpoint_every=args.checkpoint_every,
        **overrides,
    )
    from keras_mirasol.training import DAMAGED_RECORDS_FILE

    result = {"out": args.out}
    result.update({k: round(v[-1], 4) for k, v in history.items()})
    damaged = os.path.join(args.out, DAMAGED_RECORDS_FILE)
    if os.path.exists(damaged):
        result["damaged_records"] = damaged
    _json_line(result)
    return 0


def _load_task(path):
    from keras_mirasol.models import MirasolCausalLM

    return MirasolCausalLM.from_preset(path)


def cmd_evaluate(args):
    """Accuracy per task and question type, caption scores; a JSON line."""
    from keras_mirasol.evaluation import evaluate

    result = evaluate(
        _load_task(args.model),
        args.data,
        batch_size=args.batch_size,
        zero_video=args.zero_video,
        zero_audio=args.zero_audio,
        max_examples=args.max_examples,
        verbose=True,
    )
    predictions = result.pop("predictions")
    if args.predictions:
        with open(args.predictions, "w") as f:
            for prediction in predictions:
                f.write(json.dumps(prediction) + "\n")
    for name, value in result["per_task"].items():
        scores = [f"{k} {value[k]:.3f}" for k in ("accuracy", "bleu4", "cider")
                  if k in value]  # fmt: skip
        print(f"task {name}: {', '.join(scores)} of {value['examples']}")
    for name, value in result["per_type"].items():
        print(f"{name or '(no type)'}: {value['accuracy']:.3f} "
              f"of {value['examples']}")  # fmt: skip
    _json_line(result)
    return 0


def cmd_generate(args):
    """Answer questions about one media file."""
    from keras_mirasol.data.media import read_clip

    lm = _load_task(args.model)
    backbone = lm.backbone
    clip = read_clip(
        args.video,
        fps=backbone.frame_rate,
        sample_rate=backbone.audio_sample_rate,
    )
    questions = args.question
    inputs = {
        "video": [clip["video"]] * len(questions),
        "prompts": questions,
    }
    if backbone.use_audio:
        inputs["audio"] = [clip["audio"]] * len(questions)
    inputs = {
        k: np.stack(v) if k != "prompts" else v for k, v in inputs.items()
    }
    answers = lm.generate(
        inputs, max_length=args.max_length or lm.preprocessor.sequence_length
    )
    if not clip["has_audio"] and backbone.use_audio:
        print(f"note: {args.video} has no audio track (silence used)",
              file=sys.stderr)  # fmt: skip
    for question, answer in zip(questions, answers):
        print(f"{question} -> {answer.strip()}")
    if args.attention:
        from keras_mirasol.models.attention_maps import answer_attention
        from keras_mirasol.plots import plot_snippet_attention

        stem, extension = os.path.splitext(args.attention)
        maps = answer_attention(lm, inputs, answers)
        for index, (question, (tokens, weights)) in enumerate(
            zip(questions, maps)
        ):
            path = args.attention
            if len(questions) > 1:
                path = f"{stem}_{index}{extension or '.png'}"
            plot_snippet_attention(weights, path, tokens, title=question)
            print(f"attention: {path}")
    return 0


def cmd_export(args):
    """Export a run as a SavedModel for TF Serving."""
    from keras_mirasol.export import DEFAULT_SIGNATURES
    from keras_mirasol.export import export_saved_model

    signatures = args.signature or list(DEFAULT_SIGNATURES)
    if args.answer and "answer" not in signatures:
        signatures.append("answer")
    result = export_saved_model(
        _load_task(args.model),
        args.out,
        max_length=args.max_length,
        batch_size=args.batch_size,
        signatures=signatures,
        platforms=args.platform,
        overwrite=args.overwrite,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    _json_line(result)
    return 0


def cmd_params(args):
    """Print each preset's per-component parameter count."""
    from keras_mirasol.models.parameter_count import format_counts
    from keras_mirasol.models.parameter_count import parameter_breakdown

    for preset in args.presets:
        print(preset)
        print(format_counts(parameter_breakdown(preset)))
    return 0


def cmd_tokenizer(args):
    """Train a SentencePiece vocabulary from text or annotation files."""
    from keras_mirasol.data.annotations import corpus_texts
    from keras_mirasol.models.tokenizer import MirasolTokenizer
    from keras_mirasol.models.tokenizer import train_tokenizer

    train_tokenizer(
        corpus_texts(args.inputs),
        vocabulary_size=args.vocabulary_size,
        model_type=args.model_type,
        lowercase=args.lowercase,
        output_path=args.output,
    )
    tokenizer = MirasolTokenizer(proto=args.output)
    print(
        f"wrote {args.output}: {tokenizer.vocabulary_size()} tokens "
        "(pad 0, start "
        f"{tokenizer.start_token_id}, end {tokenizer.end_token_id})"
    )
    return 0


def _counts(text, usage):
    """Comma-separated positive ints from an option's `text`.

    Raises:
        ValueError: `usage` (what the option takes), and what it got,
            when `text` is not such a list.
    """
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise ValueError(f"{usage}; got {text!r}.")
    return counts


def cmd_bench(args):
    """Time training, generation, the port and the pipeline in one run."""
    from keras_mirasol.benchmark import runner

    def log(line):
        print(line, file=sys.stderr, flush=True)

    if args.sections is None:
        sections = ["scaling"] if args.scaling else list(runner.SECTIONS)
    else:
        sections = args.sections.split(",")
        if args.scaling:
            sections.append("scaling")
    known = runner.SECTIONS + runner.EXTRA_SECTIONS
    unknown = [name for name in sections if name not in known]
    if unknown:
        raise ValueError(
            f"Unknown bench section(s) {unknown}. Use a comma-separated "
            f"subset of {','.join(known)}."
        )
    if args.backends:
        backends = args.backends
    elif sections == ["scaling"]:
        backends = "jax"
    else:
        backends = ",".join(runner.default_backends())
    scaling = {}
    if args.scaling_frames:
        scaling["scaling_frames"] = _counts(
            args.scaling_frames,
            "--scaling-frames takes comma-separated frame counts, e.g. "
            "64,128,256,512",
        )
    if args.scaling_variants:
        variants = args.scaling_variants.split(",")
        bad = [v for v in variants if v not in runner.SCALING_VARIANTS]
        if bad:
            raise ValueError(
                f"Unknown --scaling-variants {bad}. Use a comma-separated "
                f"subset of {','.join(runner.SCALING_VARIANTS)}."
            )
        scaling["scaling_variants"] = variants
    batch_sizes = _counts(
        args.batch_size,
        "--batch-size takes a clip count or comma-separated counts, "
        "e.g. 2 or 2,8",
    )
    jobs = runner.plan_jobs(
        configs=args.config or runner.CONFIG_NAMES,
        backends=backends.split(","),
        sections=sections,
        dtypes=args.dtypes.split(","),
        batch_size=batch_sizes[0],
        train_batch_sizes=batch_sizes,
        steps=args.steps,
        threads=args.threads,
        records=args.records,
        scaling_config=args.scaling_config,
        **scaling,
    )
    if "port" in sections:
        from keras_mirasol.benchmark.port import port_available

        reason = port_available()
        if reason:
            log(f"skipping the PyTorch port: {reason}")
            jobs = [job for job in jobs if job[0] != "port"]
    jobs, skipped = runner.drop_slow_dtypes(jobs, log=log)
    cap = (
        runner.default_memory_cap_mb()
        if args.memory_cap_gb is None
        else args.memory_cap_gb * 1024
    )

    def write(records, complete):
        # After every job, through a temporary file: a stopped run keeps
        # every job it finished, and the file is never half written.
        summary = runner.summarize(records)
        summary["command"] = " ".join(["keras-mirasol", *sys.argv[1:]])
        summary["cpus"] = os.cpu_count()
        summary["skipped"] = skipped
        summary["complete"] = complete
        partial = f"{args.output}.partial"
        with open(partial, "w") as f:
            json.dump({"summary": summary, "records": records}, f, indent=1)
        os.replace(partial, args.output)
        return summary

    records = runner.run_benchmark(
        jobs,
        log=log,
        memory_cap_mb=cap,
        on_record=lambda records: write(records, complete=False),
    )
    summary = write(records, complete=True)
    print(runner.format_summary(summary))
    print(f"\nwrote {args.output}")
    if args.json:
        _json_line(summary)
    # Out of memory is a scaling result (the baseline at long clips), not
    # a failure; any other failed scaling job is.
    failed = [
        r for r in summary["scaling"] if r["error"] and not r["out_of_memory"]
    ]
    return 1 if summary["errors"] or failed else 0


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps prose, keeps indented example lines as written, and shows a
    default where one is set and the help does not already say it."""

    def _fill_text(self, text, width, indent):
        lines = []
        for block in text.split("\n"):
            if block.startswith("  "):
                lines.append(indent + block)
            else:
                lines.append(
                    textwrap.fill(
                        " ".join(block.split()),
                        width,
                        initial_indent=indent,
                        subsequent_indent=indent,
                        break_on_hyphens=False,
                    )
                )
        return "\n".join(lines)

    def _get_help_string(self, action):
        text = action.help or ""
        if (
            # `is`, not `in`: a default of 0 equals False but is shown.
            all(
                action.default is not value
                for value in (None, False, argparse.SUPPRESS)
            )
            and not action.required
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


def _command(sub, name, summary, description, example):
    """A subcommand whose help says what it does, how, and what it writes."""
    return sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="example:\n" + example,
        formatter_class=_HelpFormatter,
    )


def _add_training_options(
    parser, steps, batch_size, epochs_help, seed_help, defaults_help=None
):
    """The options `demo` and `train` share, with each command's defaults.

    Args:
        parser: the command's `argparse.ArgumentParser`.
        steps: int or None. Default of `--steps`.
        batch_size: int or None. Default of `--batch-size`.
        epochs_help: str. What `--epochs` does in this command.
        seed_help: str. What `--seed` seeds in this command.
        defaults_help: dict or None. Help text saying the defaults of
            `steps` and `batch_size` where they are None (set by the
            command from other options).
    """
    defaults_help = defaults_help or {}
    parser.add_argument(
        "--steps",
        type=int,
        default=steps,
        help="Training steps in total" + defaults_help.get("steps", "."),
    )
    parser.add_argument("--epochs", type=int, default=10, help=epochs_help)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        help="Questions per step" + defaults_help.get("batch_size", "."),
    )
    parser.add_argument(
        "--learning-rate",
        type=float,
        default=1e-3,
        help="Peak of the warmup + cosine schedule.",
    )
    parser.add_argument("--seed", type=int, default=0, help=seed_help)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-mirasol",
        description="Mirasol3B models for Keras 3: from media files and "
        "questions to a trained model that answers them.\n\n"
        "Start with `keras-mirasol demo` (the whole job at demo size), "
        "then `keras-mirasol COMMAND --help`.",
        epilog="the usual order:\n"
        "  keras-mirasol convert --videos clips/ --annotations train.jsonl "
        "--out records/train\n"
        "  keras-mirasol train --train records/train --out runs/mine\n"
        "  keras-mirasol evaluate --model runs/mine --data records/test\n"
        "  keras-mirasol generate --model runs/mine --video clip.mp4 "
        "--question 'what colour is shown first?'\n"
        "  keras-mirasol export --model runs/mine --out exported/mine/1",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "--backend",
        choices=["jax", "tensorflow", "torch"],
        help="Keras backend (default: $KERAS_BACKEND, else jax).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = _command(
        sub,
        "demo",
        "The main job at demo size: synthesize mp4 clips and "
        "questions, convert, train, evaluate (with ablations).",
        "Writes the synthetic audio-visual QA set (real mp4 files) to "
        "WORKDIR/data/demo, converts its train/val/test splits to "
        "TFRecords, trains a preset on them (WORKDIR/runs/demo, a preset "
        "folder that evaluate, generate and export load) and evaluates it "
        "with video and audio ablations: a table, then one JSON line. "
        "--long does it on 16 s clips of 32 snippets with 4 events "
        "anywhere in each (WORKDIR/data/demo_long, runs/demo_long), with "
        "either Combiner or as the unchunked baseline: Mirasol first "
        "trains on the 2 s clips (runs/demo_long_2s), then the same "
        "weights on the 16 s ones.",
        "  keras-mirasol demo --workdir /tmp/mirasol --seed 1\n"
        "  keras-mirasol demo --long --combiner ttm",
    )
    demo.add_argument(
        "--workdir", default=".", help="Writes data/demo and runs/demo here."
    )
    demo.add_argument(
        "--clips",
        type=int,
        default=None,
        help="Clips over all splits (default: 2000; 1200 with --long).",
    )
    _add_training_options(
        demo,
        steps=None,
        batch_size=None,
        epochs_help="Checkpoints (and a progress line) every steps/epochs "
        "steps.",
        seed_help="Seeds the data, the weights and the batch order.",
        defaults_help={
            "steps": " (default: 2000; with --long 600 on the long clips, "
            "after --short-steps).",
            "batch_size": " (default: 96; 48 with --long).",
        },
    )
    demo.add_argument(
        "--preset", default="mirasol_tiny", help="Backbone preset to train."
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Processes writing and decoding clips (default: all cores).",
    )
    demo.add_argument(
        "--questions-per-clip",
        type=int,
        default=6,
        help="Questions per clip per training step (each clip is encoded "
        "once for them); must divide --batch-size.",
    )
    demo.add_argument(
        "--long",
        action="store_true",
        help="16 s clips of 32 snippets, 4 events anywhere in each: the "
        "preset's snippets, 32 of them (defaults then: --clips 1200 "
        "--short-steps 1000 --steps 600 --batch-size 48).",
    )
    demo.add_argument(
        "--short-steps",
        type=int,
        default=None,
        help="With --long: steps on the plain demo's 2 s clips "
        "(WORKDIR/data/demo) before the 16 s ones, with the same weights; "
        "0 trains on the 16 s clips from the start (default: 1000; 0 for "
        "--unchunked, whose weights are sized by the clip's length).",
    )
    demo.add_argument(
        "--short-clips",
        type=int,
        default=None,
        help="With --long: clips of the 2 s data (default: 2000).",
    )
    demo.add_argument(
        "--combiner",
        choices=["transformer", "ttm"],
        default=None,
        help="Combiner of the trained model (default: the preset's).",
    )
    demo.add_argument(
        "--unchunked",
        action="store_true",
        help="Train the unchunked baseline: one snippet spanning the clip, "
        "every audio and video token kept.",
    )
    demo.set_defaults(func=cmd_demo)

    synth = _command(
        sub,
        "synth",
        "Write the synthetic audio-visual QA dataset: mp4 clips and "
        "train/val/test JSONL questions.",
        "Each clip is 4 segments of 0.5 s, each with its own colour, "
        "shape and sound; six questions per clip (video, audio, aligned, "
        "order, caption). Writes OUT/videos/clip_NNNNN.mp4 and "
        "OUT/{train,val,test}.jsonl; ends with a JSON line of the counts. "
        "With --snippets above 4, the 4 segments (--events) sit at random "
        "places in a longer clip whose other segments are black and "
        "silent.",
        "  keras-mirasol synth --out data/avqa --clips 500\n"
        "  keras-mirasol synth --out data/avqa_long --snippets 32 --events 4",
    )
    synth.add_argument("--out", required=True, help="Output folder.")
    synth.add_argument(
        "--clips", type=int, default=3000, help="Clips over all splits."
    )
    synth.add_argument(
        "--seed", type=int, default=0, help="Seeds every clip's content."
    )
    synth.add_argument(
        "--image-size", type=int, default=64, help="Frame height and width."
    )
    synth.add_argument("--fps", type=int, default=8, help="Frame rate.")
    synth.add_argument(
        "--snippets",
        type=int,
        default=4,
        help="Segments of 0.5 s per clip.",
    )
    synth.add_argument(
        "--events",
        type=int,
        default=None,
        help="Segments with a shape and a sound, at most 4 (default: "
        "every segment).",
    )
    synth.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Processes (default: all cores).",
    )
    synth.set_defaults(func=cmd_synth)

    convert = _command(
        sub,
        "convert",
        "Decode videos and annotations into TFRecord shards "
        "(resumable; skipped inputs listed in report.json).",
        "Reads annotation files (JSONL, CSV or JSON rows with video, "
        "question, answer and an optional type; multiple-choice questions, "
        "captions and labels; time ranges; the layouts of VGGSound, "
        "ActivityNet-QA, ActivityNet Captions, NExT-QA and MSRVTT-QA), "
        "decodes each named video once at the given frame rate, size and "
        "sample rate (the time ranges of one long video in one pass), and "
        "writes OUT/shard-* files plus OUT/report.json. A damaged, crashing "
        "or hanging file is skipped with its reason; every other clip is "
        "written. Ends with a JSON line.",
        "  keras-mirasol convert --videos data/avqa/videos "
        "--annotations data/avqa/train.jsonl --out records/train\n"
        "  keras-mirasol convert --videos vggsound/videos "
        "--annotations vggsound.csv --split test --out records/test\n"
        "  keras-mirasol convert --videos data/avqa/videos "
        "--annotations data/avqa/train.jsonl --out records/train "
        "--runner DirectRunner",
    )
    convert.add_argument(
        "--videos", required=True, help="Folder of the videos annotated."
    )
    convert.add_argument(
        "--annotations",
        required=True,
        nargs="+",
        help="JSONL, CSV or JSON annotation files.",
    )
    convert.add_argument("--out", required=True, help="Output folder.")
    convert.add_argument(
        "--fps", type=float, default=8, help="Frame rate to store."
    )
    convert.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=[32],
        help="Frame size to store: SIZE or HEIGHT WIDTH.",
    )
    convert.add_argument(
        "--sample-rate", type=int, default=16000, help="Audio rate in Hz."
    )
    convert.add_argument(
        "--clips-per-shard", type=int, default=256, help="Clips per file."
    )
    convert.add_argument(
        "--workers",
        type=int,
        default=None,
        help="Decoding processes (default: all cores).",
    )
    convert.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="Seconds one video may take to decode before its worker is "
        "killed and the video skipped (needs --workers >= 2; 0: no limit).",
    )
    convert.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="Store at most this many seconds of each clip (decoding stops "
        "there: a long file costs that span's memory); default: whole "
        "clips.",
    )
    convert.add_argument(
        "--split",
        nargs="+",
        default=None,
        help="Keep only annotations whose split field is one of these "
        "(VGGSound's CSV lists every split); default: all.",
    )
    convert.add_argument(
        "--runner",
        default=None,
        help="Run as an Apache Beam pipeline on this runner (DirectRunner, "
        "DataflowRunner, FlinkRunner, SparkRunner, ...; needs the beam "
        "extra): the same shards and report; default: this machine's "
        "cores.",
    )
    convert.add_argument(
        "--pipeline-options",
        default=None,
        help="More Beam flags in one string, with --runner, e.g. "
        "--pipeline-options='--direct_num_workers=4 "
        "--direct_running_mode=multi_processing'.",
    )
    convert.set_defaults(func=cmd_convert)

    info = _command(
        sub,
        "info",
        "Print the versions, backend, devices and host memory settings "
        "this command runs with (for bug reports).",
        "One line each: the Keras backend, the versions of keras_mirasol, "
        "Keras, keras-hub, JAX, TensorFlow and torch, the devices Keras "
        "sees, and whether XLA's host buffers get huge pages (see "
        "keras_mirasol.host_memory: `keras-mirasol` restarts itself with "
        "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 where the kernel's "
        "transparent huge pages are `madvise`; MIRASOL_HUGE_PAGES=0 turns "
        "that off).",
        "  keras-mirasol info",
    )
    info.set_defaults(func=cmd_info)

    check = _command(
        sub,
        "check-records",
        "Read every record of TFRecord files and list the damaged ones "
        "(failed checksums, files cut short); --repair rewrites them.",
        "Checks each record's checksums, as TensorFlow's reader does, but "
        "goes on past a damaged record, so one bad record costs only "
        "itself (training and evaluation skip such records too, and log "
        "them). Prints one line per damaged record (file, record number, "
        "byte offset, reason) and a JSON line of the counts; exits with 1 "
        "if any record is damaged and --repair was not given. With "
        "--repair, each damaged file is rewritten with its good records "
        "and the original is kept beside it as FILE.damaged.",
        "  keras-mirasol check-records records/train --repair",
    )
    check.add_argument(
        "data", nargs="+", help="Folders written by convert, globs or files."
    )
    check.add_argument(
        "--repair",
        action="store_true",
        help="Rewrite each damaged file with its good records.",
    )
    check.set_defaults(func=cmd_check_records)

    plot = _command(
        sub,
        "plot",
        "Draw a run's training curves and per-type accuracy, and bench's "
        "step time and memory against frames, as PNG files.",
        "With --run: RUN/history.json becomes training.png (loss and "
        "accuracy per step, training and validation) and, where the demo "
        "wrote RUN/summary.json, accuracy_by_type.png (with the zeroed-"
        "video and zeroed-audio ablations). With --bench: the JSON of "
        "`bench --scaling` becomes scaling.png. The PNGs go to --out, "
        "else beside their inputs. Needs matplotlib (the guides extra). "
        "Ends with a JSON line of the files written.",
        "  keras-mirasol plot --run runs/demo\n"
        "  keras-mirasol plot --bench bench.json --out figures/",
    )
    plot.add_argument(
        "--run", default=None, help="A folder written by train or demo."
    )
    plot.add_argument(
        "--bench", default=None, help="A JSON file written by bench."
    )
    plot.add_argument(
        "--out", default=None, help="Folder for the PNGs (created)."
    )
    plot.set_defaults(func=cmd_plot)

    train = _command(
        sub,
        "train",
        "Train a preset on TFRecords written by convert.",
        "Trains a tokenizer on the records' text (or takes --tokenizer), "
        "builds the preset at that vocabulary, and fits it with AdamW "
        "(warmup, cosine decay). OUT receives the trained model as a "
        "preset folder (config, weights, tokenizer, preprocessor) that "
        "evaluate, generate, export and MirasolCausalLM.from_preset load, "
        "checkpoints/epoch_NNN.weights.h5 and history.json. A killed run "
        "started again with the same command continues from its last "
        "checkpoint in OUT/backup and ends with the weights an "
        "uninterrupted run ends with. "
        "Ends with a JSON line of the last losses.",
        "  keras-mirasol train --train records/train --val records/val "
        "--out runs/mine --steps 2000 --batch-size 96 "
        "--questions-per-clip 6",
    )
    train.add_argument(
        "--train", required=True, help="Training records (folder or glob)."
    )
    train.add_argument(
        "--val", default=None, help="Validation records, validated per epoch."
    )
    train.add_argument("--out", required=True, help="Run folder.")
    train.add_argument(
        "--preset",
        default="mirasol_tiny",
        help="Backbone preset name or preset folder to start from; or a "
        "saved model (a run folder, or one saved with "
        "MirasolCausalLM.save_to_preset, e.g. from pretrained keras-hub "
        "parts), fine-tuned with its weights, tokenizer and frozen parts.",
    )
    train.add_argument(
        "--tokenizer",
        default=None,
        help="SentencePiece model (default: train one; a saved model "
        "keeps its own).",
    )
    _add_training_options(
        train,
        steps=1500,
        batch_size=64,
        epochs_help="Checkpoint and validate every steps/epochs steps.",
        seed_help="Seeds the weights, the batch order and the windows.",
    )
    train.add_argument(
        "--text-loss-reduction",
        choices=("token", "response"),
        default="token",
        help="Average the text loss over response tokens (token) or over "
        "responses, each by its own mean (response: every question counts "
        "the same, however long its answer).",
    )
    train.add_argument(
        "--questions-per-clip",
        type=int,
        default=None,
        help="Train on this many questions of each clip per step, encoding "
        "the clip once for all of them; --batch-size counts questions and "
        "must be a multiple (default: one clip per question).",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help="Also checkpoint the whole run every this many steps (default: "
        "at each epoch's end only); a killed run redoes at most that many.",
    )
    train.add_argument(
        "--dtype",
        choices=("float32", "mixed_bfloat16"),
        default=None,
        help="Dtype policy: mixed_bfloat16 computes in bfloat16 and keeps "
        "float32 weights (TPUs, recent GPUs); saved with the preset "
        "(default: the preset's, float32).",
    )
    train.add_argument(
        "--cache",
        action="store_true",
        help="Keep decoded training clips in memory.",
    )
    train.add_argument(
        "--config",
        default=None,
        help='Backbone overrides as JSON, e.g. \'{"combiner_type": "ttm"}\'.',
    )
    parallel = train.add_mutually_exclusive_group()
    parallel.add_argument(
        "--data-parallel",
        action="store_true",
        help="Replicate the model on every device, split each batch (JAX).",
    )
    parallel.add_argument(
        "--mesh",
        default=None,
        metavar="BATCHxMODEL",
        help="Shard weights over a (batch, model) device mesh, e.g. 2x4 "
        "(JAX; see MirasolBackbone.get_layout_map).",
    )
    train.add_argument(
        "--multi-host",
        action="store_true",
        help="Call keras.distribution.initialize() first (one process per "
        "host of a TPU VM pod); with neither flag above, data parallel.",
    )
    train.set_defaults(func=cmd_train)

    evaluate = _command(
        sub,
        "evaluate",
        "Accuracy per task and question type; BLEU-4 and CIDEr of "
        "captions (ends with a JSON line).",
        "Generates an answer (greedy, centred window) for every open-ended "
        "question and label in the records and compares it with the "
        "reference after normalising case, whitespace and end punctuation; "
        "answers a multiple-choice question with the candidate the model "
        "finds most likely; generates one caption per clip and scores it "
        "against the clip's reference captions (BLEU-4, CIDEr). Prints one "
        "line per task and per question type, then a JSON line; "
        "--predictions keeps every answer.",
        "  keras-mirasol evaluate --model runs/mine --data records/test "
        "--predictions predictions.jsonl",
    )
    evaluate.add_argument(
        "--model", required=True, help="Run or preset folder (train's OUT)."
    )
    evaluate.add_argument(
        "--data", required=True, help="Records written by convert."
    )
    evaluate.add_argument(
        "--batch-size", type=int, default=64, help="Questions per batch."
    )
    evaluate.add_argument(
        "--zero-video",
        action="store_true",
        help="Replace frames with black ones (how much answers need video).",
    )
    evaluate.add_argument(
        "--zero-audio",
        action="store_true",
        help="Replace audio with silence (how much answers need audio).",
    )
    evaluate.add_argument(
        "--max-examples",
        type=int,
        default=None,
        help="Stop after this many questions (default: all).",
    )
    evaluate.add_argument(
        "--predictions",
        default=None,
        help="Write every prediction to this JSONL file.",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    generate = _command(
        sub,
        "generate",
        "Answer questions about a media file.",
        "Decodes the file at the model's frame rate, size and sample rate, "
        "takes the centred window the model was trained on, and prints "
        "one `question -> answer` line per question.",
        "  keras-mirasol generate --model runs/mine --video clip.mp4 "
        "--question 'what colour is shown first?' "
        "--question 'when does the hum play?'\n"
        "  keras-mirasol generate --model runs/demo_long --video clip.mp4 "
        "--question 'what colour is on screen when the chirp plays?' "
        "--attention attention.png",
    )
    generate.add_argument(
        "--model", required=True, help="Run or preset folder (train's OUT)."
    )
    generate.add_argument(
        "--video", required=True, help="A media file PyAV can decode."
    )
    generate.add_argument(
        "--question",
        required=True,
        action="append",
        help="A question (repeatable).",
    )
    generate.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="Prompt plus answer tokens (default: the model's "
        "sequence_length).",
    )
    generate.add_argument(
        "--attention",
        default=None,
        help="Also draw, as this PNG (one per question: NAME_0.png, ...), "
        "which snippets each answer token was predicted from (the "
        "cross-attention weights; needs matplotlib).",
    )
    generate.set_defaults(func=cmd_generate)

    export = _command(
        sub,
        "export",
        "Export a run as a SavedModel for TF Serving (signatures "
        "serving_default, encode_av, generate, and with --answer a "
        "string-in/string-out answer; ends with a JSON line).",
        "Writes a SavedModel that TensorFlow's own tools load "
        "(saved_model_cli, TF Serving) to OUT, and ends with a JSON line "
        "of its signatures' inputs and outputs.",
        "  keras-mirasol export --model runs/mine --out exported/mine/1 "
        "--answer",
    )
    export.add_argument(
        "--model", required=True, help="Run or preset folder (train's OUT)."
    )
    export.add_argument(
        "--out",
        required=True,
        help="The SavedModel directory, e.g. exported/mirasol/1 (TF "
        "Serving loads numbered version folders).",
    )
    export.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="Prompt plus answer length of generate/answer (default: the "
        "preprocessor's sequence_length).",
    )
    export.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="Fix the batch size (default: dynamic).",
    )
    export.add_argument(
        "--signature",
        action="append",
        default=None,
        choices=["serving_default", "encode_av", "generate", "answer"],
        help="Export only these signatures (repeatable; default: "
        "serving_default, encode_av, generate).",
    )
    export.add_argument(
        "--answer",
        action="store_true",
        help="Also export `answer` (question strings in, answer strings "
        "out; the server needs TensorFlow Text ops, as TF Serving has).",
    )
    export.add_argument(
        "--platform",
        action="append",
        default=None,
        help="JAX only: a platform the export runs on, e.g. cpu, cuda "
        "(repeatable; default: the exporting one).",
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="Replace a SavedModel already in --out.",
    )
    export.set_defaults(func=cmd_export)

    params = _command(
        sub,
        "params",
        "Count presets' parameters per component without allocating "
        "their weights.",
        "Builds each preset shape-only (no weights are allocated, so even "
        "mirasol_3b takes seconds) and prints a table per component: its "
        "parameters, how many of them are a pretrained keras-hub "
        "backbone's (a model made with MirasolBackbone.from_components), "
        "how many are trainable (frozen parts and LoRA counted), and the "
        "component's class.",
        "  keras-mirasol params mirasol_tiny mirasol_3b runs/mine",
    )
    params.add_argument(
        "presets", nargs="+", help="Preset names or preset folders."
    )
    params.set_defaults(func=cmd_params)

    bench = _command(
        sub,
        "bench",
        "Training step, MFU, time per part, generation, the PyTorch "
        "port and the input pipeline, measured in one run (each job in its "
        "own process, one at a time).",
        "Prints a table and writes OUTPUT (JSON): the median, min and max "
        "of the timed steps after compiling, and ratios from this one run "
        "(ours vs the port, MFU against this run's matmul peak). Run "
        "nothing else heavy meanwhile. The port section needs the bench "
        "extra: pip install -e '.[bench]'.",
        "  keras-mirasol bench --config peer-matched --sections train,port "
        "--dtypes float32 --json",
    )
    bench.add_argument(
        "--config",
        action="append",
        choices=["mirasol_tiny", "mirasol_small", "peer-matched"],
        help="Repeat for several (default: all three).",
    )
    bench.add_argument(
        "--backends",
        default=None,
        help="Comma-separated Keras backends to measure (default: "
        "jax,tensorflow, and torch where it is installed; jax for "
        "--scaling alone).",
    )
    bench.add_argument(
        "--sections",
        default=None,
        help="Comma-separated subset of train,parts,port,generate,stream,"
        "pipeline,scaling (parts: each part's forward+backward alone, where "
        "a step's time goes; stream: seconds per snippet appended to a live "
        "stream, early and at snippet 64; default: all but scaling).",
    )
    bench.add_argument(
        "--scaling",
        action="store_true",
        help="Also run the scaling section (alone when --sections is not "
        "given): a training step at 64-512 frames for Mirasol with each "
        "Combiner, with and without remat, and the unchunked baseline; "
        "time, peak memory, parameters and the ratios from one length to "
        "four times it. Tens of minutes on a CPU.",
    )
    bench.add_argument(
        "--scaling-frames",
        default=None,
        help="Comma-separated clip lengths of the scaling section "
        "(default: 64,128,256,512).",
    )
    bench.add_argument(
        "--scaling-variants",
        default=None,
        help="Comma-separated models of the scaling section (default: "
        "transformer,ttm,transformer+remat,ttm+remat,unchunked).",
    )
    bench.add_argument(
        "--scaling-config",
        default="peer-matched",
        choices=["mirasol_tiny", "mirasol_small", "peer-matched"],
        help="Config of the scaling section; a preset keeps its frames per "
        "snippet (default: peer-matched, 4 frames per snippet).",
    )
    bench.add_argument(
        "--memory-cap-gb",
        type=float,
        default=None,
        help="Stop a job whose resident memory passes this and report it "
        "out of memory (default: 80%% of this machine's memory).",
    )
    bench.add_argument(
        "--dtypes",
        default="float32,mixed_bfloat16",
        help="Comma-separated dtype policies of the train section.",
    )
    bench.add_argument(
        "--batch-size",
        default="2",
        help="Clips per step. A comma-separated list (2,8) times the train "
        "section at each size, MFU against batch size; the other sections "
        "use the first.",
    )
    bench.add_argument(
        "--steps", type=int, default=10, help="Timed steps after compiling."
    )
    bench.add_argument(
        "--threads",
        type=int,
        default=None,
        help="The port's torch threads (default: all cores, as XLA uses).",
    )
    bench.add_argument(
        "--records",
        default=None,
        help="`convert` output for the pipeline section (default: 200 "
        "synthetic clips written for it).",
    )
    bench.add_argument(
        "--output",
        default="bench.json",
        help="Where the JSON goes; rewritten after every job, so a "
        "stopped run keeps the jobs it finished (summary.complete: false).",
    )
    bench.add_argument(
        "--json", action="store_true", help="Print the summary JSON last."
    )
    bench.set_defaults(func=cmd_bench)

    tokenizer = _command(
        sub,
        "tokenizer",
        "Train a SentencePiece vocabulary offline from text files or "
        "annotations (.txt, .jsonl, .json, .csv).",
        "Reads every line of text files and the questions and answers of "
        "annotation files, and writes a SentencePiece model with "
        "Mirasol's special tokens (<pad> 0, <unk>, <s>, </s>) to OUTPUT, "
        "for train --tokenizer or MirasolTokenizer(proto=OUTPUT).",
        "  keras-mirasol tokenizer data/avqa/train.jsonl --output vocab.spm "
        "--vocabulary-size 512",
    )
    tokenizer.add_argument(
        "inputs", nargs="+", help="Text or annotation files."
    )
    tokenizer.add_argument(
        "--output", required=True, help="The SentencePiece model file."
    )
    tokenizer.add_argument(
        "--vocabulary-size",
        type=int,
        default=1024,
        help="Largest vocabulary (a small corpus may give fewer pieces).",
    )
    tokenizer.add_argument(
        "--model-type",
        default="bpe",
        choices=["bpe", "unigram"],
        help="SentencePiece algorithm.",
    )
    tokenizer.add_argument(
        "--lowercase",
        action="store_true",
        help="Lowercase text before training and tokenizing.",
    )
    tokenizer.set_defaults(func=cmd_tokenizer)
    return parser


def main(argv=None):
    if argv is None:
        # The command as a program: restart once with huge pages for the
        # host allocator (`keras_mirasol.host_memory`); a no-op where
        # that cannot help or the environment already decides.
        host_memory.exec_with_huge_pages()
    args = build_parser().parse_args(argv)
    quiet_native_logs()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
