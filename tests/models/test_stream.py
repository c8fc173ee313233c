import keras
import numpy as np
import pytest

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models import MirasolCausalLMPreprocessor
from keras_mirasol.models import MirasolStream
from tests.conftest import default_vocabulary_lm
from tests.conftest import random_inputs
from tests.conftest import small_config
from tests.conftest import to_numpy


@pytest.fixture(scope="module")
def lms():
    """Models by name, from one seed: `transformer` and `ttm` (with the
    default vocabulary's preprocessor), `one_block` (one time-aligned
    block, no preprocessor)."""
    # Seeding clears TensorFlow's eager caches, the tokenizer's op with
    # them: seed first, once.
    keras.utils.set_random_seed(0)
    models = {
        "transformer": default_vocabulary_lm(),
        "ttm": default_vocabulary_lm(combiner_type="ttm"),
    }
    config = small_config(av_num_layers=1)
    models["one_block"] = MirasolCausalLM(MirasolBackbone(**config)), config
    return models


def snippet(x, t, stream):
    f, s = stream.frames_per_snippet, stream.samples_per_snippet
    return (
        x["video"][:, t * f : (t + 1) * f],
        x["audio"][:, t * s : (t + 1) * s],
    )


def prefix_lm(lm, config, num_snippets):
    """The same weights, built for a clip of the first `num_snippets`."""
    frames = config["num_frames"] // config["num_snippets"] * num_snippets
    backbone = MirasolBackbone(
        **dict(config, num_frames=frames, num_snippets=num_snippets)
    )
    backbone.set_weights(lm.backbone.get_weights())
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, lm.preprocessor.tokenizer
    )
    return MirasolCausalLM(backbone, preprocessor)


@pytest.mark.parametrize("combiner", ["transformer", "ttm"])
def test_latents_after_each_snippet_equal_the_offline_models(lms, combiner):
    lm, config = lms[combiner]
    x = random_inputs(config, batch_size=2)
    _, offline = lm.backbone.encode_media(x["video"], x["audio"])
    offline = to_numpy(offline)
    stream = lm.stream(batch_size=2)
    m = stream.tokens_per_snippet
    for t in range(config["num_snippets"]):
        new = stream.append(*snippet(x, t, stream))
        np.testing.assert_allclose(
            to_numpy(new), offline[:, t * m : (t + 1) * m], atol=1e-4
        )
        np.testing.assert_allclose(
            to_numpy(stream.av_latents), offline[:, : (t + 1) * m], atol=1e-4
        )
    # A reset stream starts again from snippet 0 (and, with a TTM
    # Combiner, from an empty memory).
    stream.reset()
    stream.append(*snippet(x, 0, stream))
    np.testing.assert_allclose(
        to_numpy(stream.av_latents), offline[:, :m], atol=1e-4
    )
    if keras.config.backend() != "torch":
        # Compiled once for every snippet, before and after the reset
        # (torch runs the stream eagerly: nothing is traced).
        assert stream.traces == 1


def test_generate_equals_generate_on_the_same_prefix(lms):
    lm, config = lms["ttm"]
    x = random_inputs(config, batch_size=1)
    prompt = "what colour is on screen now?"
    stream = lm.stream()
    for t in range(2):
        stream.append(*snippet(x, t, stream))
    # Two snippets of four: the text must read those two only.
    short = prefix_lm(lm, config, 2)
    frames = stream.frames_per_snippet * 2
    samples = stream.samples_per_snippet * 2
    expected = short.generate(
        {
            "video": x["video"][0, :frames],
            "audio": x["audio"][0, :samples],
            "prompts": prompt,
        },
        max_length=10,
        stop_token_ids=None,
    )
    assert stream.generate(prompt, max_length=10, stop_token_ids=None) == (
        expected
    )


def test_a_snippet_out_of_the_window_is_no_longer_read(lms):
    # One time-aligned block: deeper, a cached snippet's keys carry what it
    # read of the snippets before it when it arrived (see MirasolStream).
    lm, config = lms["one_block"]
    x = random_inputs(config, batch_size=1)
    changed = {k: v.copy() for k, v in x.items()}
    changed["video"][:, :2] = 1.0 - changed["video"][:, :2]  # snippet 0
    streams = []
    for clip in (x, changed):
        stream = lm.stream(window=2)
        latents = [
            to_numpy(stream.append(*snippet(clip, t, stream))) for t in range(4)
        ]
        streams.append((stream, latents))
    (a, latents_a), (b, latents_b) = streams
    m = a.tokens_per_snippet
    assert a.num_in_window == 2
    assert to_numpy(a.av_latents).shape == (1, 2 * m, config["av_hidden_dim"])
    # Snippet 1 attends to snippet 0; snippets 2 and 3, with a window of
    # two, no longer do.
    assert np.abs(latents_a[1] - latents_b[1]).max() > 1e-3
    np.testing.assert_allclose(latents_a[2], latents_b[2], atol=1e-5)
    np.testing.assert_allclose(latents_a[3], latents_b[3], atol=1e-5)
    # The window, oldest first: snippets 2 and 3.
    np.testing.assert_allclose(
        to_numpy(a.av_latents),
        np.concatenate([latents_a[2], latents_a[3]], axis=1),
        atol=1e-6,
    )


def test_bad_snippets_and_an_empty_stream_say_what_is_wrong(lms):
    lm, config = lms["transformer"]
    x = random_inputs(config, batch_size=1)
    stream = MirasolStream(lm)
    with pytest.raises(ValueError, match="append at least one snippet"):
        stream.generate("what?")
    video, audio = snippet(x, 0, stream)
    with pytest.raises(ValueError, match=r"one snippet's frames \(1, 2, 16"):
        stream.append(x["video"], audio)  # the whole clip
    with pytest.raises(ValueError, match="takes audio"):
        stream.append(video)
    with pytest.raises(ValueError, match=r"\(1, 2000\)"):
        stream.append(video, audio[:, :100])
    with pytest.raises(ValueError, match="window"):
        lm.stream(window=0)
    # Nothing bad was appended.
    assert stream.num_appended == 0
    # Frames of another size are resized to the model's; uint8 frames
    # are scaled to [0, 1], as the preprocessor does.
    big = np.repeat(np.repeat(video, 2, axis=2), 2, axis=3)
    assert to_numpy(stream.append(big, audio)).shape[1] == 2
    pixels = np.round(video * 255).astype("uint8")
    stream.reset()
    from_uint8 = to_numpy(stream.append(pixels, audio))
    stream.reset()
    from_float = to_numpy(stream.append(pixels / np.float32(255), audio))
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)
