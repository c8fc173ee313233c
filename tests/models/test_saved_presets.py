"""Presets saved by an earlier release load and give the same outputs.

The fixtures were written once by `tools/make_preset_fixture.py` (on JAX)
and are never rewritten: a change that renames a layer, reorders weights
or changes a config key breaks these tests.
"""

import os

import keras
import numpy as np
import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from tests.hub_test_case import TestCase

FIXTURES = os.path.join(os.path.dirname(__file__), "..", "fixtures")
NAMES = ["preset_2026_11_transformer", "preset_2026_11_ttm"]


def _saved(name):
    outputs = np.load(os.path.join(FIXTURES, f"{name}_outputs.npz"))
    x = {k[2:]: outputs[k] for k in outputs.files if k.startswith("x_")}
    prompt = {
        k[7:]: outputs[k] for k in outputs.files if k.startswith("prompt_")
    }
    return x, prompt, outputs["logits"], outputs["generated"]


@pytest.mark.parametrize("name", NAMES)
def test_saved_task_preset_gives_the_saved_outputs(name):
    path = os.path.join(FIXTURES, name)
    lm = MirasolCausalLM.from_preset(path)
    x, prompt, logits, generated = _saved(name)
    got = keras.ops.convert_to_numpy(lm(x, training=False))
    np.testing.assert_allclose(got, logits, atol=1e-4, rtol=1e-4)
    tokens = lm.generate_step(prompt, stop_token_ids=None)["token_ids"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tokens), generated)
    # The preprocessor and tokenizer came back too.
    assert lm.preprocessor.tokenizer.vocabulary_size() == logits.shape[-1]


@pytest.mark.parametrize("name", NAMES)
def test_saved_backbone_loads_alone_with_its_config(name):
    backbone = MirasolBackbone.from_preset(os.path.join(FIXTURES, name))
    combiner = "ttm" if name.endswith("ttm") else "transformer"
    assert backbone.combiner_type == combiner
    assert backbone.count_params() > 0


class SavedPresetTest(TestCase):
    """keras-hub's preset checks on the saved presets: an unknown preset
    is an error; the preset loads and runs, with and without its
    weights."""

    def test_task_presets(self):
        for name in NAMES:
            x, _, logits, _ = _saved(name)
            self.run_preset_test(
                cls=MirasolCausalLM,
                preset=os.path.join(FIXTURES, name),
                input_data=x,
                expected_output_shape=logits.shape,
            )
