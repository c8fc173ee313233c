"""Shared test helpers: a test-sized config, random inputs, jitted calls."""

import importlib.util
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from keras_mirasol.models.presets import backbone_presets  # noqa: E402

# Tests marked `one_backend` run under this backend only (see pyproject).
ONE_BACKEND = "jax"


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase (keras-hub's TestCase) has a `test_session` method
    # that is a context manager, not a test.
    session = [i for i in items if i.name == "test_session"]
    if session:
        config.hook.pytest_deselected(items=session)
        items[:] = [i for i in items if i.name != "test_session"]
    if keras.config.backend() == ONE_BACKEND:
        return
    skip = pytest.mark.skip(
        reason="does not depend on the Keras backend: runs under "
        f"KERAS_BACKEND={ONE_BACKEND} only"
    )
    for item in items:
        if item.get_closest_marker("one_backend"):
            item.add_marker(skip)


# Compiled CPU kernels may differ in the last bits between two runs on
# different inputs; a change that reaches an output moves it far more.
UNCHANGED = 2e-5
CHANGED = 1e-3


def small_config(**overrides):
    """A MirasolBackbone config small enough to compile in seconds.

    8 frames of 16x16 in 4 snippets (2 frames each), 1 s of 8 kHz audio,
    width 32.
    """
    config = dict(backbone_presets["mirasol_tiny"]["config"])
    config.update(
        vocabulary_size=64,
        max_sequence_length=16,
        num_frames=8,
        image_size=16,
        num_snippets=4,
        frame_rate=8,
        tubelet_size=(2, 8, 8),
        video_hidden_dim=32,
        video_num_layers=1,
        video_num_heads=2,
        video_intermediate_dim=64,
        audio_sample_rate=8000,
        audio_num_mel_bins=16,
        audio_fft_length=256,
        audio_window_length=200,
        audio_hop_length=100,
        audio_patch_size=(8, 8),
        audio_hidden_dim=32,
        audio_num_layers=1,
        audio_num_heads=2,
        audio_intermediate_dim=64,
        combiner_tokens=2,
        combiner_num_layers=1,
        ttm_memory_size=4,
        av_hidden_dim=32,
        av_num_layers=2,
        av_num_heads=2,
        av_intermediate_dim=64,
        text_hidden_dim=32,
        text_num_layers=2,
        text_num_heads=2,
        text_intermediate_dim=64,
    )
    config.update(overrides)
    return config


def default_vocabulary_lm(**overrides):
    """A `small_config` task with the bundled vocabulary's preprocessor.

    Returns:
        `(lm, config)`.
    """
    from keras_mirasol.models import MirasolBackbone
    from keras_mirasol.models import MirasolCausalLM
    from keras_mirasol.models import MirasolCausalLMPreprocessor
    from keras_mirasol.models import MirasolTokenizer
    from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY

    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    config = small_config(
        vocabulary_size=tokenizer.vocabulary_size(), **overrides
    )
    backbone = MirasolBackbone(**config)
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    return MirasolCausalLM(backbone, preprocessor), config


def h5_arrays(path):
    """Every dataset of an HDF5 file (a `.weights.h5`), by its path."""
    import h5py

    arrays = {}
    with h5py.File(path) as f:
        f.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()])
                if isinstance(item, h5py.Dataset)
                else None
            )
        )
    return arrays


def random_inputs(config, batch_size=2, length=8, seed=0):
    """Random numpy inputs matching `config`."""
    rng = np.random.default_rng(seed)
    size = config["image_size"]
    samples = int(
        config["num_frames"]
        * config["audio_sample_rate"]
        / config["frame_rate"]
    )
    inputs = {
        "video": rng.uniform(
            size=(batch_size, config["num_frames"], size, size, 3)
        ).astype("float32"),
        "audio": rng.normal(size=(batch_size, samples)).astype("float32"),
        "token_ids": rng.integers(
            1, config["vocabulary_size"], size=(batch_size, length)
        ).astype("int32"),
        "padding_mask": np.ones((batch_size, length), "int32"),
    }
    if not config.get("use_audio", True):
        del inputs["audio"]
    return inputs


def jit(fn):
    """Compile `fn` with the active backend (eager JAX is slow).

    The first call runs eagerly so layers build their weights outside the
    trace; later calls run the compiled function.
    """
    backend = keras.backend.backend()
    compiled = []

    def call(*args):
        if compiled:
            return compiled[0](*args)
        outputs = fn(*args)
        if backend == "jax":
            import jax

            compiled.append(jax.jit(fn))
        elif backend == "tensorflow":
            import tensorflow as tf

            compiled.append(tf.function(fn, reduce_retracing=True))
        else:
            compiled.append(fn)
        return outputs

    return call


def gradient_temp_bytes(model, inputs):
    """XLA's planned temporary memory of a gradient of `model` (JAX).

    The gradient of the sum of squares of every output with respect to
    the trainable weights, compiled, not run.
    """
    import jax

    values = [v.value for v in model.trainable_variables]
    others = [v.value for v in model.non_trainable_variables]

    def loss(values):
        outputs, _ = model.stateless_call(values, others, inputs)
        return sum(keras.ops.sum(v**2) for v in outputs.values())

    compiled = jax.jit(jax.grad(loss)).lower(values).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def load_tool(name):
    """`tools/<name>.py` as a module (tools/ is not a package)."""
    path = os.path.join(os.path.dirname(__file__), "..", "tools", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_keras_hub_caches(caches):
    """Per-block heads-first `(key, value)` caches (`KeyValueCaches`) as
    keras-hub's stacked layout, `[B, layers, 2, S, heads, head_dim]`."""
    from keras_mirasol.layers.transformer_stack import swap_slots_and_heads

    return keras.ops.stack(
        [
            keras.ops.stack([swap_slots_and_heads(c) for c in pair], axis=1)
            for pair in caches
        ],
        axis=1,
    )


def from_keras_hub_caches(stacked):
    """`to_keras_hub_caches` undone."""
    from keras_mirasol.layers.transformer_stack import swap_slots_and_heads

    return tuple(
        (
            swap_slots_and_heads(stacked[:, i, 0]),
            swap_slots_and_heads(stacked[:, i, 1]),
        )
        for i in range(stacked.shape[1])
    )


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def gradient(fn, x):
    """d sum(fn(x)) / dx as numpy, with the active backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return np.asarray(jax.grad(lambda v: keras.ops.sum(fn(v)))(x))
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(fn(x))
        zero = tf.UnconnectedGradients.ZERO
        return tape.gradient(y, x, unconnected_gradients=zero).numpy()
    import torch

    x = torch.tensor(np.asarray(x), requires_grad=True)
    (grad,) = torch.autograd.grad(fn(x).sum(), x, allow_unused=True)
    # An input the output does not depend on gets no gradient: zeros, as
    # the other backends return.
    return np.zeros(x.shape, "float32") if grad is None else grad.numpy()


def assert_config_round_trip(layer):
    """`from_config(get_config())` gives a layer with the same config."""
    config = layer.get_config()
    clone = layer.__class__.from_config(config)
    assert clone.get_config() == config
    return clone


def assert_save_load(tmp_path, model, inputs):
    """A `.keras` round trip reproduces the model's outputs."""
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.saving.load_model(path)
    expected = model.predict_on_batch(inputs)
    actual = restored.predict_on_batch(inputs)
    expected = keras.tree.flatten(expected)
    actual = keras.tree.flatten(actual)
    assert len(expected) == len(actual)
    for e, a in zip(expected, actual):
        np.testing.assert_allclose(a, e, atol=1e-5, rtol=1e-5)
    return restored


@pytest.fixture
def config():
    return small_config()


def assert_decodes_losslessly(clip, video, audio):
    """`clip` (from `read_clip`) is exactly `video` through the YUV 4:2:0
    round trip (the decoder's YUV -> RGB of the planes `write_clip` wrote)
    and `audio` at 16 bits: no encoder decision can change either."""
    import av

    from keras_mirasol.data.media import rgb_to_yuv420p

    expected = np.stack(
        [
            av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(
                format="rgb24"
            )
            for planes in rgb_to_yuv420p(video)
        ]
    )
    np.testing.assert_array_equal(clip["video"], expected)
    audio = np.asarray(audio, np.float32)
    pcm = np.clip(np.round(audio * 32767), -32768, 32767) / 32768
    np.testing.assert_array_equal(clip["audio"], pcm.astype(np.float32))


@pytest.fixture(scope="session")
def avqa_records(tmp_path_factory):
    """Records of a few synthetic clips, as `convert` writes them.

    6 clips of 2 s (16 frames of 32x32 at 8 fps, 16 kHz audio) with 6
    questions each: 4 clips in `train`, 2 in `test`. Returns a dict with
    the `videos` folder, each split's annotation file and records folder.
    """
    from keras_mirasol.data.records import convert
    from keras_mirasol.data.synthetic import write_dataset

    root = tmp_path_factory.mktemp("avqa")
    write_dataset(
        str(root / "avqa"),
        clips=6,
        seed=0,
        splits=(("train", 4), ("test", 2)),
        workers=1,
        image_size=32,
    )
    paths = {"videos": str(root / "avqa" / "videos")}
    for split in ("train", "test"):
        paths[f"{split}_annotations"] = str(root / "avqa" / f"{split}.jsonl")
        paths[split] = str(root / "records" / split)
        convert(
            paths["videos"],
            paths[f"{split}_annotations"],
            paths[split],
            workers=1,
            verbose=False,
        )
    return paths
