import numpy as np
import pytest

from keras_mirasol.models import AllTokensCombiner
from keras_mirasol.models import TransformerCombiner
from keras_mirasol.models import TTMCombiner
from tests.conftest import CHANGED
from tests.conftest import UNCHANGED
from tests.conftest import assert_config_round_trip
from tests.conftest import jit
from tests.conftest import to_numpy

KWARGS = dict(
    num_tokens=3, hidden_dim=16, num_layers=1, num_heads=2, intermediate_dim=32
)


def tokens(seed=0, snippets=3):
    rng = np.random.default_rng(seed)
    video = rng.normal(size=(2, snippets, 5, 12)).astype("float32")
    audio = rng.normal(size=(2, snippets, 4, 8)).astype("float32")
    return video, audio


def snippet_change(combiner, video, audio, snippet):
    run = jit(lambda v, a: combiner(v, a))
    changed = video.copy()
    changed[:, snippet] = np.random.normal(size=changed[:, snippet].shape)
    diff = np.abs(to_numpy(run(video, audio)) - to_numpy(run(changed, audio)))
    return diff.max(axis=(0, 2, 3))


@pytest.mark.parametrize("cls", [TransformerCombiner, TTMCombiner])
def test_shape_and_config(cls):
    kwargs = dict(KWARGS, memory_size=4) if cls is TTMCombiner else KWARGS
    combiner = cls(**kwargs, name="combiner")
    video, audio = tokens()
    assert tuple(combiner(video, audio).shape) == (2, 3, 3, 16)
    assert_config_round_trip(combiner)


def test_all_tokens_combiner_keeps_every_token():
    combiner = AllTokensCombiner(**KWARGS, name="combiner")
    video, audio = tokens()
    # 5 video + 4 audio tokens per snippet, all kept; `num_tokens` unused.
    assert tuple(combiner(video, audio).shape) == (2, 3, 9, 16)
    assert_config_round_trip(combiner)
    assert "combiner_tokens" not in {w.name for w in combiner.weights}


@pytest.mark.parametrize("cls", [TransformerCombiner, AllTokensCombiner])
def test_combiner_combines_each_snippet_on_its_own(cls):
    combiner = cls(**KWARGS)
    video, audio = tokens()
    per_snippet = snippet_change(combiner, video, audio, snippet=1)
    assert per_snippet[1] > 1e-4
    np.testing.assert_allclose(per_snippet[[0, 2]], 0.0, atol=UNCHANGED)


def test_combiner_uses_audio():
    combiner = TransformerCombiner(**KWARGS)
    video, audio = tokens()
    a = to_numpy(combiner(video, audio))
    b = to_numpy(combiner(video, audio * 3.0 + 1.0))
    assert not np.allclose(a, b, atol=1e-4)


def test_ttm_memory_carries_forward_not_backward():
    combiner = TTMCombiner(**KWARGS, memory_size=4)
    video, audio = tokens()
    # Snippet 0 reaches snippet 2 only through the memory.
    forward = snippet_change(combiner, video, audio, snippet=0)
    assert forward[0] > CHANGED and forward[2] > CHANGED
    backward = snippet_change(combiner, video, audio, snippet=2)
    np.testing.assert_allclose(backward[[0, 1]], 0.0, atol=UNCHANGED)
    assert backward[2] > 1e-4


def test_ttm_can_resume_from_a_carried_memory():
    # Two calls of 2 snippets with the memory carried equal one call of 4.
    combiner = TTMCombiner(**KWARGS, memory_size=4)
    video, audio = tokens(snippets=4)
    whole = to_numpy(combiner(video, audio))
    first, memory = combiner(video[:, :2], audio[:, :2], return_memory=True)
    second = combiner(video[:, 2:], audio[:, 2:], memory=memory)
    np.testing.assert_allclose(
        np.concatenate([to_numpy(first), to_numpy(second)], axis=1),
        whole,
        atol=1e-5,
    )


def test_video_only_combiner():
    combiner = TTMCombiner(**KWARGS, memory_size=4, use_audio=False)
    video, _ = tokens()
    assert tuple(combiner(video).shape) == (2, 3, 3, 16)
    with pytest.raises(ValueError, match="use_audio=True"):
        TransformerCombiner(**KWARGS)(video)


def test_transformer_combiner_keeps_the_last_m_outputs_of_the_full_stack():
    # The paper's definition, computed the long way: every position through
    # every block, then the last m kept.
    combiner = TransformerCombiner(**KWARGS)
    video, audio = tokens()
    out = to_numpy(combiner(video, audio))
    fused = to_numpy(combiner.fuse(video, audio))
    b, t, n, d = fused.shape
    slots = np.broadcast_to(
        to_numpy(combiner.combiner_tokens), (b * t, combiner.num_tokens, d)
    )
    x = np.concatenate([fused.reshape(b * t, n, d), slots], axis=1)
    full = to_numpy(combiner.transformer(x))[:, -combiner.num_tokens :]
    np.testing.assert_allclose(
        out, full.reshape(out.shape), atol=1e-5, rtol=1e-5
    )
