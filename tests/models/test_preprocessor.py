import numpy as np
import pytest
import tensorflow as tf

from keras_mirasol.models import MirasolCausalLMPreprocessor
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY

LENGTH = 16


@pytest.fixture(scope="module")
def preprocessor():
    return MirasolCausalLMPreprocessor(
        MirasolTokenizer(proto=DEFAULT_VOCABULARY),
        sequence_length=LENGTH,
        num_frames=8,
        frame_size=(16, 16),
        num_audio_samples=8000,
        audio_sample_rate=8000,
    )


def clips(batch=2, frames=12, samples=8000, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "video": rng.integers(0, 256, (batch, frames, 24, 20, 3), "uint8"),
        "audio": rng.normal(size=(batch, samples)).astype("float32"),
        "prompts": ["what colour is the square?", "which sound came first?"],
        "responses": ["red", "a high tone"],
    }


def test_packs_prompt_then_response_and_masks_the_loss(preprocessor):
    x, y, weight = preprocessor(clips())
    assert x["video"].shape == (2, 8, 16, 16, 3)
    assert x["video"].dtype == np.float32 and x["video"].max() <= 1.0
    assert x["audio"].shape == (2, 8000)
    assert x["token_ids"].shape == (2, LENGTH) == y.shape == weight.shape
    tokenizer = preprocessor.tokenizer
    for row, (prompt, response) in enumerate(
        [
            ("what colour is the square?", "red"),
            ("which sound came first?", "a high tone"),
        ]
    ):
        prompt_ids = np.asarray(tokenizer(prompt)).tolist()
        response_ids = np.asarray(tokenizer(response)).tolist()
        n = len(prompt_ids)
        expected = [tokenizer.start_token_id] + prompt_ids + response_ids
        assert x["token_ids"][row, : len(expected)].tolist() == expected
        # The loss covers the response and the end token, nothing else.
        targets = y[row][weight[row] > 0].tolist()
        assert targets == response_ids + [tokenizer.end_token_id]
        assert weight[row, :n].sum() == 0
        # start, prompt, response and end are real tokens.
        assert x["padding_mask"][row].sum() == min(len(expected) + 1, LENGTH)


def test_float64_media_equal_float32_media(preprocessor):
    # NumPy's default dtype: `np.zeros(n)`, `np.random.uniform(...)`.
    x32 = clips()
    x32["video"] = (x32["video"] / 255).astype("float32")
    x64 = dict(x32, video=x32["video"].astype("float64"))
    x64["audio"] = x32["audio"].astype("float64")
    out32, _, _ = preprocessor(x32)
    out64, _, _ = preprocessor(x64)
    for key in ("video", "audio"):
        assert out64[key].dtype == np.float32
        np.testing.assert_allclose(out64[key], out32[key], atol=1e-6)


def test_k_questions_per_clip(preprocessor):
    # Two clips, three questions each: the media once per clip, the text
    # per question, packed as if each question came with its own copy.
    data = clips()
    prompts = ["what colour?", "which sound?", "when?", "a", "b", "c"]
    responses = ["red", "hum", "first", "x", "y", "z"]
    x, y, weight = preprocessor(
        dict(data, prompts=prompts, responses=responses)
    )
    assert x["video"].shape[0] == 2 and x["audio"].shape[0] == 2
    assert x["token_ids"].shape == (6, LENGTH) == y.shape == weight.shape
    copied = dict(
        data,
        video=np.repeat(data["video"], 3, axis=0),
        audio=np.repeat(data["audio"], 3, axis=0),
        prompts=prompts,
        responses=responses,
    )
    x2, y2, weight2 = preprocessor(copied)
    np.testing.assert_array_equal(x["token_ids"], x2["token_ids"])
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(weight, weight2)
    np.testing.assert_array_equal(x["video"], x2["video"][::3])


def test_tf_data_unbatched_then_batched_matches_eager(preprocessor):
    data = clips()
    eager_x, eager_y, eager_w = preprocessor(data)
    ds = tf.data.Dataset.from_tensor_slices(data).map(preprocessor).batch(2)
    (x, y, w) = next(iter(ds))
    for key in eager_x:
        np.testing.assert_allclose(
            np.asarray(x[key], "float32"),
            np.asarray(eager_x[key], "float32"),
            atol=1e-6,
        )
    np.testing.assert_array_equal(y.numpy(), eager_y)
    np.testing.assert_array_equal(w.numpy(), eager_w)
    batched = tf.data.Dataset.from_tensor_slices(data).batch(2)
    (bx, _, _) = next(iter(batched.map(preprocessor)))
    np.testing.assert_array_equal(bx["token_ids"].numpy(), eager_x["token_ids"])


def test_long_prompts_are_truncated_with_one_warning(preprocessor):
    data = clips()
    data["prompts"] = ["red square " * 40, "what colour?"]
    preprocessor._warned_truncation = False
    with pytest.warns(UserWarning, match="truncated"):
        x, y, weight = preprocessor(data)
    assert x["token_ids"].shape == (2, LENGTH)
    # The response survives truncation of the prompt.
    response = np.asarray(preprocessor.tokenizer("red")).tolist()
    assert y[0][weight[0] > 0].tolist()[:-1] == response
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        preprocessor(data)


def test_empty_prompts_and_unlabelled_clips(preprocessor):
    data = clips()
    data["prompts"] = ["", ""]
    x, y, weight = preprocessor(data)
    assert x["token_ids"][0, 0] == preprocessor.tokenizer.start_token_id
    unlabelled = {k: v for k, v in clips().items() if k != "responses"}
    x, y, weight = preprocessor(unlabelled)
    # Only the end token is a target.
    assert weight.sum(axis=1).tolist() == [1.0, 1.0]


def test_short_and_long_clips_follow_the_sampling_rule(preprocessor):
    short = clips(frames=3, samples=2000)
    x, _, _ = preprocessor(short)
    assert x["video"].shape == (2, 8, 16, 16, 3)
    np.testing.assert_array_equal(x["audio"][:, 2000:], 0.0)
    long = clips(frames=40, samples=32000)
    x, _, _ = preprocessor(long)
    np.testing.assert_array_equal(x["audio"], long["audio"][:, 12000:20000])


def test_generate_preprocess_has_no_end_token(preprocessor):
    data = {k: v for k, v in clips().items() if k != "responses"}
    x = preprocessor.generate_preprocess(data, sequence_length=12)
    assert x["token_ids"].shape == (2, 12)
    end = preprocessor.tokenizer.end_token_id
    assert end not in x["token_ids"].tolist()[0]
    assert x["padding_mask"][0].sum() == 1 + len(
        np.asarray(preprocessor.tokenizer(data["prompts"][0]))
    )


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda d: d.pop("audio"), "Missing input keys \\['audio'\\]"),
        (lambda d: d.pop("prompts"), "Missing input keys \\['prompts'\\]"),
        (lambda d: d.update(prompts=["one"]), "Mismatched batch sizes"),
        (lambda d: d.update(audio=d["audio"][:1]), "Mismatched batch sizes"),
        (
            lambda d: d.update(prompts=["a", "b", "c"], responses=["x"] * 3),
            "or k per clip",
        ),
        (lambda d: d.update(video=d["video"][..., :1]), "height, width, 3"),
    ],
)
def test_bad_inputs(preprocessor, change, match):
    data = clips()
    change(data)
    with pytest.raises(ValueError, match=match):
        preprocessor(data)
