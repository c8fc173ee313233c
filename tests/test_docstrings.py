"""The docstring examples of the public API run, and print what they say.

Each ```python block of a public class's or function's docstring is run;
a line `expr  # (1, 8, 64)` or `expr  # [1, 2, 28, 64]` states the shape
of `expr`, and the test checks it.
"""

import inspect
import re

import keras
import numpy as np
import pytest

import keras_mirasol
from keras_mirasol import layers
from keras_mirasol import models

BLOCK = re.compile(r"```python\n(.*?)```", re.S)
SHAPE_COMMENT = re.compile(
    r"^(?P<expr>[^#]+?)\s*#\s*[\(\[](?P<shape>[\d, ]+)[\)\]]\s*$"
)
# Examples that need more than this process has (8 devices).
NEEDS_DEVICES = "DeviceMesh"


def _documented():
    objects = {}
    for module in (models, layers):
        for name in module.__all__:
            obj = getattr(module, name)
            objects[f"{module.__name__}.{name}"] = obj
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and callable(member):
                        objects[f"{module.__name__}.{name}.{attr}"] = member
    return objects


def _examples():
    found = []
    for name, obj in _documented().items():
        # Our own docstrings, not those inherited from Keras.
        doc = inspect.cleandoc(obj.__doc__ or "")
        for i, block in enumerate(BLOCK.findall(doc)):
            if NEEDS_DEVICES not in block:
                found.append(pytest.param(block, id=f"{name}[{i}]"))
    return found


def _run(block):
    namespace = {"np": np, "keras": keras, "keras_mirasol": keras_mirasol}
    lines = inspect.cleandoc(block).splitlines()
    code, checks = [], []
    for line in lines:
        match = SHAPE_COMMENT.match(line)
        if match and not line.startswith((" ", ")", "]", "}")):
            name = f"_shown_{len(checks)}"
            code.append(f"{name} = {match['expr']}")
            shape = tuple(int(d) for d in match["shape"].split(",") if d)
            checks.append((name, match["expr"], shape))
        else:
            code.append(line)
    exec("\n".join(code), namespace)
    for name, expr, shape in checks:
        value = namespace[name]
        got = tuple(value.shape) if hasattr(value, "shape") else tuple(value)
        assert got == shape, f"`{expr}` is {got}, the docstring says {shape}"
    return checks


@pytest.mark.parametrize("block", _examples())
def test_docstring_example_runs_and_shows_the_right_shapes(block):
    _run(block)


def test_examples_are_found_and_state_shapes():
    examples = _examples()
    assert len(examples) >= 8
    assert sum(bool(SHAPE_COMMENT.search(e.values[0])) for e in examples) >= 1
