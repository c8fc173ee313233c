"""Layout maps and distributed training steps on 8 host CPU devices.

JAX fixes its device count when it starts, so the multi-device tests run
in a child pytest process started with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`
(`test_on_eight_host_devices`); the rest run here.
"""

import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_mirasol.distribution import check_layout_map
from keras_mirasol.distribution import layout_map
from keras_mirasol.distribution import make_distribution
from keras_mirasol.distribution import parse_mesh
from keras_mirasol.distribution import unmatched_variables
from keras_mirasol.distribution import variable_shapes
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.causal_lm import MirasolCausalLM
from keras_mirasol.models.presets import backbone_presets
from keras_mirasol.training import data_parallel_size
from tests.conftest import random_inputs
from tests.conftest import small_config

CHILD = os.environ.get("KERAS_MIRASOL_DEVICE_TEST") == "8"
jax_only = pytest.mark.skipif(
    CHILD or keras.backend.backend() != "jax",
    reason="runs on the JAX backend, in the parent process",
)
# Tests marked in_child; the parent checks that all of them passed.
CHILD_TESTS = 13
in_child = pytest.mark.skipif(
    not CHILD, reason="needs 8 devices: runs in test_on_eight_host_devices"
)

# Weights that may stay replicated: norms and biases, 1-D and small.
REPLICATED_OK = ("gamma", "beta", "bias")
# keras-hub's norms are `scale` vectors; the cross-attention gates are
# scalars.
HUB_REPLICATED_OK = REPLICATED_OK + ("scale", "attention_gate", "mlp_gate")


def hub_model(text="gemma3"):
    """A tiny Mirasol model around VideoPrism, Whisper and a text model."""
    from tests.models import test_pretrained_parts as parts

    language_model = parts.tiny_gemma3 if text == "gemma3" else parts.tiny_qwen3
    return parts.from_components(
        audio_encoder=parts.tiny_whisper(), text_decoder=language_model()
    )


def mesh_config(**overrides):
    """`small_config` with 4 heads everywhere, so a 4-way axis divides."""
    heads = {
        f"{part}_num_heads": 4 for part in ("video", "audio", "av", "text")
    }
    return small_config(**{**heads, **overrides})


def one_device_mesh():
    return keras.distribution.DeviceMesh(
        (1, 1), ("batch", "model"), keras.distribution.list_devices()[:1]
    )


# --- Here: no device count needed -----------------------------------------


@jax_only
def test_on_eight_host_devices():
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=8",
        KERAS_BACKEND="jax",
        KERAS_MIRASOL_DEVICE_TEST="8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        + ["-m", "not large", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    output = result.stdout[-8000:] + result.stderr[-4000:]
    assert result.returncode == 0, output
    # The child ran every multi-device test rather than skipping them.
    assert f"{CHILD_TESTS} passed" in result.stdout, output


@pytest.mark.parametrize(
    "name,overrides",
    [(name, {}) for name in backbone_presets]
    + [
        ("mirasol_tiny", {"combiner_type": "ttm"}),
        ("mirasol_tiny", {"tie_word_embeddings": False}),
        ("mirasol_3b", {"combiner_type": "ttm", "cross_attention_every": 2}),
    ],
)
@jax_only
def test_layout_map_covers_every_kernel_and_embedding(name, overrides):
    config = {**backbone_presets[name]["config"], **overrides}
    shapes = variable_shapes(config)
    layouts = layout_map(one_device_mesh())
    unmatched = unmatched_variables(layouts, shapes)
    sharded = [path for path in shapes if path not in unmatched]
    assert sharded
    left = [
        (path, shapes[path])
        for path in unmatched
        if not path.endswith(REPLICATED_OK) or len(shapes[path]) > 1
    ]
    assert not left, f"replicated by accident: {left}"
    # Replicated weights are a tiny part of the model.
    total = sum(np.prod(s) for s in shapes.values())
    replicated = sum(np.prod(shapes[p]) for p in unmatched)
    assert replicated / total < 0.01, (name, replicated, total)
    check_layout_map(layouts, config)


@pytest.mark.parametrize("text", ["gemma3", "qwen3"])
@jax_only
def test_layout_map_covers_the_keras_hub_parts(text):
    """VideoPrism, Whisper and Gemma3 / Qwen3 inside `from_components`:
    every kernel and embedding is sharded, as the native parts are."""
    shapes = {w.path: tuple(w.shape) for w in hub_model(text).weights}
    unmatched = unmatched_variables(layout_map(one_device_mesh()), shapes)
    left = [
        (path, shapes[path])
        for path in unmatched
        if not path.endswith(HUB_REPLICATED_OK) or len(shapes[path]) > 1
    ]
    assert not left, f"replicated by accident: {left}"
    # Each keras-hub part has sharded weights of its own.
    sharded = [path for path in shapes if path not in unmatched]
    for prefix in ("spatial_encoder/", "temporal_encoder/", "encoder_"):
        assert any(path.startswith(prefix) for path in sharded), prefix
    decoder = "decoder_block_" if text == "gemma3" else "transformer_layer_"
    assert any(path.startswith(decoder) for path in sharded)


@jax_only
def test_every_layout_key_matches_some_model():
    shapes = {}
    for overrides in (
        {},
        {"combiner_type": "ttm", "tie_word_embeddings": False},
    ):
        shapes.update(variable_shapes(small_config(**overrides)))
    for text in ("gemma3", "qwen3"):
        shapes.update({w.path: w.shape for w in hub_model(text).weights})
    layouts = layout_map(one_device_mesh())
    unused = [
        key
        for key in layouts
        if not any(re.fullmatch(key, path) for path in shapes)
    ]
    assert not unused


@jax_only
def test_variable_shapes_allocate_nothing_and_match_the_model():
    config = small_config(combiner_type="ttm")
    shapes = variable_shapes(config)
    backbone = MirasolBackbone(**config)
    assert shapes == {v.path: tuple(v.shape) for v in backbone.weights}
    # The shape-only variables are not initialised later on either.
    from keras.src.backend.common import global_state

    pending = global_state.get_global_attribute("uninitialized_variables")
    assert not pending


@jax_only
def test_shape_only_build_leaves_initial_weights_and_names_unchanged():
    config = small_config(dropout=0.1)

    def build(check_first):
        keras.utils.clear_session()  # layer name counters start afresh
        keras.utils.set_random_seed(7)
        if check_first:
            variable_shapes(config)
        backbone = MirasolBackbone(**config)
        names = [w.path for w in backbone.weights]  # layer names in it
        return names, [np.asarray(w) for w in backbone.get_weights()]

    names, weights = build(check_first=False)
    names_after_check, weights_after_check = build(check_first=True)
    assert names_after_check == names
    for a, b in zip(weights_after_check, weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(CHILD, reason="runs in the parent process")
def test_parse_mesh():
    assert parse_mesh("2x4") == (2, 4)
    assert parse_mesh("8") == (8, 1)
    assert parse_mesh((1, 8)) == (1, 8)
    for bad in ("2by4", "0x8", "2x2x2", ""):
        with pytest.raises(ValueError, match="BATCHxMODEL"):
            parse_mesh(bad)


@pytest.mark.skipif(
    keras.backend.backend() == "jax", reason="the error is for other backends"
)
def test_other_backends_are_told_to_use_jax():
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax"):
        make_distribution(data_parallel=True)


@jax_only
def test_layout_map_rejects_unknown_axis_names():
    with pytest.raises(ValueError, match="'tensor' is not an axis"):
        layout_map(one_device_mesh(), model_parallel_dim_name="tensor")


# --- In the child: 8 host devices ------------------------------------------


def _mesh_2x4():
    return make_distribution(mesh="2x4")


def _layouts_2x4():
    """The `LayoutMap` that `make_distribution(mesh="2x4")` uses."""
    mesh = keras.distribution.DeviceMesh(
        shape=(2, 4),
        axis_names=("batch", "model"),
        devices=keras.distribution.list_devices()[:8],
    )
    return MirasolBackbone.get_layout_map(mesh)


def _build_lm(config):
    lm = MirasolCausalLM(MirasolBackbone(**config))
    # SGD: its update is linear in the gradient, so a sharded step equals
    # one device's up to the rounding of the gradient sums. Adam's first
    # step divides each gradient by its own size, which turns the rounding
    # of a near-zero gradient into a different update (seen on one weight
    # element of 12288 on another machine).
    lm.compile(
        optimizer=keras.optimizers.SGD(0.1, global_clipnorm=1.0),
        sampler="greedy",
    )
    return lm


def _train_step(lm, weights, batch):
    lm.set_weights(weights)
    x, y, sample_weight = batch
    logs = lm.train_on_batch(
        x, y, sample_weight=sample_weight, return_dict=True
    )
    return logs["loss"], [np.asarray(w) for w in lm.get_weights()]


def _assert_same_step(weights, expected, distributed, moved_share=0.5):
    """A distributed training step's loss and weights equal one device's.

    `expected` and `distributed` are `(loss, updated weights)`; more than
    `moved_share` of the weights must have moved, so equal updates are a
    real check.
    """
    (loss, updated), (distributed_loss, distributed_updated) = (
        expected,
        distributed,
    )
    np.testing.assert_allclose(distributed_loss, loss, rtol=1e-4)
    moved = 0
    for before, after, want in zip(weights, distributed_updated, updated):
        np.testing.assert_allclose(after, want, rtol=1e-4, atol=1e-6)
        moved += not np.array_equal(before, want)
    assert moved > len(weights) * moved_share


def _batch(config, batch_size=8, length=8):
    x = random_inputs(config, batch_size=batch_size, length=length, seed=3)
    rng = np.random.default_rng(4)
    y = rng.integers(1, config["vocabulary_size"], x["token_ids"].shape)
    sample_weight = np.ones(y.shape, "float32")
    sample_weight[:, :3] = 0
    return x, y.astype("int32"), sample_weight


@in_child
def test_eight_devices_are_visible():
    assert len(keras.distribution.list_devices()) == 8


@in_child
def test_variables_carry_the_layout_maps_sharding():
    layouts = _layouts_2x4()
    with _mesh_2x4().scope():
        backbone = MirasolBackbone(**mesh_config(combiner_type="ttm"))
    sharded = 0
    for variable in backbone.weights:
        layout = layouts[variable.path]
        expected = (
            tuple(layout.axes)
            if layout is not None
            else (None,) * len(variable.shape)
        )
        spec = tuple(variable.value.sharding.spec)
        spec += (None,) * (len(variable.shape) - len(spec))
        assert spec == expected, variable.path
        assert len(variable.value.sharding.device_set) == 8
        sharded += layout is not None
    assert sharded > len(backbone.weights) // 2


@in_child
@pytest.mark.parametrize("kind", ["mesh_2x4", "data_parallel"])
def test_train_step_matches_one_device(kind):
    config = mesh_config()
    batch = _batch(config)
    reference = _build_lm(config)
    weights = [np.asarray(w) for w in reference.get_weights()]
    loss, updated = _train_step(reference, weights, batch)

    distribution = (
        _mesh_2x4()
        if kind == "mesh_2x4"
        else make_distribution(data_parallel=True)
    )
    with distribution.scope():
        lm = _build_lm(config)
        distributed_loss, distributed_updated = _train_step(lm, weights, batch)
    _assert_same_step(
        weights, (loss, updated), (distributed_loss, distributed_updated)
    )


@in_child
def test_generate_under_model_parallel():
    config = mesh_config()
    x, _, _ = _batch(config, batch_size=2, length=12)
    x["padding_mask"][:, 4:] = 0
    x["token_ids"] = x["token_ids"] * x["padding_mask"]
    reference = _build_lm(config)
    weights = reference.get_weights()
    options = dict(stop_token_ids=None, strip_prompt=False)
    expected = reference.generate(x, **options)["token_ids"]
    with _mesh_2x4().scope():
        lm = _build_lm(config)
        lm.set_weights(weights)
        got = lm.generate(x, **options)["token_ids"]
    np.testing.assert_array_equal(got, expected)
    # The prompts are kept and tokens were generated after them.
    np.testing.assert_array_equal(got[:, :4], x["token_ids"][:, :4])
    assert np.asarray(got)[:, 4:].any()


@in_child
def test_keras_hub_parts_train_sharded_as_on_one_device():
    """A `from_components` model (VideoPrism, Whisper, Gemma3) on a 4x2
    mesh: its keras-hub weights carry the layout map's sharding, and a
    training step equals one device's."""
    from tests.models.test_pretrained_parts import inputs_for

    reference = hub_model()
    weights = [np.asarray(w) for w in reference.get_weights()]
    x = inputs_for(reference, batch_size=4, length=8)
    rng = np.random.default_rng(4)
    y = rng.integers(1, reference.vocabulary_size, x["token_ids"].shape)
    batch = (x, y.astype("int32"), np.ones(y.shape, "float32"))

    def step(backbone):
        lm = MirasolCausalLM(backbone)
        lm.compile(
            optimizer=keras.optimizers.SGD(0.1, global_clipnorm=1.0),
            sampler="greedy",
        )
        return _train_step(lm, weights, batch)

    loss, updated = step(reference)
    distribution = make_distribution(mesh="4x2")
    with distribution.scope():
        # The keras-hub parts are built inside the scope too: their
        # weights are created when they are.
        backbone = hub_model()
        sharded = {w.path: w for w in backbone.weights}
        for path, spec in (
            ("decoder_block_0/attention/query/kernel", ("model", "batch")),
            (
                "spatial_encoder/transformer_block_0/mha/query/kernel",
                ("batch", "model"),
            ),
            (
                "transformer_encoder_layer_0/self_attention_layer/query/kernel",
                ("batch", "model"),
            ),
            ("token_embedding/embeddings", ("model", "batch")),
        ):
            value = sharded[path].value
            assert tuple(value.sharding.spec)[:2] == spec, path
            assert len(value.sharding.device_set) == 8, path
        distributed_loss, distributed_updated = step(backbone)
    # Whisper's decoder is not used, so fewer weights move.
    _assert_same_step(
        weights,
        (loss, updated),
        (distributed_loss, distributed_updated),
        moved_share=1 / 3,
    )


@in_child
def test_non_finite_weight_check_on_sharded_weights():
    """The check training runs at each epoch's end, on a 2x4 mesh.

    Issued all at once, its per-weight reductions (collectives on sharded
    weights) made XLA's CPU devices abort on a rendezvous timeout.
    """
    from keras_mirasol.training import _first_non_finite

    with _mesh_2x4().scope():
        backbone = MirasolBackbone(**mesh_config())
    assert _first_non_finite(backbone.weights) is None
    kernel = backbone.get_layer("text_decoder").weights[-1]
    value = np.asarray(kernel.value).copy()
    value.flat[-1] = np.inf
    kernel.assign(value)
    assert _first_non_finite(backbone.weights) == kernel.path


@in_child
def test_every_preset_fits_a_2x4_mesh():
    layouts = _layouts_2x4()
    for name, preset in backbone_presets.items():
        check_layout_map(layouts, preset["config"])


@in_child
def test_indivisible_dimension_names_the_layer_and_axis():
    with _mesh_2x4().scope():
        with pytest.raises(ValueError) as error:
            MirasolBackbone(**mesh_config(text_num_heads=2))
    message = str(error.value)
    assert "text_decoder/transformer_layer_0/self_attention/query" in message
    assert "mesh axis 'model' of size 4" in message
    # Only the text decoder is named: the other components fit.
    assert "video_encoder" not in message


@in_child
def test_key_matching_nothing_is_an_error():
    layouts = _layouts_2x4()
    layouts["video_encoder/typo_layer/kernel"] = (None, "model")
    distribution = keras.distribution.ModelParallel(
        layout_map=layouts, batch_dim_name="batch"
    )
    with distribution.scope():
        with pytest.raises(ValueError, match="typo_layer.*match no variable"):
            MirasolBackbone(**mesh_config())


@in_child
def test_mesh_larger_than_the_devices():
    with pytest.raises(ValueError, match="needs 16 devices.*sees 8"):
        make_distribution(mesh="4x4")


@in_child
def test_batch_size_must_split_over_replicas():
    from keras_mirasol.training import train

    distribution = make_distribution(data_parallel=True)
    assert data_parallel_size(distribution) == 8
    with pytest.raises(ValueError, match="batch_size=6 .* 8 data-parallel"):
        train("unused", "unused", batch_size=6, distribution=distribution)
    # 24 questions but only 4 clips with 6 questions per clip.
    with pytest.raises(ValueError, match="4 clips.* 8 data-parallel"):
        train(
            "unused",
            "unused",
            batch_size=24,
            questions_per_clip=6,
            distribution=distribution,
        )


@in_child
def test_cli_train_on_records_under_a_mesh_matches_one_device(tmp_path):
    """`keras-mirasol train --mesh 2x4`: real mp4 -> records -> `fit`."""
    import json

    from keras_mirasol.cli import main
    from keras_mirasol.data.records import convert
    from keras_mirasol.data.synthetic import write_dataset

    media = tmp_path / "media"
    splits = (("train", 0.75), ("val", 0.25))
    write_dataset(str(media), clips=8, splits=splits, image_size=32, workers=1)
    for split, _ in splits:
        convert(
            str(media / "videos"),
            [str(media / f"{split}.jsonl")],
            str(tmp_path / split),
            workers=1,
            verbose=False,
        )
    common = ["train", "--train", str(tmp_path / "train")]
    common += ["--val", str(tmp_path / "val"), "--steps", "2"]
    # 2 val clips of 6 questions: 3 whole batches of 4, none dropped.
    common += ["--epochs", "2", "--batch-size", "4"]
    assert main(common + ["--out", str(tmp_path / "one")]) == 0
    mesh_run = ["--out", str(tmp_path / "mesh"), "--mesh", "2x4"]
    assert main(common + mesh_run) == 0

    def history(run):
        return json.loads((tmp_path / run / "history.json").read_text())

    one, mesh = history("one"), history("mesh")
    assert set(mesh) == set(one) and "val_loss" in mesh
    for key in one:
        np.testing.assert_allclose(mesh[key], one[key], rtol=1e-4, err_msg=key)
    # Both saved runs load on one device with the same trained weights.
    expected = MirasolCausalLM.from_preset(str(tmp_path / "one"))
    got = MirasolCausalLM.from_preset(str(tmp_path / "mesh"))
    # Two AdamW steps of 1e-3 move each weight by up to 2e-3; the sharded
    # reductions differ from one device's in float rounding only.
    for a, b in zip(got.get_weights(), expected.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    checkpoints = sorted(os.listdir(tmp_path / "mesh" / "checkpoints"))
    assert checkpoints == ["epoch_001.weights.h5", "epoch_002.weights.h5"]
    assert not (tmp_path / "mesh" / "backup").exists()


@pytest.mark.skipif(CHILD, reason="runs in the parent process")
def test_cli_train_refuses_a_mesh_larger_than_the_devices(tmp_path):
    from keras_mirasol.cli import main

    expected = (
        "needs 16 devices"
        if keras.backend.backend() == "jax"
        else "KERAS_BACKEND=jax"
    )
    with pytest.raises(ValueError, match=expected):
        main(
            ["train", "--train", str(tmp_path), "--out", str(tmp_path / "run")]
            + ["--mesh", "4x4"]
        )
    assert not (tmp_path / "run").exists()
