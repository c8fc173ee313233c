"""Block-causal attention masks for snippet-structured token sequences."""

from keras import ops


def snippet_ids(num_snippets, tokens_per_snippet):
    """Snippet index of every token of a flattened `[T * m]` sequence.

    Args:
        num_snippets: int. The number of snippets `T`.
        tokens_per_snippet: int. The number of tokens `m` per snippet.

    Returns:
        int32 tensor `[T * m]`: `[0, .., 0, 1, .., 1, .., T - 1]`.
    """
    return ops.repeat(
        ops.arange(num_snippets, dtype="int32"), tokens_per_snippet
    )


def block_causal_mask(
    num_snippets, tokens_per_snippet, query_offset=0, batch_size=None
):
    """Mask where a token of snippet `t` sees every token of snippets `<= t`.

    Args:
        num_snippets: int. Number of snippets `T` covered by the keys.
        tokens_per_snippet: int. Tokens `m` per snippet.
        query_offset: int. Index of the first query snippet, for queries
            that are a suffix of the keys (streaming with a cache).
            Defaults to `0`.
        batch_size: int or None. When given, the mask is broadcast to
            `[batch_size, Q, K]`. Defaults to `None`.

    Returns:
        bool tensor `[Q, K]` (or `[B, Q, K]`) with
        `K = num_snippets * tokens_per_snippet` and
        `Q = (num_snippets - query_offset) * tokens_per_snippet`.
    """
    key_snippets = snippet_ids(num_snippets, tokens_per_snippet)
    query_snippets = key_snippets[query_offset * tokens_per_snippet :]
    mask = ops.expand_dims(query_snippets, 1) >= ops.expand_dims(
        key_snippets, 0
    )
    if batch_size is not None:
        mask = ops.broadcast_to(
            ops.expand_dims(mask, 0), (batch_size,) + tuple(mask.shape)
        )
    return mask
