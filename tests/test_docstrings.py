"""The docstring examples of the public API run, and print what they say.

Each ```python block of a public class's or function's docstring is run;
a line `expr  # (1, 8, 64)` or `expr  # [1, 2, 28, 64]` states the shape
of `expr`, and the test checks it. Every argument of the public API has
its own `Args:` entry, and one with a default states it ("Defaults to
`...`.").
"""

import ast
import importlib
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
                    if isinstance(member, classmethod):
                        member = getattr(obj, attr)
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


# Modules whose public functions (and, for models and layers, classes and
# their methods) must document every argument.
ARGS_MODULES = (
    "keras_mirasol.models",
    "keras_mirasol.layers",
    "keras_mirasol.data",
    "keras_mirasol.distribution",
    "keras_mirasol.export",
    "keras_mirasol.training",
    "keras_mirasol.evaluation",
)
# Modules without `__all__`: their own functions are their public API.
DEFINED_HERE = (
    "keras_mirasol.export",
    "keras_mirasol.training",
    "keras_mirasol.evaluation",
)
# Methods documented by the class's `Call arguments:` or by Keras.
SKIPPED_METHODS = {
    "build",
    "call",
    "compute_output_shape",
    "compute_output_spec",
    "get_config",
    "from_config",
}
# Entries that may stand for `**kwargs` and the like.
VARIADIC_ENTRIES = {"args", "kwargs", "overrides"}
ENTRY = re.compile(r"^    (?P<head>\S[^:]*?)(?: \([^)]*\))?:(?: |$)")
DEFAULT = re.compile(r"Defaults to `(?P<value>[^`]*)`")


def _args_entries(doc):
    """`{entry: text}` of a docstring's `Args:` section, or `None`."""
    doc = inspect.cleandoc(doc or "")
    section = re.search(r"^Args:\n(.*?)(?=^\S|\Z)", doc, re.S | re.M)
    if section is None:
        return None
    entries, current = {}, None
    for line in section.group(1).splitlines():
        if not line.strip():
            continue
        match = ENTRY.match(line)
        if match:
            current = match["head"]
            entries[current] = line[match.end() :].strip()
        elif current is not None and line.startswith("        "):
            entries[current] += " " + line.strip()
        else:
            current = line.strip()
            entries[current] = ""
    return entries


def _overrides_outside(cls, attr):
    """Whether `attr` overrides a method of Keras or keras-hub."""
    for base in cls.__mro__[1:]:
        if attr in vars(base):
            return not base.__module__.startswith("keras_mirasol")
    return False


def _public_callables(module):
    if module.__name__ in DEFINED_HERE:
        names = [
            name
            for name, obj in vars(module).items()
            if not name.startswith("_")
            and inspect.isfunction(obj)
            and obj.__module__ == module.__name__
        ]
    else:
        names = module.__all__
    for name in names:
        obj = getattr(module, name)
        if inspect.isfunction(obj):
            yield f"{module.__name__}.{name}", obj, obj
        elif inspect.isclass(obj) and module.__name__ in (
            "keras_mirasol.models",
            "keras_mirasol.layers",
        ):
            yield f"{module.__name__}.{name}", obj.__init__, obj
            for attr, member in vars(obj).items():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if (
                    attr.startswith("_")
                    or attr in SKIPPED_METHODS
                    or not inspect.isfunction(member)
                ):
                    continue
                if member.__doc__ is None and _overrides_outside(obj, attr):
                    continue
                yield f"{module.__name__}.{name}.{attr}", member, member


def _argument_problems(signature_of, doc_of):
    """What the `Args:` section of `doc_of` gets wrong about `signature_of`."""
    signature = inspect.signature(signature_of)
    params = [
        p
        for p in signature.parameters.values()
        if p.name not in ("self", "cls")
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not params:
        return []
    entries = _args_entries(doc_of.__doc__)
    if entries is None:
        return [f"no `Args:` section for {[p.name for p in params]}"]
    problems = []
    names = {p.name for p in signature.parameters.values()}
    for entry in entries:
        name = entry.lstrip("*")
        if not name.isidentifier():
            problems.append(f"entry `{entry}` is not one argument's name")
        elif name not in names and name not in VARIADIC_ENTRIES:
            problems.append(f"entry `{entry}` names no argument")
    for p in params:
        if p.name not in entries:
            problems.append(f"`{p.name}` has no entry")
            continue
        if p.default is p.empty:
            continue
        stated = DEFAULT.search(entries[p.name])
        if stated is None:
            problems.append(f"`{p.name}` does not say 'Defaults to `...`.'")
            continue
        problem = _default_mismatch(p.default, stated["value"])
        if problem:
            problems.append(f"`{p.name}`: {problem}")
    return problems


def _is_literal(value):
    if isinstance(value, (tuple, list)):
        return all(_is_literal(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _default_mismatch(default, text):
    """Why `text` does not state `default`; `None` when it does."""
    if not _is_literal(default):
        # Computed or an object: the text explains it in words.
        return None
    try:
        stated = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return f"states `{text}`, the signature has `{default!r}`"
    if type(stated) is not type(default) or stated != default:
        return f"states `{text}`, the signature has `{default!r}`"
    return None


def _argument_documentation():
    for module_name in ARGS_MODULES:
        module = importlib.import_module(module_name)
        for name, signature_of, doc_of in _public_callables(module):
            yield name, signature_of, doc_of


def test_every_argument_has_one_entry_with_its_default():
    problems = []
    for name, signature_of, doc_of in _argument_documentation():
        for problem in _argument_problems(signature_of, doc_of):
            problems.append(f"{name}: {problem}")
    assert not problems, "\n".join([f"{len(problems)} problems:", *problems])


def test_the_argument_check_sees_the_public_api():
    names = {name for name, *_ in _argument_documentation()}
    assert "keras_mirasol.models.MirasolBackbone" in names
    assert "keras_mirasol.models.MirasolCausalLM.generate" in names
    assert "keras_mirasol.data.snippet_dataset" in names
    assert "keras_mirasol.training.train" in names
    assert "keras_mirasol.layers.TransformerStack.call" not in names


def test_the_argument_check_flags_what_it_should():
    def documented(
        alpha,
        beta=2,
        gamma=(1, 2),
        name="x",
        dtype=None,
        epsilon=1e-6,
        video_dim=8,
        **kwargs,
    ):
        """Summary.

        Args:
            alpha, beta: int. Grouped.
            gamma: tuple. Defaults to `(1, 3)`.
            name: string. Defaults to `"x"`.
            dtype: string. Defaults to `None`, which means float32.
            epsilon: float. Small.
            {video,audio}_dim: int. Widths. Defaults to `8`.
            delta: int. Not an argument.
            **kwargs: passed on.
        """

    problems = "\n".join(_argument_problems(documented, documented))
    assert "entry `alpha, beta` is not one argument's name" in problems
    assert "`alpha` has no entry" in problems
    assert "`beta` has no entry" in problems
    assert "`gamma`: states `(1, 3)`" in problems
    assert "entry `delta` names no argument" in problems
    assert "`epsilon` does not say 'Defaults to" in problems
    assert "entry `{video,audio}_dim` is not one argument's name" in problems
    assert "`video_dim` has no entry" in problems
    assert "`name`" not in problems
    assert "`dtype`" not in problems
    assert "kwargs" not in problems
    assert len(problems.splitlines()) == 8
