"""What `keras-mirasol bench` computes, on small models (not timings)."""

import keras
import numpy as np
import pytest

from keras_mirasol.benchmark import measure
from keras_mirasol.models.backbone import MirasolBackbone
from tests.conftest import small_config

jax_only = pytest.mark.skipif(
    keras.backend.backend() != "jax", reason="XLA cost analysis via JAX"
)


def test_train_step_is_compiled_once_and_counts_the_model():
    config = small_config()
    result = measure.time_train_step(config, batch_size=2, steps=2)
    if keras.backend.backend() == "torch":
        # Eager: nothing is traced, so there is nothing to count.
        assert result["traces"] is None and result["retraces"] is None
    else:
        assert result["traces"] >= 1
        assert result["retraces"] == 0
    assert result["timed_steps"] == 2
    assert result["min_s"] <= result["median_s"] <= result["max_s"]
    assert result["parameters"] == (
        MirasolBackbone.from_config(config).count_params()
    )


def test_timed_steps_report_the_losses_of_the_steps_they_time():
    config = small_config()
    lm = measure.build_lm(config)
    batch = measure.random_batch(config, 2)
    result = measure.time_fit_steps(lm, batch, steps=2)
    # One loss per step of the timed call (3 runs of the batch), each
    # read when its step ended; training on one batch lowers it.
    assert len(result["losses"]) == 3 and result["timed_steps"] == 2
    assert np.isfinite(result["losses"]).all()
    assert result["losses"][-1] < result["losses"][0]


class _HugeStep(keras.layers.Layer):
    """A step that asks the device for 256 GiB: it fails when it runs."""

    def call(self, x):
        size = 2**36
        huge = keras.ops.broadcast_to(x[0, 0], (size,))
        huge = keras.ops.sort(huge * keras.ops.arange(size, dtype="float32"))
        return x + huge[0]

    def compute_output_shape(self, input_shape):
        return input_shape


@jax_only
def test_a_step_that_fails_on_the_device_is_not_timed_as_instant():
    """JAX dispatches a step and returns before it runs: the clock reads
    each step's loss, so a step that cannot allocate raises instead of
    being timed as a few milliseconds."""
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(_HugeStep()(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((2, 4), "float32")
    batch = (x, np.ones((2, 1), "float32"), np.ones((2,), "float32"))
    with pytest.raises(Exception, match="Out of memory allocating"):
        measure.time_fit_steps(model, batch, steps=2)


@jax_only
def test_xla_flops_cover_forward_backward_and_scale_with_batch():
    config = small_config()
    lm = measure.build_lm(config)
    batch2 = measure.random_batch(config, 2)
    batch4 = measure.random_batch(config, 4)
    forward = measure.xla_forward_flops(lm, batch2[0])
    step2 = measure.xla_train_step_flops(lm, batch2)
    step4 = measure.xla_train_step_flops(lm, batch4)
    # Backward costs up to twice the forward (less where no gradient
    # flows: the log-mel front end, the input of the first layers).
    assert 2.0 < step2 / forward < 3.6
    # Almost everything is per example (AdamW's update is not).
    assert 1.8 < step4 / step2 <= 2.0


def test_cached_and_uncached_generation_decode_the_same_answer():
    config = small_config(max_sequence_length=16)
    result = measure.time_generation(
        config, new_tokens=6, batch_size=2, prompt_length=3, steps=1
    )
    assert result["same_tokens"]
    variants = ("cached", "uncached", "cached_decode", "uncached_decode")
    if keras.backend.backend() == "torch":
        assert result["traces"] is None and result["retraces"] is None
        # Eager: no compile time to report.
        assert all(result[name]["compile_s"] is None for name in variants)
    else:
        assert result["retraces"] == 0
        assert result["traces"] == 1
        assert all(result[name]["compile_s"] > 0 for name in variants)
    assert result["cached"]["tokens_per_s"] > 0
    assert result["speedup"] == pytest.approx(
        result["uncached"]["median_s"] / result["cached"]["median_s"]
    )
    assert result["decode_speedup"] == pytest.approx(
        result["uncached_decode"]["median_s"]
        / result["cached_decode"]["median_s"]
    )


def test_uncached_generation_fills_only_the_answer():
    config = small_config()
    lm = measure.build_lm(config)
    x, _, _ = measure.random_batch(config, 2, text_length=10)
    x["token_ids"][:, 4:] = 0
    x["padding_mask"][:, 4:] = 0
    out = keras.ops.convert_to_numpy(
        measure.uncached_generate_function(lm, new_tokens=6)(x)
    )
    np.testing.assert_array_equal(out[:, :4], x["token_ids"][:, :4])
    assert out.shape == (2, 10)
    assert (out[:, 4:] >= 0).all()
    assert (out[:, 4:] < config["vocabulary_size"]).all()


def test_stream_section_times_early_and_late_snippets_of_one_stream():
    result = measure.time_stream(small_config(), snippets=5, around=2)
    # Snippets 0..5 in one window, compiled once.
    assert result["window"] == 6
    if keras.backend.backend() == "torch":
        assert result["traces"] is None and result["compile_s"] is None
    else:
        assert result["traces"] == 1 and result["compile_s"] > 0
    assert result["early_s"] > 0 and result["late_s"] > 0
    assert result["late_over_early"] == pytest.approx(
        result["late_s"] / result["early_s"]
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_matmul_peak_reports_the_best_call(dtype):
    peak = measure.matmul_peak(size=256, repeats=3, dtype=dtype)
    assert peak["size"] == 256 and peak["dtype"] == dtype
    assert peak["gflops"] >= peak["median_gflops"] > 0


def test_the_timed_product_is_whole_and_waited_on_by_one_entry():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 64, 64)).astype("float32")
    product, entry = measure.compiled(measure.product_and_one_entry)(a, b)
    expected = a @ b
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(product), expected, rtol=1e-4, atol=1e-4
    )
    assert keras.ops.convert_to_numpy(entry) == pytest.approx(
        expected[0, 0], rel=1e-4
    )
    if keras.backend.backend() == "jax":
        import jax

        # XLA computes the whole product, not only the entry read back.
        compiled = jax.jit(measure.product_and_one_entry).lower(a, b).compile()
        assert compiled.cost_analysis()["flops"] >= 2 * 64**3


def test_compute_dtype_is_the_policy_s_compute_dtype():
    for name in ("float32", "mixed_bfloat16", "bfloat16", "mixed_float16"):
        policy = keras.DTypePolicy(name)
        assert measure.compute_dtype(name) == policy.compute_dtype
    assert measure.compute_dtype(None) == "float32"


def test_parts_add_up_to_the_training_step():
    config = small_config()
    parts = measure.time_parts(config, batch_size=2, steps=1)
    assert set(parts) == {
        "video_encoder",
        "audio_encoder",
        "combiner",
        "av_decoder",
        "text_decoder",
    }
    for part in parts.values():
        assert 0 < part["min_s"] <= part["median_s"] <= part["max_s"]
    if keras.backend.backend() != "jax":
        assert all(part["flops"] is None for part in parts.values())
        return
    lm = measure.build_lm(config)
    step = measure.xla_train_step_flops(lm, measure.random_batch(config, 2))
    total = sum(part["flops"] for part in parts.values())
    # Every part's forward and backward, as the step computes them; the
    # step adds only the losses and AdamW's update.
    assert 0.8 * step < total < step
