"""Write the saved-preset fixtures that tests load to catch format breaks.

    KERAS_BACKEND=jax python tools/make_preset_fixture.py

Run once, when a release's format is frozen: the fixtures must stay as
that release wrote them (tests/models/test_saved_presets.py loads them and
checks the outputs saved beside them). Writing them again with newer code
would hide exactly the change they are there to catch.
"""

import os
import sys

import keras
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from keras_mirasol.models import MirasolBackbone  # noqa: E402
from keras_mirasol.models import MirasolCausalLM  # noqa: E402
from keras_mirasol.models import MirasolCausalLMPreprocessor  # noqa: E402
from keras_mirasol.models import MirasolTokenizer  # noqa: E402
from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY  # noqa: E402
from tests.conftest import random_inputs  # noqa: E402
from tests.conftest import small_config  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")


def write(name, combiner_type):
    keras.utils.set_random_seed(0)
    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    config = small_config(
        vocabulary_size=tokenizer.vocabulary_size(),
        combiner_type=combiner_type,
    )
    backbone = MirasolBackbone(**config)
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    lm = MirasolCausalLM(backbone, preprocessor)
    x = random_inputs(config, batch_size=2, length=8, seed=0)
    logits = keras.ops.convert_to_numpy(lm(x, training=False))
    prompt = dict(x)
    prompt["token_ids"] = x["token_ids"].copy()
    prompt["token_ids"][:, 0] = tokenizer.start_token_id
    prompt["token_ids"][:, 3:] = 0
    prompt["padding_mask"] = (np.arange(8) < 3).astype("int32")[None] * [
        [1],
        [1],
    ]
    generated = keras.ops.convert_to_numpy(
        lm.generate_step(prompt, stop_token_ids=None)["token_ids"]
    )
    path = os.path.join(OUT, name)
    lm.save_to_preset(path)
    np.savez(
        os.path.join(OUT, f"{name}_outputs.npz"),
        logits=logits,
        generated=generated,
        **{f"x_{k}": v for k, v in x.items()},
        **{f"prompt_{k}": v for k, v in prompt.items()},
    )
    print("wrote", path)


if __name__ == "__main__":
    write("preset_2026_11_transformer", "transformer")
    write("preset_2026_11_ttm", "ttm")
