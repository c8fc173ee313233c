import numpy as np

from keras_mirasol.layers import block_causal_mask
from tests.conftest import to_numpy


def test_mask_lets_each_snippet_see_itself_and_the_past():
    mask = to_numpy(block_causal_mask(3, 2))
    assert mask.shape == (6, 6)
    for q in range(6):
        for k in range(6):
            assert mask[q, k] == (k // 2 <= q // 2)


def test_mask_for_a_streamed_suffix_matches_the_full_mask_rows():
    full = to_numpy(block_causal_mask(4, 3))
    suffix = to_numpy(block_causal_mask(4, 3, query_offset=2))
    np.testing.assert_array_equal(suffix, full[6:])


def test_batched_mask_broadcasts():
    mask = to_numpy(block_causal_mask(2, 2, batch_size=3))
    assert mask.shape == (3, 4, 4)
    np.testing.assert_array_equal(mask[0], mask[2])
