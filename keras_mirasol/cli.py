"""The `keras-mirasol` command line.

Keras is imported only after `--backend` is applied, so every subcommand
imports the library inside its function.
"""

import argparse
import os
import sys


def cmd_demo(args):
    """Build a preset, train it on a fixed random batch, show the loss."""
    from keras_mirasol.demo import run_demo

    result = run_demo(
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        length=args.length,
        seed=args.seed,
    )
    return 0 if result["last_loss"] < result["first_loss"] else 1


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
    from keras_mirasol.models.tokenizer import MirasolTokenizer
    from keras_mirasol.models.tokenizer import train_tokenizer

    train_tokenizer(
        args.inputs,
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
        help="Build a preset and train it a few steps on a fixed random "
        "batch, printing the falling loss.",
    )
    demo.add_argument("--preset", default="mirasol_tiny")
    demo.add_argument("--steps", type=int, default=100)
    demo.add_argument("--batch-size", type=int, default=8)
    demo.add_argument("--length", type=int, default=16)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=cmd_demo)

    params = sub.add_parser(
        "params",
        help="Count presets' parameters per component without allocating "
        "their weights.",
    )
    params.add_argument("presets", nargs="+")
    params.set_defaults(func=cmd_params)

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
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("KERAS_BACKEND", "jax")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
