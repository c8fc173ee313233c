"""The `keras-mirasol` command line.

Keras is imported only after `--backend` is applied, so every subcommand
imports the library inside its function.
"""

import argparse
import json
import os
import sys

import numpy as np

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
    )
    _json_line({"out": args.out, "clips": counts})
    return 0


def cmd_convert(args):
    """Decode media files into TFRecord shards, with a report."""
    from keras_mirasol.data.records import REPORT_FILE
    from keras_mirasol.data.records import convert

    report = convert(
        args.videos,
        args.annotations,
        args.out,
        fps=args.fps,
        image_size=tuple(args.image_size * 2)[:2],
        sample_rate=args.sample_rate,
        clips_per_shard=args.clips_per_shard,
        workers=args.workers,
        timeout=args.timeout or None,
    )
    for item in report["skipped"]:
        print(f"skipped {item['input']}: {item['reason']}", file=sys.stderr)
    summary = {k: v for k, v in report.items() if k not in ("skipped",)}
    summary["report"] = os.path.join(args.out, REPORT_FILE)
    _json_line(summary)
    return 0


def cmd_train(args):
    """Train a preset on TFRecords; save the run as a preset folder."""
    from keras_mirasol.training import train

    overrides = json.loads(args.config) if args.config else {}
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
        **overrides,
    )
    _json_line(
        {"out": args.out, **{k: round(v[-1], 4) for k, v in history.items()}}
    )
    return 0


def _load_task(path):
    from keras_mirasol.models import MirasolCausalLM

    return MirasolCausalLM.from_preset(path)


def cmd_evaluate(args):
    """Exact-match accuracy per question type, as one JSON line."""
    from keras_mirasol.evaluation import evaluate

    result = evaluate(
        _load_task(args.model),
        args.data,
        batch_size=args.batch_size,
        zero_video=args.zero_video,
        zero_audio=args.zero_audio,
        max_examples=args.max_examples,
    )
    predictions = result.pop("predictions")
    if args.predictions:
        with open(args.predictions, "w") as f:
            for prediction in predictions:
                f.write(json.dumps(prediction) + "\n")
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
    answers = lm.generate(
        {k: np.stack(v) if k != "prompts" else v for k, v in inputs.items()},
        max_length=args.max_length or lm.preprocessor.sequence_length,
    )
    if not clip["has_audio"] and backbone.use_audio:
        print(f"note: {args.video} has no audio track (silence used)",
              file=sys.stderr)  # fmt: skip
    for question, answer in zip(questions, answers):
        print(f"{question} -> {answer.strip()}")
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
    )
    _json_line(result)
    return 0


def cmd_params(args):
    """Print each preset's per-component parameter count."""
    from keras_mirasol.models.parameter_count import count_parameters
    from keras_mirasol.models.parameter_count import format_counts

    for preset in args.presets:
        print(preset)
        print(format_counts(count_parameters(preset)))
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


def cmd_bench(args):
    """Time training, generation, the port and the pipeline in one run."""
    from keras_mirasol.benchmark import runner

    def log(line):
        print(line, file=sys.stderr, flush=True)

    jobs = runner.plan_jobs(
        configs=args.config or runner.CONFIG_NAMES,
        backends=args.backends.split(","),
        sections=args.sections.split(","),
        dtypes=args.dtypes.split(","),
        batch_size=args.batch_size,
        steps=args.steps,
        threads=args.threads,
        records=args.records,
    )
    if "port" in args.sections.split(","):
        from keras_mirasol.benchmark.port import port_available

        reason = port_available()
        if reason:
            log(f"skipping the PyTorch port: {reason}")
            jobs = [job for job in jobs if job[0] != "port"]
    records = runner.run_benchmark(jobs, log=log)
    summary = runner.summarize(records)
    summary["command"] = " ".join(["keras-mirasol", *sys.argv[1:]])
    summary["cpus"] = os.cpu_count()
    with open(args.output, "w") as f:
        json.dump({"summary": summary, "records": records}, f, indent=1)
    print(runner.format_summary(summary))
    print(f"\nwrote {args.output}")
    if args.json:
        _json_line(summary)
    return 1 if summary["errors"] else 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keras-mirasol",
        description="Mirasol3B models for Keras 3.",
    )
    parser.add_argument(
        "--backend",
        choices=["jax", "tensorflow", "torch"],
        help="Keras backend (default: $KERAS_BACKEND, else jax).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo",
        help="The main job at demo size: synthesize mp4 clips and "
        "questions, convert, train, evaluate (with ablations).",
    )
    demo.add_argument(
        "--workdir", default=".", help="Writes data/demo and runs/demo here."
    )
    demo.add_argument("--clips", type=int, default=2000)
    demo.add_argument("--steps", type=int, default=2000)
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--batch-size", type=int, default=96)
    demo.add_argument("--learning-rate", type=float, default=1e-3)
    demo.add_argument("--preset", default="mirasol_tiny")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=None)
    demo.add_argument(
        "--questions-per-clip",
        type=int,
        default=6,
        help="Questions per clip per training step (each clip is encoded "
        "once for them); must divide --batch-size.",
    )
    demo.set_defaults(func=cmd_demo)

    synth = sub.add_parser(
        "synth",
        help="Write the synthetic audio-visual QA dataset: mp4 clips and "
        "train/val/test JSONL questions.",
    )
    synth.add_argument("--out", required=True)
    synth.add_argument("--clips", type=int, default=3000)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--image-size", type=int, default=64)
    synth.add_argument("--fps", type=int, default=8)
    synth.add_argument("--workers", type=int, default=None)
    synth.set_defaults(func=cmd_synth)

    convert = sub.add_parser(
        "convert",
        help="Decode videos and annotations into TFRecord shards "
        "(resumable; skipped inputs listed in report.json).",
    )
    convert.add_argument("--videos", required=True)
    convert.add_argument("--annotations", required=True, nargs="+")
    convert.add_argument("--out", required=True)
    convert.add_argument("--fps", type=float, default=8)
    convert.add_argument("--image-size", type=int, nargs="+", default=[32])
    convert.add_argument("--sample-rate", type=int, default=16000)
    convert.add_argument("--clips-per-shard", type=int, default=256)
    convert.add_argument("--workers", type=int, default=None)
    convert.add_argument(
        "--timeout",
        type=float,
        default=120,
        help="Seconds one video may take to decode before its worker is "
        "killed and the video skipped (needs --workers >= 2; 0: no limit).",
    )
    convert.set_defaults(func=cmd_convert)

    train = sub.add_parser(
        "train", help="Train a preset on TFRecords written by convert."
    )
    train.add_argument("--train", required=True)
    train.add_argument("--val", default=None)
    train.add_argument("--out", required=True)
    train.add_argument("--preset", default="mirasol_tiny")
    train.add_argument(
        "--tokenizer",
        default=None,
        help="SentencePiece model (default: train one).",
    )
    train.add_argument("--steps", type=int, default=1500)
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0)
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

    evaluate = sub.add_parser(
        "evaluate",
        help="Exact-match accuracy per question type (ends with a JSON line).",
    )
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)
    evaluate.add_argument("--batch-size", type=int, default=64)
    evaluate.add_argument("--zero-video", action="store_true")
    evaluate.add_argument("--zero-audio", action="store_true")
    evaluate.add_argument("--max-examples", type=int, default=None)
    evaluate.add_argument(
        "--predictions",
        default=None,
        help="Write every prediction to this JSONL file.",
    )
    evaluate.set_defaults(func=cmd_evaluate)

    generate = sub.add_parser(
        "generate", help="Answer questions about a media file."
    )
    generate.add_argument("--model", required=True)
    generate.add_argument("--video", required=True)
    generate.add_argument("--question", required=True, action="append")
    generate.add_argument("--max-length", type=int, default=None)
    generate.set_defaults(func=cmd_generate)

    export = sub.add_parser(
        "export",
        help="Export a run as a SavedModel for TF Serving (signatures "
        "serving_default, encode_av, generate, and with --answer a "
        "string-in/string-out answer; ends with a JSON line).",
    )
    export.add_argument("--model", required=True)
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

    params = sub.add_parser(
        "params",
        help="Count presets' parameters per component without allocating "
        "their weights.",
    )
    params.add_argument("presets", nargs="+")
    params.set_defaults(func=cmd_params)

    bench = sub.add_parser(
        "bench",
        help="Training step, MFU, time per part, generation, the PyTorch "
        "port and the input pipeline, measured in one run (each job in its own "
        "process, one at a time).",
    )
    bench.add_argument(
        "--config",
        action="append",
        choices=["mirasol_tiny", "mirasol_small", "peer-matched"],
        help="Repeat for several (default: all three).",
    )
    bench.add_argument("--backends", default="jax,tensorflow")
    bench.add_argument(
        "--sections",
        default="train,parts,port,generate,pipeline",
        help="Comma-separated subset of train,parts,port,generate,pipeline "
        "(parts: each part's forward+backward alone, where a step's time "
        "goes).",
    )
    bench.add_argument("--dtypes", default="float32,mixed_bfloat16")
    bench.add_argument("--batch-size", type=int, default=2)
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
    bench.add_argument("--output", default="bench.json")
    bench.add_argument(
        "--json", action="store_true", help="Print the summary JSON last."
    )
    bench.set_defaults(func=cmd_bench)

    tokenizer = sub.add_parser(
        "tokenizer",
        help="Train a SentencePiece vocabulary offline from text files or "
        "annotations (.txt, .jsonl, .json, .csv).",
    )
    tokenizer.add_argument("inputs", nargs="+")
    tokenizer.add_argument("--output", required=True)
    tokenizer.add_argument("--vocabulary-size", type=int, default=1024)
    tokenizer.add_argument(
        "--model-type", default="bpe", choices=["bpe", "unigram"]
    )
    tokenizer.add_argument("--lowercase", action="store_true")
    tokenizer.set_defaults(func=cmd_tokenizer)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    quiet_native_logs()
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
