"""Checks that make loading a preset folder or a `.keras` file safe and clear.

Keras and keras-hub already do the dangerous part right: `load_model`
runs in safe mode, and keras-hub's `from_preset` deserializes with
Keras' default `safe_mode=True`, so a `Lambda` layer that Keras is asked
to build is refused. What they leave to us:

- A `MirasolBackbone` is a Functional model, and Keras' Functional
  constructor drops keyword arguments it does not know: a config key that
  no `MirasolBackbone` takes (a typo, a key from another version, a
  tampered file) used to load silently, and so did a `Lambda` layer or
  Python bytecode written under such a key (never built, but a sign the
  file was not written by `save_to_preset()`).
- `keras.config.enable_unsafe_deserialization()` turns safe mode off for
  every later load. No Mirasol config holds code, so these checks refuse
  code in a Mirasol file whatever that switch says.
- keras-hub names `model.weights.json` when `model.weights.h5` is
  missing, and does not check for a preprocessor, tokenizer or tokenizer
  assets that a task preset needs.
- Keras reports a weights file of other shapes as "A total of N objects
  could not be loaded" with one example; `weight_mismatch_error` lists
  every weight whose shape differs, by its path, with both shapes.

`check_preset` reads local preset folders only: a remote handle
(`hf://`, `kaggle://`, ...) goes to keras-hub as before, in Keras' safe
mode, and still meets the checks of `MirasolBackbone.from_config` and
`MirasolBackbone.load_weights`.
"""

import difflib
import inspect
import json
import os
import re

import keras
import keras_hub

CONFIG_FILE = "config.json"
TASK_FILE = "task.json"
PREPROCESSOR_FILE = "preprocessor.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
_JSON_FILES = (CONFIG_FILE, TASK_FILE, PREPROCESSOR_FILE, TOKENIZER_FILE)

# Serialized objects that carry Python code: a `Lambda` layer runs a
# function stored in the file, `__lambda__` is marshalled bytecode, a
# `TFSMLayer` runs a SavedModel's graph. No Mirasol config holds one.
_CODE_OBJECTS = {
    "__lambda__": "Python bytecode (a serialized lambda)",
    "Lambda": "a `Lambda` layer, which runs a Python function stored in "
    "the file",
    "TFSMLayer": "a `TFSMLayer`, which runs a TensorFlow graph stored "
    "outside the file",
}

# Keys every Keras layer's config holds, and keras-hub's `config_file`
# (popped from `**kwargs`, so in no signature).
_BASE_KEYS = {"name", "trainable", "dtype", "config_file"}

_SAVER = "`save_to_preset()`"
_TASK_SAVER = "`MirasolCausalLM.save_to_preset()`"


def config_keys(cls):
    """The config keys `cls.from_config` accepts: its constructor's
    arguments, those of the base classes it passes `**kwargs` to, and the
    keys every Keras layer config holds.

    Args:
        cls: a Keras layer or model class.

    Returns:
        set of str.
    """
    keys = set(_BASE_KEYS)
    for base in cls.__mro__:
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        keys.update(
            p.name
            for p in parameters
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        if not any(p.kind == p.VAR_KEYWORD for p in parameters):
            break
    return keys - {"self"}


def check_config_keys(cls, keys, where):
    """Raise a `ValueError` naming the first key `cls` does not take.

    Args:
        cls: the class the config builds.
        keys: iterable of str. The config's keys.
        where: str. Where the config came from, for the message, e.g.
            `"in /runs/a/config.json"`.
    """
    known = config_keys(cls)
    for key in keys:
        if key in known:
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ValueError(
            f"{cls.__name__} got an unknown config key '{key}' {where}"
            f"{hint}. Its config keys are the arguments of "
            f"`{cls.__name__}(...)`; remove the key or correct its name. A "
            "preset written by `save_to_preset()` holds only known keys, so "
            "this one was edited or written by another version of "
            "keras_mirasol."
        )


def _code_objects(value, at):
    """Yield `(location, description)` of each code-carrying object."""
    if isinstance(value, dict):
        name = value.get("class_name")
        if isinstance(name, str) and name in _CODE_OBJECTS:
            yield at, _CODE_OBJECTS[name]
            return
        for key, item in value.items():
            yield from _code_objects(item, f"{at}.{key}" if at else key)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _code_objects(item, f"{at}[{index}]")


def _registered_objects(value, at):
    """Yield `(location, class, config)` of each keras_mirasol object."""
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _registered_objects(item, f"{at}[{index}]")
        return
    if not isinstance(value, dict):
        return
    name = value.get("registered_name")
    config = value.get("config")
    if (
        isinstance(name, str)
        and name.startswith("keras_mirasol>")
        and isinstance(config, dict)
    ):
        cls = keras.saving.get_registered_object(name)
        if inspect.isclass(cls):
            yield at, cls, config
    for key, item in value.items():
        yield from _registered_objects(item, f"{at}.{key}" if at else key)


def _location(at):
    return f"`{at}`" if at else "the top-level object"


def check_serialized(serialized, source, root=""):
    """Refuse code in a serialized config; name unknown config keys.

    Args:
        serialized: dict. A config as `get_config()` returns it, or a
            serialized object (`{"class_name": ..., "config": ...}`) as a
            preset's JSON files hold it.
        source: str. Where it came from, for the messages, e.g.
            `"in /runs/a/config.json"`.
        root: str. Name of `serialized` in the messages.
            Defaults to `""`: locations start at its keys.
    """
    for at, what in _code_objects(serialized, root):
        raise ValueError(
            f"Refusing to load the config {source}: {_location(at)} holds "
            f"{what}. "
            "Loading it could run code from the file, which Keras' safe "
            "mode forbids; no Mirasol config holds code, so this was not "
            "written by `save_to_preset()` or was changed after. Load a "
            "preset folder or `.keras` file that you saved or trust."
        )
    for at, cls, config in _registered_objects(serialized, root):
        where = source if at == root else f"{source} (at {_location(at)})"
        check_config_keys(cls, config, where)


def check_config(cls, config):
    """What `cls.from_config` checks first: no code, no unknown key.

    Args:
        cls: the class the config builds.
        config: dict. The config, as `cls.get_config()` returns it (the
            `"config"` of a `.keras` file's or preset's serialized
            object).
    """
    where = f"passed to {cls.__name__}.from_config"
    check_serialized(config, where, root="config")
    check_config_keys(cls, config, where)


def _read_json(path):
    """A preset's serialized object, `{"class_name", "config", ...}`."""
    with open(path, encoding="utf-8") as file:
        try:
            serialized = json.load(file)
        except ValueError as error:
            serialized = error
    if not isinstance(serialized, dict) or not isinstance(
        serialized.get("config"), dict
    ):
        problem = (
            f"is not valid JSON ({serialized})"
            if isinstance(serialized, ValueError)
            else "holds no serialized Keras object"
        )
        raise ValueError(
            f"{path} {problem}. {_SAVER} writes it: save the model to a "
            "preset folder again."
        )
    return serialized


def _require(preset, filename, what, saver=_SAVER, hint=""):
    """Raise a `FileNotFoundError` unless `preset/filename` exists."""
    if not os.path.exists(os.path.join(preset, filename)):
        raise FileNotFoundError(
            f"The preset folder {preset} has no {filename} ({what}), which "
            f"{saver} writes. Save the model to a preset folder again, or "
            f"copy the whole folder that {saver} wrote.{hint}"
        )


def _check_tokenizer_files(preset, configs):
    """The tokenizer's config file and assets a task preset needs."""
    tokenizer = None
    for serialized in (configs.get(PREPROCESSOR_FILE), configs.get(TASK_FILE)):
        config = (serialized or {}).get("config") or {}
        # task.json nests the preprocessor; preprocessor.json is one.
        if isinstance(config.get("preprocessor"), dict):
            config = config["preprocessor"].get("config") or {}
        if isinstance(config, dict) and isinstance(
            config.get("tokenizer"), dict
        ):
            tokenizer = config["tokenizer"]
            break
    if tokenizer is None:
        return
    config_file = TOKENIZER_FILE
    if isinstance(tokenizer.get("config"), dict):
        config_file = tokenizer["config"].get("config_file", config_file)
    _require(preset, config_file, "the tokenizer's config", _TASK_SAVER)
    # keras-hub keeps a tokenizer's files in assets/<config file stem>/.
    assets = os.path.join("assets", config_file.split(".")[0])
    cls = keras.saving.get_registered_object(
        tokenizer.get("registered_name") or ""
    )
    if inspect.isclass(cls) and issubclass(
        cls, keras_hub.tokenizers.SentencePieceTokenizer
    ):
        assets = os.path.join(assets, "vocabulary.spm")
    elif os.path.isdir(os.path.join(preset, assets)):
        return
    _require(preset, assets, "the tokenizer's vocabulary", _TASK_SAVER)


def check_preset(preset, cls, load_weights=True):
    """Check a local preset folder before `cls.from_preset` loads it.

    Raises a `FileNotFoundError` naming a missing file and what writes
    it, or a `ValueError` naming a file that holds code (`Lambda`,
    bytecode) or a config key `cls` does not take. A preset that is not a
    local folder (a remote handle) is left to keras-hub.

    Args:
        preset: str. The preset folder.
        cls: the class loading it (`MirasolBackbone`, `MirasolCausalLM`).
        load_weights: bool. Whether the weights file is needed.
            Defaults to `True`.
    """
    if not isinstance(preset, str) or "://" in preset:
        return
    if not os.path.isdir(preset):
        return  # keras-hub says it is no known preset
    _require(preset, CONFIG_FILE, "the backbone's config")
    configs = {
        name: _read_json(os.path.join(preset, name))
        for name in _JSON_FILES
        if os.path.exists(os.path.join(preset, name))
    }
    for name, serialized in configs.items():
        check_serialized(serialized, f"in {os.path.join(preset, name)}")
    if load_weights and not os.path.exists(
        os.path.join(preset, SHARDED_WEIGHTS_FILE)
    ):
        _require(
            preset,
            WEIGHTS_FILE,
            "the weights",
            hint=" To build a randomly initialised model from its config "
            "instead, pass `load_weights=False`.",
        )
    if not issubclass(cls, keras_hub.models.Task) or not getattr(
        cls, "preprocessor_cls", None
    ):
        return
    task = configs.get(TASK_FILE)
    if task is not None and task["config"].get("preprocessor") is None:
        return  # saved without a preprocessor
    _require(
        preset, PREPROCESSOR_FILE, "the preprocessor's config", _TASK_SAVER
    )
    _check_tokenizer_files(preset, configs)


def saved_mixed_policy(preset):
    """The mixed dtype policy a local preset folder was saved with.

    keras-hub's loader casts a saved float dtype to the current default
    and cannot read a mixed policy's name (`mixed_bfloat16`): it raises
    `Invalid dtype`. Passing the saved name as `dtype=` loads the preset
    as it was trained.

    Args:
        preset: str. A preset folder (anything else gives None).

    Returns:
        str or None: e.g. `"mixed_bfloat16"`; None for a plain dtype or
        no saved dtype.
    """
    if not isinstance(preset, str) or not os.path.isdir(preset):
        return None
    path = os.path.join(preset, CONFIG_FILE)
    if not os.path.exists(path):
        return None
    dtype = _read_json(path).get("config", {}).get("dtype")
    if isinstance(dtype, dict):
        dtype = dtype.get("config", {}).get("name")
    if isinstance(dtype, str) and dtype.startswith("mixed_"):
        return dtype
    return None


def _snake_case(name):
    # As `keras.saving` names the items of a list of layers in a file.
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _child(parent, name):
    """The object at `name` under `parent` in Keras' weights-file layout."""
    if isinstance(parent, dict):
        parent = list(parent.values())
    if not isinstance(parent, (list, tuple)):
        try:
            return getattr(parent, name, None)
        except Exception:
            return None
    used = {}
    for item in parent:
        if isinstance(item, (list, tuple, dict)):
            base = "container"
        elif hasattr(item, "save_own_variables"):
            base = _snake_case(type(item).__name__)
        else:
            continue
        count = used.get(base)
        used[base] = 0 if count is None else count + 1
        if (base if count is None else f"{base}_{count + 1}") == name:
            return item
    return None


def _saved_variables(model, group):
    """`{index: (variable path, shape)}` of the layer at `group`, or None."""
    layer = model
    for name in filter(None, group.split("/")):
        layer = _child(layer, name)
        if layer is None:
            return None
    if not hasattr(layer, "save_own_variables"):
        return None
    store = {}
    layer.save_own_variables(store)
    return {
        key: (getattr(value, "path", f"{group}/{key}"), tuple(value.shape))
        for key, value in store.items()
    }


def weight_mismatches(model, filepath):
    """Weights of a `.weights.h5` file that do not fit `model`.

    Args:
        model: a built Keras model.
        filepath: str. A weights file written by `save_weights`.

    Returns:
        list of `(name, file_shape, model_shape)`: `name` is the model's
        path of the weight (`text_decoder/.../kernel`) when the model has
        it, else the weight's path in the file; `model_shape` is None for
        a weight of the file that the model does not have.
    """
    # h5py is a Keras dependency; Keras has no public reader of the
    # layout, which this walks as `keras.saving` writes it.
    import h5py

    groups = []

    def visit(name, item):
        if isinstance(item, h5py.Group) and name.split("/")[-1] == "vars":
            groups.append((name[: -len("vars")].rstrip("/"), item))

    mismatches = []
    with h5py.File(filepath, "r") as file:
        if "vars" in file:
            groups.append(("", file["vars"]))
        file.visititems(visit)
        for group, variables in groups:
            expected = _saved_variables(model, group) or {}
            for key, dataset in variables.items():
                shape = tuple(dataset.shape)
                if key not in expected:
                    path = f"{group}/vars/{key}".lstrip("/")
                    mismatches.append((path, shape, None))
                elif expected[key][1] != shape:
                    mismatches.append(
                        (*expected[key][:1], shape, expected[key][1])
                    )
    return mismatches


def weight_mismatch_error(model, filepath, limit=10):
    """A `ValueError` listing the weights of `filepath` that do not fit.

    Args:
        model: a built Keras model.
        filepath: str. The weights file.
        limit: int. Most weights listed. Defaults to `10`.

    Returns:
        `ValueError`, or None when every weight of the file fits (or the
        file is not a single `.weights.h5` file).
    """
    if not str(filepath).endswith(".weights.h5"):
        return None
    try:
        mismatches = weight_mismatches(model, filepath)
    except Exception:
        return None
    if not mismatches:
        return None
    lines = []
    for name, shape, model_shape in mismatches[:limit]:
        if model_shape is None:
            lines.append(
                f"  {name}: shape {shape} in the file, not in the model"
            )
        else:
            lines.append(
                f"  {name}: shape {shape} in the file, {model_shape} in the "
                "model"
            )
    if len(mismatches) > limit:
        lines.append(f"  ... and {len(mismatches) - limit} more")
    return ValueError(
        f"The weights in {filepath} do not fit this {type(model).__name__} "
        f"(built from its config): {len(mismatches)} weight(s) differ:\n"
        + "\n".join(lines)
        + "\nThe weights were saved from a model with another config: the "
        "config was edited after `save_to_preset()`, or the weights belong "
        "to another preset. Load them into a model with the config they "
        "were saved with, or save the preset again."
    )
