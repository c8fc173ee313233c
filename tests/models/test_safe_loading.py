"""`keras_mirasol.models.safe_loading`: what loading refuses, and says.

Every bad file is a real preset, written by `save_to_preset`, then
tampered with: a `Lambda` layer or bytecode injected, a config key added
or changed, a file deleted.
"""

import json
import os
import shutil
import zipfile

import keras
import numpy as np
import pytest
from keras.src.saving.serialization_lib import SafeModeScope

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models.safe_loading import check_preset
from tests.conftest import default_vocabulary_lm

# What `keras.layers.Lambda(lambda x: x)` serializes to: the lambda's
# marshalled bytecode. Keras would run it when the layer is called.
LAMBDA_LAYER = {
    "module": "keras.layers",
    "class_name": "Lambda",
    "config": {
        "name": "injected",
        "function": {
            "class_name": "__lambda__",
            "config": {"code": "4wEAAAAAAAAA", "defaults": None},
        },
        "arguments": {},
    },
    "registered_name": None,
}
BYTECODE = {"class_name": "__lambda__", "config": {"value": ["4wEAAAAA"]}}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A small task saved as a preset folder and as a `.keras` file."""
    lm, config = default_vocabulary_lm()
    backbone = lm.backbone
    root = tmp_path_factory.mktemp("saved")
    lm.save_to_preset(str(root / "preset"))
    lm.save(str(root / "lm.keras"))
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in backbone.weights}
    return {"root": root, "config": config, "weights": weights}


@pytest.fixture
def preset(saved, tmp_path):
    """A fresh copy of the saved preset folder, to tamper with."""
    path = tmp_path / "preset"
    shutil.copytree(saved["root"] / "preset", path)
    return str(path)


def edit_json(path, change):
    with open(path) as f:
        serialized = json.load(f)
    change(serialized)
    with open(path, "w") as f:
        json.dump(serialized, f)


def edit_keras_file(source, target, change):
    """Copy a `.keras` file, changing the config it holds."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "config.json":
                serialized = json.loads(data)
                change(serialized)
                data = json.dumps(serialized).encode()
            new.writestr(item, data)


def test_a_good_preset_loads_with_the_same_weights(saved, preset):
    backbone = MirasolBackbone.from_preset(preset)
    lm = MirasolCausalLM.from_preset(preset)
    for model in (backbone, lm.backbone):
        assert len(model.weights) == len(saved["weights"])
        for w in model.weights:
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(w), saved["weights"][w.path]
            )
    assert (
        lm.preprocessor.tokenizer.vocabulary_size()
        == (saved["config"]["vocabulary_size"])
    )
    check_preset(preset, MirasolCausalLM)  # finds nothing wrong


def test_a_lambda_layer_in_the_config_is_refused(preset):
    config_file = os.path.join(preset, "config.json")
    edit_json(config_file, lambda c: c["config"].update(head=LAMBDA_LAYER))
    with pytest.raises(ValueError) as error:
        MirasolBackbone.from_preset(preset)
    message = str(error.value)
    assert config_file in message
    assert "`config.head` holds a `Lambda` layer" in message
    assert "could run code from the file" in message
    assert "safe mode" in message
    # Safe mode turned off (`keras.config.enable_unsafe_deserialization()`)
    # changes nothing: no Mirasol config holds code.
    with SafeModeScope(False), pytest.raises(ValueError, match="Lambda"):
        MirasolBackbone.from_preset(preset)


def test_bytecode_under_a_known_key_is_refused(preset):
    config_file = os.path.join(preset, "config.json")
    edit_json(config_file, lambda c: c["config"].update(dropout=BYTECODE))
    with pytest.raises(ValueError) as error:
        MirasolBackbone.from_preset(preset)
    assert config_file in str(error.value)
    assert "`config.dropout` holds Python bytecode" in str(error.value)


def test_a_lambda_layer_in_the_task_config_is_refused(preset):
    # keras-hub builds the task from task.json: Keras' safe mode refuses
    # the Lambda it is asked to build there.
    edit_json(
        os.path.join(preset, "task.json"),
        lambda c: c["config"].update(preprocessor=LAMBDA_LAYER),
    )
    with pytest.raises(ValueError, match="`Lambda` layer") as error:
        MirasolCausalLM.from_preset(preset)
    assert "code" in str(error.value)
    with pytest.raises(ValueError, match="`config.preprocessor` holds"):
        check_preset(preset, MirasolCausalLM)


def test_a_lambda_layer_in_a_keras_file_is_refused(saved, tmp_path):
    source = str(saved["root"] / "lm.keras")
    in_backbone = str(tmp_path / "backbone.keras")
    edit_keras_file(
        source,
        in_backbone,
        lambda c: c["config"]["backbone"]["config"].update(head=LAMBDA_LAYER),
    )
    # Also with Keras' safe mode off: the backbone's config holds no code.
    for safe_mode in (True, False):
        with pytest.raises(ValueError) as error:
            keras.saving.load_model(in_backbone, safe_mode=safe_mode)
        # The task's check finds it first, and names where it sits.
        message = str(error.value)
        assert "`config.backbone.config.head` holds a `Lambda`" in message
        assert "MirasolCausalLM.from_config" in message
    as_preprocessor = str(tmp_path / "preprocessor.keras")
    edit_keras_file(
        source,
        as_preprocessor,
        lambda c: c["config"].update(preprocessor=LAMBDA_LAYER),
    )
    with pytest.raises(ValueError, match="`Lambda` layer"):
        keras.saving.load_model(as_preprocessor)


def test_an_unknown_config_key_is_named(preset):
    config_file = os.path.join(preset, "config.json")
    edit_json(config_file, lambda c: c["config"].update(foo=1))
    with pytest.raises(ValueError) as error:
        MirasolBackbone.from_preset(preset)
    assert (
        f"MirasolBackbone got an unknown config key 'foo' in {config_file}"
    ) in str(error.value)
    assert "remove the key or correct its name" in str(error.value)


def test_a_misspelt_config_key_or_override_gets_a_suggestion(preset):
    with pytest.raises(ValueError, match="did you mean 'dropout'"):
        MirasolBackbone.from_preset(preset, dropuot=0.1)
    with pytest.raises(ValueError, match="'dropuot' in the arguments"):
        MirasolBackbone.from_preset("mirasol_tiny", dropuot=0.1)
    edit_json(
        os.path.join(preset, "task.json"),
        lambda c: c["config"]["backbone"]["config"].update(dropuot=0.1),
    )
    with pytest.raises(ValueError, match="unknown config key 'dropuot'"):
        MirasolCausalLM.from_preset(preset)
    with pytest.raises(ValueError, match="task.json \\(at `config.backbone`"):
        check_preset(preset, MirasolCausalLM)


def test_a_weight_of_another_shape_is_named(saved, preset):
    config = saved["config"]
    width = config["text_intermediate_dim"] // 2
    edit_json(
        os.path.join(preset, "config.json"),
        lambda c: c["config"].update(text_intermediate_dim=width),
    )
    with pytest.raises(ValueError) as error:
        MirasolBackbone.from_preset(preset)
    message = str(error.value)
    assert os.path.join(preset, "model.weights.h5") in message
    kernel = "text_decoder/transformer_layer_0/feedforward_intermediate_dense"
    hidden, saved_width = config["text_hidden_dim"], width * 2
    assert (
        f"{kernel}/kernel: shape ({hidden}, {saved_width}) in the file, "
        f"({hidden}, {width}) in the model"
    ) in message


def test_weights_the_model_does_not_have_are_named(saved, preset):
    # Keras skips them silently: a model with fewer layers than the file.
    edit_json(
        os.path.join(preset, "config.json"),
        lambda c: c["config"].update(text_num_layers=1),
    )
    with pytest.raises(ValueError) as error:
        MirasolBackbone.from_preset(preset)
    message = str(error.value)
    assert "model.weights.h5 do not fit this MirasolBackbone" in message
    assert "transformer_decoder_1" in message
    assert "in the file, not in the model" in message


@pytest.mark.parametrize(
    "filename", ["config.json", "model.weights.h5"], ids=lambda f: f
)
def test_a_missing_backbone_file_is_named(preset, filename):
    os.remove(os.path.join(preset, filename))
    with pytest.raises(FileNotFoundError) as error:
        MirasolBackbone.from_preset(preset)
    message = str(error.value)
    assert f"{preset} has no {filename}" in message
    assert "`save_to_preset()` writes" in message
    if filename == "model.weights.h5":
        assert "load_weights=False" in message
        MirasolBackbone.from_preset(preset, load_weights=False)


TASK_FILES = [
    "preprocessor.json",
    "tokenizer.json",
    os.path.join("assets", "tokenizer", "vocabulary.spm"),
]


@pytest.mark.parametrize("filename", TASK_FILES, ids=lambda f: f)
def test_a_missing_task_file_is_named(preset, filename):
    os.remove(os.path.join(preset, filename))
    with pytest.raises(FileNotFoundError) as error:
        check_preset(preset, MirasolCausalLM)
    message = str(error.value)
    assert f"{preset} has no {filename}" in message
    assert "`MirasolCausalLM.save_to_preset()` writes" in message
    check_preset(preset, MirasolBackbone)  # a backbone needs none of them


@pytest.mark.parametrize(
    "filename",
    ["config.json", "model.weights.h5", *TASK_FILES],
    ids=lambda f: f,
)
def test_task_from_preset_names_a_missing_file(preset, filename):
    os.remove(os.path.join(preset, filename))
    with pytest.raises(FileNotFoundError, match=f"has no {filename}"):
        MirasolCausalLM.from_preset(preset)


def test_a_config_file_that_is_no_config_is_named(preset):
    config_file = os.path.join(preset, "config.json")
    with open(config_file, "a") as f:
        f.write("}")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        MirasolBackbone.from_preset(preset)
