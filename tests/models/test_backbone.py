import warnings

import keras
import numpy as np
import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import backbone
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import assert_save_load
from tests.conftest import gradient_temp_bytes
from tests.conftest import random_inputs
from tests.conftest import small_config
from tests.hub_test_case import TestCase

# config: 4 snippets of 2 frames; combiner_tokens=2 -> 8 latent tokens.
M = 2


@pytest.fixture(scope="module", params=["transformer", "ttm"])
def model_and_config(request):
    config = small_config(combiner_type=request.param)
    return MirasolBackbone(**config), config


def latents_per_snippet_change(model, inputs, changed):
    a = model.predict_on_batch(inputs)["av_latents"]
    b = model.predict_on_batch(changed)["av_latents"]
    diff = np.abs(a - b).max(axis=(0, 2))
    return diff.reshape(-1, M).max(axis=1)


def test_outputs_and_weight_names(model_and_config):
    model, config = model_and_config
    out = model.predict_on_batch(random_inputs(config, batch_size=3))
    assert out["sequence_output"].shape == (3, 8, 32)
    assert out["av_latents"].shape == (3, 4 * M, 32)
    assert out["latent_loss"].shape == (3,)
    paths = {w.path for w in model.weights}
    for path in [
        "video_encoder/transformer/transformer_layer_0/self_attention_layer/"
        "query/kernel",
        "audio_encoder/patch_embedding/kernel",
        "combiner/video_projection/kernel",
        "av_decoder/transformer_layer_1/self_attention/value/kernel",
        "text_decoder/transformer_layer_0/cross_attention/key/kernel",
        "text_decoder/token_embedding/embeddings",
    ]:
        assert path in paths, path


@pytest.mark.parametrize("modality", ["video", "audio"])
def test_time_aligned_latents_are_causal(model_and_config, modality):
    model, config = model_and_config
    inputs = random_inputs(config, batch_size=1)
    frames = inputs["video"].shape[1] // 4
    samples = inputs["audio"].shape[1] // 4
    span = frames if modality == "video" else samples
    rng = np.random.default_rng(1)
    for snippet in (1, 3):
        changed = {k: v.copy() for k, v in inputs.items()}
        part = changed[modality][:, snippet * span : (snippet + 1) * span]
        changed[modality][:, snippet * span : (snippet + 1) * span] = (
            rng.uniform(size=part.shape)
            if modality == "video"
            else rng.normal(size=part.shape)
        )
        per_snippet = latents_per_snippet_change(model, inputs, changed)
        np.testing.assert_allclose(per_snippet[:snippet], 0.0, atol=UNCHANGED)
        assert np.all(per_snippet[snippet:] > CHANGED), per_snippet


def test_unchunked_baseline_attends_over_the_whole_clip():
    config = small_config()
    baseline_config = backbone.unchunked_config(config)
    model = MirasolBackbone(**baseline_config)
    inputs = random_inputs(config, batch_size=1)
    out = model.predict_on_batch(inputs)
    # Every token of the clip: 8 frames / 2 * (16 / 8) ** 2 = 16 video
    # tokens and the whole clip's spectrogram patches, in one snippet.
    video_tokens = 16
    audio_tokens = model.get_layer("audio_encoder").output.shape[2]
    assert model.tokens_per_snippet == video_tokens + audio_tokens
    assert out["av_latents"].shape == (1, video_tokens + audio_tokens, 32)
    # No snippets: the last frames reach the first latent, which Mirasol's
    # block-causal model never lets them do.
    changed = dict(inputs, video=inputs["video"].copy())
    changed["video"][:, -2:] = np.random.default_rng(1).uniform(
        size=changed["video"][:, -2:].shape
    )
    first = model.predict_on_batch(changed)["av_latents"][:, 0]
    assert np.abs(first - out["av_latents"][:, 0]).max() > CHANGED
    mirasol = MirasolBackbone(**config)
    a = mirasol.predict_on_batch(inputs)["av_latents"][:, 0]
    b = mirasol.predict_on_batch(changed)["av_latents"][:, 0]
    np.testing.assert_allclose(a, b, atol=UNCHANGED)


def test_parameters_do_not_grow_with_the_clip_but_the_baselines_do():
    short = small_config()
    # Twice the clip in twice the snippets of the same length.
    long = small_config(num_frames=16, num_snippets=8)
    assert (
        MirasolBackbone(**short).count_params()
        == MirasolBackbone(**long).count_params()
    )
    # The baseline's encoders learn a position per token of the clip.
    assert (
        MirasolBackbone(**backbone.unchunked_config(long)).count_params()
        > MirasolBackbone(**backbone.unchunked_config(short)).count_params()
    )


def test_with_num_snippets_gives_a_longer_clip_the_same_first_latents(
    model_and_config,
):
    # The model trained on 4 snippets takes 8 with its weights: the
    # block-causal latents of the long clip's first 4 snippets are the
    # short model's on those 4 snippets (TTM memory carried the same way).
    model, config = model_and_config
    longer = model.with_num_snippets(8)
    assert (longer.num_frames, longer.num_snippets) == (16, 8)
    assert longer.num_audio_samples == 2 * model.num_audio_samples
    assert longer.count_params() == model.count_params()
    for a, b in zip(model.weights, longer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), a.path)
    long_config = dict(config, num_frames=16, num_snippets=8)
    long_inputs = random_inputs(long_config, batch_size=2, seed=3)
    prefix = dict(
        long_inputs,
        video=long_inputs["video"][:, :8],
        audio=long_inputs["audio"][:, : model.num_audio_samples],
    )
    long_latents = longer.predict_on_batch(long_inputs)["av_latents"]
    short_latents = model.predict_on_batch(prefix)["av_latents"]
    assert long_latents.shape == (2, 8 * M, 32)
    np.testing.assert_allclose(
        long_latents[:, : 4 * M], short_latents, atol=UNCHANGED
    )
    # What the second half holds reaches the latents only after it.
    assert np.abs(long_latents[:, 4 * M :]).max() > CHANGED
    # Back to 4 snippets: the original model's outputs on every input.
    again = longer.with_num_snippets(4)
    expected = model.predict_on_batch(prefix)
    got = again.predict_on_batch(prefix)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=UNCHANGED)


def test_with_num_snippets_keeps_frozen_parts_lora_adapters_and_dtype():
    config = small_config()
    keras.utils.set_random_seed(0)
    model = MirasolBackbone(**config)
    model.video_encoder.trainable = False
    model.enable_lora(2, target_layer_names=["query", "value"])
    model.video_encoder.trainable = False
    # Nonzero adapters, so copying them is seen in the outputs.
    for w in model.weights:
        if w.path.endswith("lora_kernel_b"):
            w.assign(np.full(w.shape, 0.01, "float32"))
    longer = model.with_num_snippets(6)
    assert [w.path for w in longer.trainable_weights] == [
        w.path for w in model.trainable_weights
    ]
    assert longer.trainable_weights
    assert all("lora_kernel" in w.path for w in longer.trainable_weights)
    assert not longer.video_encoder.trainable
    # The adapters' file of one loads into the other.
    assert longer._lora_rank == 2
    again = longer.with_num_snippets(4)
    inputs = random_inputs(config, batch_size=1)
    expected = model.predict_on_batch(inputs)["sequence_output"]
    got = again.predict_on_batch(inputs)["sequence_output"]
    np.testing.assert_allclose(got, expected, atol=UNCHANGED)
    mixed = MirasolBackbone(**dict(config, dtype="mixed_bfloat16"))
    assert mixed.with_num_snippets(8).dtype_policy.name == "mixed_bfloat16"


def test_with_num_snippets_refuses_the_baseline_and_bad_counts():
    baseline = MirasolBackbone(**backbone.unchunked_config(small_config()))
    with pytest.raises(ValueError, match="unchunked baseline.*length"):
        baseline.with_num_snippets(8)
    model = MirasolBackbone(**small_config())
    for bad in (0, 2.5):
        with pytest.raises(ValueError, match="positive integer"):
            model.with_num_snippets(bad)


def test_audio_reaches_only_its_snippet_in_the_combiner():
    config = small_config()
    model = MirasolBackbone(**config)
    combined = keras.Model(model.input, model.get_layer("combiner").output)
    inputs = random_inputs(config, batch_size=1)
    # 1 s at 8 kHz in 4 snippets: seconds [0.5, 0.75) = samples [4000, 6000).
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["audio"][:, 4000:6000] = np.random.normal(size=(1, 2000))
    diff = np.abs(
        combined.predict_on_batch(inputs) - combined.predict_on_batch(changed)
    ).max(axis=(0, 2, 3))
    assert diff[2] > CHANGED
    np.testing.assert_allclose(diff[[0, 1, 3]], 0.0, atol=UNCHANGED)


def test_text_is_causal_and_reads_the_media(model_and_config):
    model, config = model_and_config
    inputs = random_inputs(config, batch_size=1)
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["token_ids"][:, 5] = changed["token_ids"][:, 5] % 60 + 1
    a = model.predict_on_batch(inputs)["sequence_output"]
    b = model.predict_on_batch(changed)["sequence_output"]
    per_token = np.abs(a - b).max(axis=(0, 2))
    np.testing.assert_allclose(per_token[:5], 0.0, atol=UNCHANGED)
    assert np.all(per_token[5:] > CHANGED)
    other_video = dict(inputs, video=inputs["video"][:, ::-1].copy())
    c = model.predict_on_batch(other_video)["sequence_output"]
    assert np.abs(a - c).max() > CHANGED


def test_inference_is_deterministic_with_dropout():
    config = small_config(dropout=0.3)
    model = MirasolBackbone(**config)
    inputs = random_inputs(config)
    first = model.predict_on_batch(inputs)
    second = model.predict_on_batch(inputs)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    trained = model(inputs, training=True)["av_latents"]
    assert (
        np.abs(keras.ops.convert_to_numpy(trained) - first["av_latents"]).max()
        > 1e-4
    )


def test_config_round_trip_and_save_load(tmp_path, model_and_config):
    model, config = model_and_config
    clone = MirasolBackbone.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    restored = assert_save_load(tmp_path, model, random_inputs(config))
    assert isinstance(restored, MirasolBackbone)


def test_video_only_model():
    config = small_config(use_audio=False, combiner_type="ttm")
    model = MirasolBackbone(**config)
    assert "audio" not in model.input
    assert model.audio_encoder is None
    out = model.predict_on_batch(random_inputs(config))
    assert out["av_latents"].shape == (2, 4 * M, 32)
    with pytest.raises(ValueError, match="use_audio=False"):
        model(random_inputs(small_config()))


def test_widths_not_divisible_by_six():
    config = small_config(
        video_hidden_dim=28,
        audio_hidden_dim=20,
        av_hidden_dim=44,
        text_hidden_dim=52,
    )
    out = MirasolBackbone(**config).predict_on_batch(random_inputs(config))
    assert out["av_latents"].shape[-1] == 44
    assert all(np.all(np.isfinite(v)) for v in out.values())


def test_questions_about_one_clip_share_its_encoding(model_and_config):
    # k text rows per clip read that clip's latents: the same outputs as
    # giving every row its own copy of the clip, from one encoder pass.
    model, config = model_and_config
    k = 3
    clips = random_inputs(config, batch_size=2, seed=1)
    text = random_inputs(config, batch_size=2 * k, seed=2)
    grouped = dict(
        clips, token_ids=text["token_ids"], padding_mask=text["padding_mask"]
    )
    copied = dict(text)
    for key in ("video", "audio"):
        copied[key] = np.repeat(clips[key], k, axis=0)
    a = model.predict_on_batch(grouped)
    b = model.predict_on_batch(copied)
    assert a["sequence_output"].shape[0] == 2 * k
    assert a["av_latents"].shape[0] == 2
    np.testing.assert_allclose(
        a["sequence_output"], b["sequence_output"], atol=1e-5
    )
    # Row 0 reads clip 0 and row k clip 1: changing clip 1 moves only
    # rows k ... 2k-1.
    changed = dict(grouped, video=grouped["video"].copy())
    changed["video"][1] = np.random.default_rng(3).uniform(
        size=changed["video"][1].shape
    )
    c = model.predict_on_batch(changed)["sequence_output"]
    diff = np.abs(c - a["sequence_output"]).max(axis=(1, 2))
    np.testing.assert_allclose(diff[:k], 0.0, atol=UNCHANGED)
    assert diff[k:].min() > CHANGED


def bad(inputs, key, value):
    return dict(inputs, **{key: value})


@pytest.mark.parametrize(
    "case, words",
    [
        ("video_rank", ["rank 5", "[batch, 8, 16, 16, 3]"]),
        ("video_channels", ["3 (RGB) channels"]),
        ("frames_not_divisible", ["num_frames", "num_snippets=4"]),
        ("audio_too_short", ["too short", "8000", "audio_sample_rate"]),
        ("missing_key", ["missing ['padding_mask']"]),
        ("batch_mismatch", ["batch size"]),
        ("text_rows", ["3 rows for 2 clips", "i*k"]),
        ("too_long", ["max_sequence_length=16"]),
    ],
)
def test_bad_input_is_a_clear_error(case, words):
    config = small_config()
    model = MirasolBackbone(**config)
    inputs = random_inputs(config)
    bad_inputs = {
        "video_rank": bad(inputs, "video", inputs["video"][0]),
        "video_channels": bad(inputs, "video", inputs["video"][..., :1]),
        "frames_not_divisible": bad(inputs, "video", inputs["video"][:, :6]),
        "audio_too_short": bad(inputs, "audio", inputs["audio"][:, :5000]),
        "missing_key": {k: v for k, v in inputs.items() if k != "padding_mask"},
        "batch_mismatch": bad(inputs, "audio", inputs["audio"][:1]),
        "text_rows": bad(
            bad(inputs, "token_ids", np.ones((3, 8), "int32")),
            "padding_mask",
            np.ones((3, 8), "int32"),
        ),
        "too_long": bad(
            bad(inputs, "token_ids", np.ones((2, 20), "int32")),
            "padding_mask",
            np.ones((2, 20), "int32"),
        ),
    }[case]
    for call in (model, model.predict_on_batch):
        with pytest.raises(ValueError) as info:
            call(bad_inputs)
        for word in words:
            assert word in str(info.value)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (dict(num_frames=10), ["num_frames", "num_snippets"]),
        (dict(combiner_type="lstm"), ["combiner_type"]),
        (dict(av_hidden_dim=31), ["av_hidden_dim", "av_num_heads"]),
        (dict(frame_rate=3), ["frame_rate", "audio_sample_rate"]),
    ],
)
def test_bad_config_names_the_key(overrides, words):
    with pytest.raises(ValueError) as info:
        MirasolBackbone(**small_config(**overrides))
    for word in words:
        assert word in str(info.value)


def test_from_preset_builds_random_model_and_says_so_once(monkeypatch):
    monkeypatch.setattr(backbone, "_announced_random_presets", set())
    overrides = small_config()
    with pytest.warns(UserWarning, match="no pretrained Mirasol weights"):
        MirasolBackbone.from_preset("mirasol_tiny", **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = MirasolBackbone.from_preset("mirasol_tiny", **overrides)
    assert model.num_frames == 8
    with pytest.warns(UserWarning, match="'mirasol_small'"):
        MirasolBackbone.from_preset("mirasol_small", **overrides)


def test_save_to_preset_round_trip(tmp_path):
    config = small_config(combiner_type="ttm")
    model = MirasolBackbone(**config)
    model.save_to_preset(str(tmp_path / "preset"))
    restored = MirasolBackbone.from_preset(str(tmp_path / "preset"))
    assert restored.get_config() == model.get_config()
    inputs = random_inputs(config)
    expected = model.predict_on_batch(inputs)
    actual = restored.predict_on_batch(inputs)
    for key in expected:
        np.testing.assert_allclose(actual[key], expected[key], atol=1e-6)


def test_mixed_precision():
    config = small_config(combiner_type="ttm", dtype="mixed_bfloat16")
    model = MirasolBackbone(**config)
    assert model.get_layer("text_decoder").compute_dtype == "bfloat16"
    assert model.get_layer("text_decoder").variable_dtype == "float32"
    out = model.predict_on_batch(random_inputs(config))
    assert out["latent_loss"].dtype == np.float32
    assert all(
        np.all(np.isfinite(np.asarray(v, "float32"))) for v in out.values()
    )


class MirasolBackboneTest(TestCase):
    """keras-hub's backbone checks: serialization, eager and compiled
    calls, a tf.data predict, the class name, quantization, and a `.keras`
    round trip."""

    def setUp(self):
        super().setUp()
        self.init_kwargs = small_config(combiner_type="ttm")
        self.input_data = keras.tree.map_structure(
            keras.ops.convert_to_tensor, random_inputs(self.init_kwargs)
        )

    def test_backbone_basics(self):
        self.run_backbone_test(
            cls=MirasolBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
            expected_output_shape={
                "sequence_output": (2, 8, 32),
                "av_latents": (2, 4 * M, 32),
                "latent_loss": (2,),
            },
            # Text of 2, 3 and 4 tokens about the same clips (the media
            # keep their shape).
            variable_length_data=[
                {
                    **self.input_data,
                    "token_ids": self.input_data["token_ids"][:, :length],
                    "padding_mask": self.input_data["padding_mask"][:, :length],
                }
                for length in (2, 3, 4)
            ],
            # By design `latent_loss` is float32 under every policy, and
            # the log-mel front end computes in float32 (see
            # MirasolBackbone); `test_mixed_precision` checks the policy.
            run_mixed_precision_check=False,
        )

    def test_saved_model(self):
        self.run_model_saving_test(
            cls=MirasolBackbone,
            init_kwargs=self.init_kwargs,
            input_data=self.input_data,
            atol=1e-5,
            rtol=1e-5,
        )


@pytest.mark.parametrize("combiner_type", ["transformer", "ttm"])
def test_remat_trains_to_the_same_weights(combiner_type):
    # Rematerialisation recomputes the blocks' activations in the backward
    # pass, the encoders and the Transformer Combiner in a loop over
    # snippets: one training step must move every weight exactly as
    # without. The TTM Combiner loops over snippets either way.
    from keras_mirasol.models import MirasolCausalLM

    trained = []
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        config = small_config(remat=remat, combiner_type=combiner_type)
        lm = MirasolCausalLM(MirasolBackbone(**config))
        lm.compile(optimizer=keras.optimizers.SGD(0.5))
        before = [keras.ops.convert_to_numpy(w) for w in lm.weights]
        x = random_inputs(config)
        lm.fit(x, np.roll(x["token_ids"], -1, axis=1), batch_size=2, verbose=0)
        after = [keras.ops.convert_to_numpy(w) for w in lm.weights]
        trained.append(after)
    # The step moved most weights (some get tiny gradients), so equal
    # weights after it are a real check.
    moved = [np.abs(a - b).max() for a, b in zip(before, after)]
    assert np.mean(np.array(moved) > CHANGED) > 0.5
    for plain, remat in zip(*trained):
        np.testing.assert_allclose(plain, remat, atol=1e-5)
    # The switch is part of the config, down to every transformer stack.
    assert MirasolBackbone.from_config(lm.backbone.get_config()).remat
    assert lm.backbone.combiner.transformer.get_config()["remat"]


@pytest.mark.one_backend
def test_remat_bounds_the_backward_pass_memory():
    # XLA's own plan of the gradient's buffers: with remat the encoders
    # and the Combiner keep one snippet's activations at a time, so the
    # gradient of an 8-snippet clip needs a fraction of the memory.
    def temp_bytes(remat):
        config = small_config(
            num_frames=16,
            num_snippets=8,
            video_num_layers=3,
            audio_num_layers=3,
            video_intermediate_dim=256,
            audio_intermediate_dim=256,
            remat=remat,
        )
        model = MirasolBackbone(**config)
        return gradient_temp_bytes(model, random_inputs(config, batch_size=4))

    plain, remat = temp_bytes(False), temp_bytes(True)
    assert remat < 0.5 * plain, (remat, plain)
