"""Rebuild keras_mirasol/models/assets/default_vocabulary.spm.

The vocabulary that built-in presets use until you train your own
(`keras-mirasol tokenizer`). It is trained offline on template sentences
about what is seen and heard in clips; byte fallback lets it spell any
other text. Run: `python tools/make_default_vocabulary.py`.
"""

import itertools
import pathlib

from keras_mirasol.models.tokenizer import train_tokenizer

COLOURS = "red green blue yellow orange purple pink brown black white grey"
SHAPES = "square circle triangle star rectangle line dot cross ring heart"
SOUNDS = "tone beep click whistle hum buzz chirp drum bell silence noise"
PITCHES = "high low rising falling loud quiet short long"
PLACES = "left right top bottom centre middle corner edge"
ORDER = "first second third last before after during while then next"
NUMBERS = "zero one two three four five six seven eight nine ten"
QUESTIONS = [
    "what colour is the {shape}?",
    "what colour was on screen when the {pitch} {sound} played?",
    "which shape appeared {order}?",
    "what sound follows the {colour} {shape}?",
    "how many {shape}s are there?",
    "where is the {colour} {shape}?",
    "is there a {sound} in the clip?",
    "what happens {order} the {pitch} {sound}?",
    "describe the video.",
    "a {colour} {shape} moves to the {place} while a {pitch} {sound} plays.",
    "the {shape} is {colour} and there are {number} of them.",
    "a person is talking about the {colour} {shape} on the {place}.",
]


def sentences():
    words = {
        "colour": COLOURS.split(),
        "shape": SHAPES.split(),
        "sound": SOUNDS.split(),
        "pitch": PITCHES.split(),
        "place": PLACES.split(),
        "order": ORDER.split(),
        "number": NUMBERS.split(),
    }
    cycles = {k: itertools.cycle(v) for k, v in words.items()}
    for _ in range(40):
        for template in QUESTIONS:
            yield template.format(**{k: next(c) for k, c in cycles.items()})
    for values in words.values():
        yield from values


def main():
    out = (
        pathlib.Path(__file__).parents[1]
        / "keras_mirasol"
        / "models"
        / "assets"
        / "default_vocabulary.spm"
    )
    train_tokenizer(list(sentences()), vocabulary_size=1024, output_path=out)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
