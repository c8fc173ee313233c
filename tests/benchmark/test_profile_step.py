"""`tools/profile_step.py`: XLA kernels attributed to passes and layers."""

import keras
import numpy as np
import pytest

from tests.conftest import load_tool

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="jax.profiler and XLA's kernels"
)


def test_kernels_are_attributed_to_their_layer_and_pass():
    tool = load_tool("profile_step")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(256, activation="relu", name="first")(inputs)
    outputs = keras.layers.Dense(8, name="second")(hidden)
    model = keras.Model(inputs, outputs, name="toy")
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3), loss="mse", jit_compile=True
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 64)).astype("float32")
    y = rng.normal(size=(32, 8)).astype("float32")
    weight = np.ones((32,), "float32")
    model.fit(x, y, sample_weight=weight, batch_size=32, verbose=0)

    by_kind, by_kernel = tool.fit_kernel_times(model, x, y, weight, 32)
    origins = tool.instruction_origins(
        tool.compiled_train_step_text(model, (x, y, weight))
    )
    grouped = tool.by_layer(by_kernel, origins)

    # The products that ran are instructions of the compiled step (other
    # kernels may come from Keras' other programs during `fit`).
    products = [k for k in by_kernel if "dot" in k or "ynn" in k]
    assert products
    assert all(k.removeprefix("end: ") in origins for k in products)
    # Nothing lost or counted twice.
    np.testing.assert_allclose(
        sum(grouped.values()), sum(by_kernel.values()), rtol=1e-9
    )
    # Each layer's work, forward and backward, and the optimizer's update
    # ran as kernels of their own.
    for key in (
        ("forward", "first"),
        ("forward", "second"),
        ("backward", "first"),
        ("backward", "second"),
    ):
        assert grouped[key] > 0, (key, grouped)
    assert any(kind == "other" for kind, _ in grouped), grouped


def test_pass_and_part_of_operation_names():
    tool = load_tool("profile_step")
    step = "jit(train_step)"
    cases = {
        f"{step}/jvp(first)/dot_general": ("forward", "first"),
        f"{step}/transpose(jvp(second))/transpose": ("backward", "second"),
        f"{step}/jvp(mirasol_backbone)/video_encoder/transformer/mul": (
            "forward",
            "mirasol_backbone/video_encoder",
        ),
        f"{step}/transpose(jvp(mirasol_backbone))/combiner/split": (
            "backward",
            "mirasol_backbone/combiner",
        ),
        f"{step}/adam_w/sub": ("other", "adam_w"),
        f"{step}/add": ("other", ""),
        "": ("unknown", ""),
    }
    for op_name, expected in cases.items():
        assert tool.pass_and_part(op_name) == expected, op_name
    assert tool.pass_and_part(
        f"{step}/jvp(mirasol_backbone)/video_encoder/transformer/mul", depth=3
    ) == ("forward", "mirasol_backbone/video_encoder/transformer")
