import re

import keras
import numpy as np
import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models.causal_lm import MirasolCausalLM
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import random_inputs
from tests.conftest import small_config
from tests.conftest import to_numpy
from tests.hub_test_case import TestCase

LENGTH = 10


@pytest.fixture(scope="module")
def lm_and_config():
    # Three text blocks, cross-attention in blocks 0 and 2 only.
    config = small_config(text_num_layers=3, cross_attention_every=2)
    keras.utils.set_random_seed(0)
    lm = MirasolCausalLM(MirasolBackbone(**config))
    lm.compile(sampler="greedy")
    return lm, config


def prompt_inputs(config, prompt_length=4, seed=0):
    x = random_inputs(config, batch_size=2, length=LENGTH, seed=seed)
    mask = np.zeros((2, LENGTH), "int32")
    mask[:, :prompt_length] = 1
    x["padding_mask"] = mask
    x["token_ids"] = x["token_ids"] * mask
    return x


def test_cached_decoding_matches_the_full_forward_pass(lm_and_config):
    lm, config = lm_and_config
    x = random_inputs(config, batch_size=2, length=LENGTH)
    full = lm.predict_on_batch(x)
    av_latents = lm.encode_media(x)
    hidden, cache = lm.build_cache(x["token_ids"], av_latents)
    seeded = to_numpy(lm.backbone.token_embedding(hidden, reverse=True))
    np.testing.assert_allclose(seeded, full, atol=1e-4)
    # Token by token, each step reading the cache of the previous ones.
    _, cache = lm.build_cache(np.zeros_like(x["token_ids"]), av_latents)
    steps = []
    for j in range(LENGTH):
        logits, _, cache = lm.call_with_cache(
            x["token_ids"][:, j : j + 1], cache, j
        )
        steps.append(to_numpy(logits)[:, 0])
    np.testing.assert_allclose(np.stack(steps, axis=1), full, atol=1e-4)


def test_cross_attention_keys_and_values_are_computed_once(lm_and_config):
    # Decoding steps must read the cross-attention keys and values from the
    # cache that `build_cache` filled: once it is built, zeroing the key and
    # value projections must not change a step, while building the cache
    # again with them zeroed must.
    lm, config = lm_and_config
    x = prompt_inputs(config)
    av_latents = lm.encode_media(x)
    projections = [
        w
        for w in lm.backbone.weights
        if re.search(r"cross_attention/(key|value)/", w.path)
    ]
    assert len(projections) == 8  # kernel and bias, key and value, 2 blocks
    saved = [w.numpy() for w in projections]

    def step(cache):
        logits, _, _ = lm.call_with_cache(x["token_ids"][:, 3:4], cache, 3)
        return to_numpy(logits)

    _, cache = lm.build_cache(x["token_ids"], av_latents)
    before = step(cache)
    try:
        for w in projections:
            w.assign(np.zeros(w.shape, w.dtype))
        np.testing.assert_allclose(step(cache), before, atol=1e-6)
        _, rebuilt = lm.build_cache(x["token_ids"], av_latents)
        assert np.abs(step(rebuilt) - before).max() > 1e-3
    finally:
        for w, value in zip(projections, saved):
            w.assign(value)


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="torch runs generate eagerly: nothing is traced or compiled",
)
def test_generation_compiles_once_per_shape(lm_and_config):
    lm, config = lm_and_config
    lm.generate_function = None
    traces = []
    original = MirasolCausalLM.generate_step

    def counted(inputs, stop_token_ids=None):
        traces.append(1)
        return original(lm, inputs, stop_token_ids)

    lm.generate_step = counted
    try:
        first = lm.generate(prompt_inputs(config), stop_token_ids=None)
        again = lm.generate(prompt_inputs(config, seed=1), stop_token_ids=None)
        assert len(traces) == 1
        x = prompt_inputs(config)
        x = {k: v[:1] for k, v in x.items()}
        lm.generate(x, stop_token_ids=None)
        assert len(traces) == 2
    finally:
        del lm.generate_step
        lm.generate_function = None
    assert first["token_ids"].shape == (2, LENGTH)
    assert not np.array_equal(first["token_ids"], again["token_ids"])


def test_greedy_generation_is_deterministic_and_stops(lm_and_config):
    lm, config = lm_and_config
    x = prompt_inputs(config)
    a = lm.generate(dict(x), stop_token_ids=None, strip_prompt=False)
    b = lm.generate(dict(x), stop_token_ids=None, strip_prompt=False)
    np.testing.assert_array_equal(a["token_ids"], b["token_ids"])
    np.testing.assert_array_equal(a["token_ids"][:, :4], x["token_ids"][:, :4])
    # Stop on the first generated token of row 0: row 0 ends right there.
    stop = int(a["token_ids"][0, 4])
    c = lm.generate(dict(x), stop_token_ids=(stop,), strip_prompt=False)
    assert c["padding_mask"][0].tolist() == [True] * 5 + [False] * 5
    np.testing.assert_array_equal(c["token_ids"][0, :5], a["token_ids"][0, :5])


def test_decoding_from_latents_equals_generating_from_the_clip(
    lm_and_config,
):
    lm, config = lm_and_config
    x = prompt_inputs(config)
    whole = lm.generate(dict(x), stop_token_ids=None, strip_prompt=False)
    # Two prompts about each clip: the clip's latents once per prompt.
    latents = to_numpy(lm.encode_media(x))
    from_latents = lm.generate_from_latents(
        np.repeat(latents, 2, axis=0),
        np.repeat(x["token_ids"], 2, axis=0),
        np.repeat(x["padding_mask"], 2, axis=0),
    )
    np.testing.assert_array_equal(
        to_numpy(from_latents["token_ids"]),
        np.repeat(whole["token_ids"], 2, axis=0),
    )


def test_other_samplers(lm_and_config):
    lm, config = lm_and_config
    for sampler in ("top_k", "beam"):
        lm.compile(sampler=sampler)
        out = lm.generate(prompt_inputs(config), stop_token_ids=None)
        assert out["token_ids"].shape == (2, LENGTH)
    lm.compile(sampler="greedy")


def test_fit_logs_text_and_latent_losses():
    config = small_config()
    lm = MirasolCausalLM(MirasolBackbone(**config))
    lm.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = random_inputs(config, batch_size=4, length=8)
    y = np.roll(x["token_ids"], -1, axis=1)
    weight = np.ones_like(y, "float32")
    history = lm.fit(x, y, sample_weight=weight, epochs=2, verbose=0)
    logs = history.history
    assert logs["text_loss"][0] > 0 and logs["latent_loss"][0] > 0
    expected = logs["text_loss"][0] + 0.1 * logs["latent_loss"][0]
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-3)


def test_fit_in_mixed_bfloat16_logs_both_losses():
    config = small_config(dtype="mixed_bfloat16")
    lm = MirasolCausalLM(MirasolBackbone(**config))
    lm.compile(optimizer=keras.optimizers.Adam(1e-3))
    x = random_inputs(config, batch_size=2, length=8)
    y = np.roll(x["token_ids"], -1, axis=1)
    weight = np.ones_like(y, "float32")
    logs = lm.fit(x, y, sample_weight=weight, epochs=1, verbose=0).history
    assert lm.backbone.text_decoder.compute_dtype == "bfloat16"
    assert np.isfinite(logs["loss"][0])
    assert logs["text_loss"][0] > 0 and logs["latent_loss"][0] > 0
    expected = logs["text_loss"][0] + 0.1 * logs["latent_loss"][0]
    assert logs["loss"][0] == pytest.approx(expected, rel=1e-2)


def test_latent_only_pretraining_leaves_the_text_decoder_alone():
    config = small_config()
    lm = MirasolCausalLM(MirasolBackbone(**config), text_loss_weight=0.0)
    lm.compile(optimizer=keras.optimizers.SGD(0.1))
    x = random_inputs(config, batch_size=2, length=8)
    y = np.zeros_like(x["token_ids"])
    decoder = lm.backbone.text_decoder
    before = [to_numpy(w) for w in decoder.weights]
    media = lm.backbone.get_layer("av_decoder")
    media_before = [to_numpy(w) for w in media.weights]
    lm.fit(x, y, epochs=1, verbose=0)
    for old, new in zip(before, decoder.weights):
        np.testing.assert_array_equal(old, to_numpy(new))
    assert any(
        not np.array_equal(old, to_numpy(new))
        for old, new in zip(media_before, media.weights)
    )


@pytest.fixture(scope="module")
def text_lm():
    from keras_mirasol.models import MirasolCausalLMPreprocessor
    from keras_mirasol.models import MirasolTokenizer
    from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY

    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    config = small_config(vocabulary_size=tokenizer.vocabulary_size())
    backbone = MirasolBackbone(**config)
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    lm = MirasolCausalLM(backbone, preprocessor)
    lm.compile(optimizer=keras.optimizers.Adam(1e-3))
    return lm, config


def raw_clips(config, batch=2):
    x = random_inputs(config, batch_size=batch)
    return {
        "video": x["video"],
        "audio": x["audio"],
        "prompts": ["what colour is the square?", "what sound?"][:batch],
        "responses": ["red", "a beep"][:batch],
    }


def test_generate_returns_answer_strings(text_lm):
    lm, config = text_lm
    data = raw_clips(config)
    del data["responses"]
    answers = lm.generate(data, max_length=12)
    assert isinstance(answers, list) and len(answers) == 2
    assert all(isinstance(a, str) for a in answers)
    one = lm.generate(
        {"video": data["video"][0], "audio": data["audio"][0], "prompts": "hi"},
        max_length=12,
    )
    assert isinstance(one, str)


def test_with_num_snippets_takes_longer_clips_with_the_same_text_setup(
    text_lm,
):
    from keras_mirasol.models import MirasolCausalLMPreprocessor

    lm, config = text_lm
    # A task of its own, with a prompt template and the response loss.
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        lm.backbone,
        lm.preprocessor.tokenizer,
        prompt_template="Q: {prompt} A:",
    )
    short = MirasolCausalLM(
        lm.backbone, preprocessor, text_loss_reduction="response"
    )
    longer = short.with_num_snippets(8)
    assert longer.text_loss_reduction == "response"
    assert longer.preprocessor.prompt_template == "Q: {prompt} A:"
    assert longer.preprocessor.tokenizer is lm.preprocessor.tokenizer
    assert longer.preprocessor.num_frames == 2 * config["num_frames"]
    assert longer.preprocessor.num_audio_samples == (
        2 * lm.backbone.num_audio_samples
    )
    data = raw_clips(dict(config, num_frames=2 * config["num_frames"]))
    # The clip's first half holds what the short model saw: its latents.
    half = {
        "video": data["video"][:, : config["num_frames"]],
        "audio": data["audio"][:, : lm.backbone.num_audio_samples],
    }
    np.testing.assert_allclose(
        to_numpy(longer.encode_media(data))[:, : 4 * 2],
        to_numpy(short.encode_media(half)),
        atol=UNCHANGED,
    )
    del data["responses"]
    answers = longer.generate(data, max_length=12)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_fit_on_raw_clips_and_text(text_lm):
    import tensorflow as tf

    lm, config = text_lm
    history = lm.fit(raw_clips(config), epochs=2, batch_size=2, verbose=0)
    assert {"text_loss", "latent_loss", "loss"} <= set(history.history)
    # A tf.data pipeline of raw dict batches works the same way.
    ds = tf.data.Dataset.from_tensor_slices(raw_clips(config)).batch(2)
    history = lm.fit(ds, epochs=1, verbose=0)
    assert history.history["text_loss"][0] > 0


def test_save_to_preset_round_trip(tmp_path, text_lm):
    lm, config = text_lm
    lm.save_to_preset(str(tmp_path / "lm"))
    restored = MirasolCausalLM.from_preset(str(tmp_path / "lm"))
    assert restored.preprocessor.get_config() == lm.preprocessor.get_config()
    assert restored.text_loss_weight == lm.text_loss_weight
    # predict() runs the attached preprocessor on raw clips and text.
    np.testing.assert_allclose(
        restored.predict_on_batch(raw_clips(config)),
        lm.predict_on_batch(raw_clips(config)),
        atol=1e-5,
    )
    data = raw_clips(config)
    del data["responses"]
    assert restored.generate(data, max_length=12) == lm.generate(
        data, max_length=12
    )
    # The preprocessor and the tokenizer load on their own too.
    from keras_mirasol.models import MirasolCausalLMPreprocessor
    from keras_mirasol.models import MirasolTokenizer

    preprocessor = MirasolCausalLMPreprocessor.from_preset(str(tmp_path / "lm"))
    expected = lm.preprocessor(raw_clips(config))
    actual = preprocessor(raw_clips(config))
    np.testing.assert_array_equal(
        actual[0]["token_ids"], expected[0]["token_ids"]
    )
    np.testing.assert_array_equal(actual[2], expected[2])
    tokenizer = MirasolTokenizer.from_preset(str(tmp_path / "lm"))
    assert (
        tokenizer.get_vocabulary() == lm.preprocessor.tokenizer.get_vocabulary()
    )


def test_builtin_preset_builds_a_random_model_with_a_tokenizer():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = MirasolCausalLM.from_preset("mirasol_tiny", text_loss_weight=0.5)
    tokenizer = lm.preprocessor.tokenizer
    assert lm.backbone.vocabulary_size == tokenizer.vocabulary_size()
    assert lm.preprocessor.num_frames == lm.backbone.num_frames
    assert lm.text_loss_weight == 0.5


def test_tokenizer_larger_than_the_vocabulary_is_an_error():
    from keras_mirasol.models import MirasolCausalLMPreprocessor
    from keras_mirasol.models import MirasolTokenizer
    from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY

    backbone = MirasolBackbone(**small_config(vocabulary_size=64))
    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    with pytest.raises(ValueError, match="vocabulary_size"):
        MirasolCausalLM(backbone, preprocessor)


@pytest.mark.parametrize("reduction", ["token", "response"])
def test_text_loss_reduction(lm_and_config, reduction):
    """ "token": the mean over every response token of the batch;
    "response": the mean over responses of each response's mean."""
    _, config = lm_and_config
    # No latent loss: the total is the text loss alone.
    backbone = MirasolBackbone(**dict(config, latent_loss_weight=0.0))
    lm = MirasolCausalLM(backbone, text_loss_reduction=reduction)
    lm.compile()
    x = random_inputs(config, batch_size=3, length=LENGTH)
    y = np.roll(x["token_ids"], -1, axis=1)
    # Responses of 1, 6 and 3 tokens; the third row's weights are not 1.
    weight = np.zeros((3, LENGTH), "float32")
    weight[0, 2:3] = 1
    weight[1, 2:8] = 1
    weight[2, 5:8] = 2
    logits = lm.predict_on_batch(x)
    total = lm.compute_loss(x, y, logits, weight, training=False)
    logits = logits.astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, y[..., None], -1)[..., 0]
    if reduction == "token":
        text = (weight * nll).sum() / weight.sum()
    else:
        text = np.mean((weight * nll).sum(1) / weight.sum(1))
    assert float(to_numpy(total)) == pytest.approx(text, rel=1e-4)
    # The two reductions differ on these responses of unequal length.
    other = np.mean((weight * nll).sum(1) / weight.sum(1))
    if reduction == "token":
        assert abs(text - other) > 1e-3
    assert MirasolCausalLM.from_config(lm.get_config()).text_loss_reduction == (
        reduction
    )


def test_unknown_text_loss_reduction_is_an_error(lm_and_config):
    lm, _ = lm_and_config
    with pytest.raises(ValueError, match="text_loss_reduction.*'mean'"):
        MirasolCausalLM(lm.backbone, text_loss_reduction="mean")


def test_a_step_on_k_questions_per_clip_equals_one_on_copied_clips():
    # Training on k questions per clip encodes each clip once; the loss,
    # the gradients and so the updated weights are those of the same
    # batch with every question given its own copy of the clip.
    config = small_config()
    k = 3
    clips = random_inputs(config, batch_size=2, seed=1)
    text = random_inputs(config, batch_size=2 * k, length=LENGTH, seed=2)
    y = np.roll(text["token_ids"], -1, axis=1)
    weight = np.zeros(y.shape, "float32")
    weight[:, 4:] = 1.0
    grouped = dict(
        clips, token_ids=text["token_ids"], padding_mask=text["padding_mask"]
    )
    copied = dict(text)
    for key in ("video", "audio"):
        copied[key] = np.repeat(clips[key], k, axis=0)
    keras.utils.set_random_seed(0)
    first = MirasolCausalLM(MirasolBackbone(**config))
    second = MirasolCausalLM(MirasolBackbone(**config))
    second.set_weights(first.get_weights())
    initial = first.get_weights()
    results = []
    for lm, x in ((first, grouped), (second, copied)):
        lm.compile(optimizer=keras.optimizers.SGD(0.5))
        loss = lm.train_on_batch(x, y, weight, return_dict=True)
        results.append((loss, [to_numpy(w) for w in lm.weights]))
    (loss_a, weights_a), (loss_b, weights_b) = results
    for key in ("loss", "text_loss", "latent_loss"):
        np.testing.assert_allclose(loss_a[key], loss_b[key], rtol=1e-5)
    assert loss_a["latent_loss"] > 0
    for a, b in zip(weights_a, weights_b):
        np.testing.assert_allclose(a, b, atol=1e-5)
    # The step moved the media encoders too (the check is not vacuous).
    encoder = first.backbone.video_encoder.weights[0].path
    moved = [
        w.path
        for w, a, b in zip(first.weights, weights_a, initial)
        if np.abs(a - b).max() > 1e-4
    ]
    assert encoder in moved and len(moved) > len(first.weights) // 2


class MirasolCausalLMTest(TestCase):
    """keras-hub's task checks: serialization; predict and fit on raw
    clips and text, on a tf.data pipeline of them, and on a pipeline
    that preprocesses apart from the model; `fit` before `compile` is an
    error."""

    def test_task_basics(self):
        from keras_mirasol.models import MirasolCausalLMPreprocessor
        from keras_mirasol.models import MirasolTokenizer
        from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY

        tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
        config = small_config(vocabulary_size=tokenizer.vocabulary_size())
        backbone = MirasolBackbone(**config)
        preprocessor = MirasolCausalLMPreprocessor.from_backbone(
            backbone, tokenizer
        )
        clips = random_inputs(config, batch_size=2)
        train_data = (
            {
                "video": clips["video"],
                "audio": clips["audio"],
                "prompts": np.array(["what colour is it?", "what sound?"]),
                "responses": np.array(["red", "a beep"]),
            },
        )
        self.run_task_test(
            cls=MirasolCausalLM,
            init_kwargs={"backbone": backbone, "preprocessor": preprocessor},
            train_data=train_data,
            expected_output_shape=(2, 16, tokenizer.vocabulary_size()),
        )


def test_lora_trains_only_the_adapters_and_reloads():
    # keras-hub's LoRA on the query and value projections of every
    # attention layer: `fit` moves only the adapters; a saved preset
    # (adapters merged into the kernels) and the adapters saved alone
    # both reload to the trained model's outputs.
    import tempfile

    config = small_config()
    keras.utils.set_random_seed(0)
    lm = MirasolCausalLM(MirasolBackbone(**config))
    base = {w.path: w.numpy() for w in lm.backbone.weights}
    lm.backbone.enable_lora(2)
    # Only the adapters train (the adapted layers' biases are frozen too).
    adapters = lm.backbone.trainable_weights

    def adapted(path):
        return "lora_kernel" in path

    assert adapters and all(adapted(w.path) for w in adapters)
    assert sum(np.prod(w.shape) for w in adapters) < (
        lm.backbone.count_params() // 5
    )
    lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = random_inputs(config, batch_size=2, length=8)
    y = np.roll(x["token_ids"], -1, axis=1)
    lm.fit(x, y, batch_size=2, epochs=3, verbose=0)
    for w in lm.backbone.weights:
        if not adapted(w.path):
            np.testing.assert_array_equal(w.numpy(), base[w.path], w.path)
    assert any(
        np.abs(w.numpy()).max() > 0
        for w in adapters
        if w.path.endswith("lora_kernel_b")
    )
    expected = to_numpy(lm(x, training=False))

    with tempfile.TemporaryDirectory() as folder:
        lm.backbone.save_to_preset(folder)
        merged = MirasolBackbone.from_preset(folder)
        adapters_file = f"{folder}/adapters.lora.h5"
        lm.backbone.save_lora_weights(adapters_file)
        again = MirasolBackbone(**config)
        for w in again.weights:
            w.assign(base[w.path])
        again.load_lora_weights(adapters_file)
    for backbone in (merged, again):
        got = to_numpy(MirasolCausalLM(backbone)(x, training=False))
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


# --- score() -------------------------------------------------------------


def score_inputs(config, prompts, responses, clips=None, seed=0):
    """Raw inputs for `score()`: one random clip per row unless given."""
    if clips is None:
        clips = random_inputs(config, batch_size=len(prompts), seed=seed)
    return {
        "video": clips["video"],
        "audio": clips["audio"],
        "prompts": list(prompts),
        "responses": list(responses),
    }


def packed_text(tokenizer, prompt, response=None):
    """`[start] prompt response [end]` ids, packed here, not by the
    preprocessor; without a response, `[start] prompt`."""
    ids = [tokenizer.start_token_id] + list(to_numpy(tokenizer(prompt)))
    if response is not None:
        ids += list(to_numpy(tokenizer(response))) + [tokenizer.end_token_id]
    return [int(i) for i in ids]


def with_tokenizer_op(text_lm):
    """`text_lm` with its tokenizer's SentencePiece op made again: tests
    before these seed, which on TensorFlow clears the op made with the
    module's fixture (see `MirasolTokenizer`)."""
    lm, config = text_lm
    tokenizer = lm.preprocessor.tokenizer
    tokenizer.set_proto(tokenizer.proto)
    return lm, config


def log_softmax(logits):
    logits = np.asarray(logits, "float64")
    top = logits.max(-1, keepdims=True)
    return logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))


def test_score_is_the_log_likelihood_of_the_response_decoded_with_cache(
    text_lm,
):
    # The response's tokens and end token, fed one by one through the
    # key/value cache (the generation path): their log-probabilities,
    # normalised here, sum to the score; the prompt's do not count.
    lm, config = with_tokenizer_op(text_lm)
    tokenizer = lm.preprocessor.tokenizer
    prompts = ["what colour is the square?", "what sound?", "say nothing"]
    responses = ["red", "a loud beep", ""]
    data = score_inputs(config, prompts, responses)
    rows = [packed_text(tokenizer, p, r) for p, r in zip(prompts, responses)]
    width = max(len(row) for row in rows)
    token_ids = np.zeros((len(rows), width), "int32")
    for i, row in enumerate(rows):
        token_ids[i, : len(row)] = row
    av_latents = lm.encode_media(data)
    _, cache = lm.build_cache(np.zeros_like(token_ids), av_latents)
    steps = []
    for j in range(width - 1):
        logits, _, cache = lm.call_with_cache(token_ids[:, j : j + 1], cache, j)
        steps.append(log_softmax(to_numpy(logits)[:, 0]))
    expected, counts = [], []
    for i, (prompt, row) in enumerate(zip(prompts, rows)):
        # Position j predicts token j + 1: from the prompt's last token
        # (it predicts the response's first) to the one before the end.
        first = 1 + len(to_numpy(tokenizer(prompt)))
        expected.append(
            sum(steps[j - 1][i, row[j]] for j in range(first, len(row)))
        )
        counts.append(len(row) - first)
    assert counts == [2, 4, 1]  # the end token alone for an empty response
    scores = lm.score(data)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert np.all(scores < 0)
    np.testing.assert_allclose(scores, expected, rtol=1e-4)
    np.testing.assert_allclose(
        lm.score(data, normalize=True),
        np.asarray(expected) / counts,
        rtol=1e-4,
    )


def test_score_follows_the_chain_rule_of_normalised_probabilities(text_lm):
    # Four candidates about one clip (k = 4 rows per clip). Moving a
    # response's first word into the prompt removes exactly its term:
    # score(P, "red square") - score(P red, "square") and
    # score(P, "red") - score(P red, "") are both log p(red | clip, P),
    # which the full forward pass gives through a softmax taken here.
    lm, config = with_tokenizer_op(text_lm)
    tokenizer = lm.preprocessor.tokenizer
    prompt = "what is on screen?"
    longer = prompt + " red"
    red = [int(i) for i in to_numpy(tokenizer("red"))]
    assert len(red) == 1
    assert (
        packed_text(tokenizer, longer) == packed_text(tokenizer, prompt) + red
    )
    clip = random_inputs(config, batch_size=1, seed=3)
    data = score_inputs(
        config,
        [prompt, longer, prompt, longer],
        ["red square", "square", "red", ""],
        clips=clip,
    )
    scores = lm.score(data)
    prefix = packed_text(tokenizer, prompt)
    inputs = dict(
        clip,
        token_ids=np.asarray([prefix], "int32"),
        padding_mask=np.ones((1, len(prefix)), "bool"),
    )
    logits = to_numpy(lm(inputs, training=False))
    log_p_red = log_softmax(logits[0, -1])[red[0]]
    assert log_p_red < 0
    np.testing.assert_allclose(scores[0] - scores[1], log_p_red, atol=1e-4)
    np.testing.assert_allclose(scores[2] - scores[3], log_p_red, atol=1e-4)


def test_score_rows_are_independent(text_lm):
    lm, config = with_tokenizer_op(text_lm)
    prompts = ["what colour?", "what sound?", "what shape?"]
    responses = ["red", "a beep", "a square"]
    data = score_inputs(config, prompts, responses)
    base = lm.score(data)
    other = random_inputs(config, batch_size=3, seed=7)

    def changed(scores):
        return np.abs(scores - base) > CHANGED

    # Another row's response or clip leaves row 0 as it was.
    edited = dict(data, responses=["red", "silence", "a square"])
    edited["video"] = data["video"].copy()
    edited["video"][2] = other["video"][2]
    scores = lm.score(edited)
    np.testing.assert_allclose(scores[0], base[0], rtol=UNCHANGED)
    assert changed(scores)[1:].all()
    # Its own clip does not.
    edited = dict(data, video=data["video"].copy())
    edited["video"][0] = other["video"][0]
    scores = lm.score(edited)
    assert changed(scores)[0]
    np.testing.assert_allclose(scores[1:], base[1:], rtol=UNCHANGED)
    # k candidates about one clip score as the clip repeated, batched or
    # not.
    choices = ["red", "a beep", "a square"]
    one = {k: data[k][:1] for k in ("video", "audio")}
    repeated = score_inputs(
        config,
        ["what colour?"] * 3,
        choices,
        clips={k: np.repeat(v, 3, axis=0) for k, v in one.items()},
    )
    grouped = lm.score(score_inputs(config, ["what colour?"] * 3, choices, one))
    np.testing.assert_allclose(grouped, lm.score(repeated), rtol=UNCHANGED)
    np.testing.assert_allclose(grouped[0], base[0], rtol=UNCHANGED)
    single = {k: v[0] for k, v in one.items()}
    np.testing.assert_allclose(
        lm.score(score_inputs(config, ["what colour?"] * 3, choices, single)),
        grouped,
        rtol=UNCHANGED,
    )


def test_score_errors_say_what_to_fix(lm_and_config, text_lm):
    bare, config = lm_and_config
    data = score_inputs(config, ["what colour?"], ["red"])
    with pytest.raises(
        ValueError, match="needs the task.s preprocessor.*from_backbone"
    ):
        bare.score(data)
    lm, config = with_tokenizer_op(text_lm)
    data = score_inputs(config, ["what colour?"], ["red"])
    del data["responses"]
    with pytest.raises(ValueError, match="`responses`.*got \\['audio'"):
        lm.score(data)
