"""A stack of pre-norm transformer encoder blocks with a final norm."""

import contextlib
import functools

import keras
import keras_hub
from keras import ops

# `unroll` of the loops over snippets (`map_snippets`, the TTM Combiner):
# 1 (a loop) except inside `unrolled_snippet_loops()`.
_SNIPPET_LOOP_UNROLL = [1]

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
# erf(x) ~ x P(x^2) / Q(x^2) on [-4, 4]: the rational approximation of
# float32 erf that Eigen and XLA use (within 1e-6 of erf; erf(4) is 1 in
# float32). Highest power first.
_ERF_P = (
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_Q = (
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


@contextlib.contextmanager
def unrolled_snippet_loops():
    """Trace the loops over snippets fully unrolled while inside.

    For counting FLOPs: XLA's cost analysis counts a loop's body once, not
    once per snippet. The unrolled program computes the same.
    """
    _SNIPPET_LOOP_UNROLL.append(True)
    try:
        yield
    finally:
        _SNIPPET_LOOP_UNROLL.pop()


def scan_snippets(step, init, snippets):
    """`keras.ops.scan` over the leading (snippet) axis of `snippets`.

    Args:
        step: function `(carry, snippet) -> (carry, output)`.
        init: the first carry.
        snippets: float `[T, ...]`.

    Returns:
        `(last carry, outputs [T, ...])`.
    """
    if keras.backend.backend() == "tensorflow":
        # Keras's TensorFlow `scan` needs outputs shaped like the carry;
        # a loop unrolled in the graph computes the same.
        carry, outputs = init, []
        for t in range(snippets.shape[0]):
            carry, output = step(carry, snippets[t])
            outputs.append(output)
        return carry, ops.stack(outputs)
    return ops.scan(step, init, snippets, unroll=_SNIPPET_LOOP_UNROLL[-1])


def pre_norm_blocks(
    block_class,
    num_layers,
    num_heads,
    intermediate_dim,
    dropout,
    layer_norm_epsilon,
    dtype,
    activation="gelu",
):
    """`num_layers` pre-norm keras-hub transformer blocks.

    Args:
        block_class: `keras_hub.layers.TransformerEncoder` or
            `keras_hub.layers.TransformerDecoder` (the latter takes
            key/value caches and optional cross-attention).
        num_layers, num_heads, intermediate_dim: int. Block sizes.
        dropout, layer_norm_epsilon: float.
        dtype: the owner's dtype policy.
        activation: str. MLP activation. Defaults to `"gelu"`.

    Returns:
        A list of blocks named `transformer_layer_{i}`.
    """
    return [
        block_class(
            intermediate_dim=intermediate_dim,
            num_heads=num_heads,
            dropout=dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=True,
            dtype=dtype,
            name=f"transformer_layer_{i}",
        )
        for i in range(num_layers)
    ]


def remat_call(fn, *inputs, remat=False):
    """`fn(*inputs)`, recomputed in the backward pass if `remat`.

    Every tensor the gradient must reach has to be one of `inputs`:
    TensorFlow's remat (`tf.recompute_grad`) gives no gradient to a
    tensor that `fn` only closes over. Masks and flags may be closed over.

    Args:
        fn: function of the tensors `inputs`.
        *inputs: tensors.
        remat: bool. Defaults to `False`.

    Returns:
        `fn`'s output.
    """
    return keras.remat(fn)(*inputs) if remat else fn(*inputs)


def encode_snippets(fn, x, num_snippets, remat=False):
    """`fn(x)`; with `remat`, one snippet at a time and recomputed.

    With `remat` (and more than one snippet), `fn` runs under
    `keras.remat` in `map_snippets`' loop, so the backward pass holds one
    snippet's activations of `fn` at a time.

    Args:
        fn: function of `[B * T, ...]` snippets, clip-major, returning
            `[B * T, n, D]`.
        x: `[B * T, ...]`.
        num_snippets: int. `T`.
        remat: bool. Defaults to `False`.

    Returns:
        float `[B * T, n, D]`.
    """
    if remat and num_snippets > 1:
        return map_snippets(keras.remat(fn), x, num_snippets)
    return fn(x)


def map_snippets(fn, tokens, num_snippets):
    """`fn` on one snippet of every clip at a time, in a loop over snippets.

    The form that makes rematerialisation bound memory: the loop
    (`keras.ops.scan`) keeps what `fn` saves for the backward pass per
    snippet, and its backward pass runs the snippets one after another,
    so with `fn`'s blocks under `keras.remat` the activations alive at
    once are one snippet's, whatever the clip length and however the
    compiler orders the work (an unrolled program leaves the recomputation
    free to be scheduled early, which keeps everything alive again). On
    JAX and torch; on TensorFlow, `fn` runs on all snippets at once.

    Args:
        fn: function of float `[B, n, D]`, returning `[B, n', D']`.
        tokens: float `[B * T, n, D]`, clip-major (row `b * T + t` is
            snippet `t` of clip `b`).
        num_snippets: int. `T`.

    Returns:
        float `[B * T, n', D']`, in the order of `tokens`.
    """
    if keras.backend.backend() == "tensorflow":
        # No loop on TensorFlow (see `scan_snippets`): `fn` on every snippet
        # at once; its blocks' own remat (`tf.recompute_grad`) still holds.
        return fn(tokens)
    x = ops.reshape(tokens, (-1, num_snippets, *tokens.shape[1:]))
    x = ops.moveaxis(x, 1, 0)

    def step(carry, snippet):
        return carry, fn(snippet)

    _, y = scan_snippets(step, ops.zeros((), "int32"), x)
    y = ops.moveaxis(y, 0, 1)
    return ops.reshape(y, (-1, *y.shape[2:]))


def rows_matmul(dense, rows, out_dim):
    """An `EinsumDense` projection of token rows as one 2-D product.

    Args:
        dense: a built `keras.layers.EinsumDense` whose kernel's first
            axes contract the input features (`[D, N, H]`, `[N, H, D]`,
            or a tubelet's `[t, p, p, C, D]`).
        rows: float `[R, K]`, where `K` is the product of those axes.
        out_dim: int. Product of the kernel's other axes.

    Returns:
        float `[R, out_dim]`.
    """
    kernel = _as_dtype(dense.kernel, rows.dtype)
    if len(kernel.shape) != 2:  # a `Dense` kernel is a matrix already
        kernel = ops.reshape(kernel, (-1, out_dim))
    y = ops.matmul(rows, kernel)
    if dense.bias is not None:
        bias = _as_dtype(dense.bias, rows.dtype)
        if len(bias.shape) != 1:
            bias = ops.reshape(bias, (out_dim,))
        y = y + bias
    return y


# Eager backends (torch) pay for every `keras.ops` call and Keras layer
# call, per decoded token: `ops.reshape` about 30 us, a layer's `__call__`
# about 125 us more than its `call`, against 7 us for a decoding step's
# product. The helpers below skip the calls that would change nothing;
# the compiled backends trace the same operations either way.


def _as_dtype(x, dtype):
    """`ops.cast(x, dtype)`, or `x` (a variable's value) if of `dtype`."""
    if isinstance(x, keras.Variable):
        x = x.value
    if keras.backend.standardize_dtype(
        x.dtype
    ) == keras.backend.standardize_dtype(dtype):
        return x
    return ops.cast(x, dtype)


def _layer_norm(layer, x):
    """`layer(x)` for a block's `keras.layers.LayerNormalization`.

    Its `call` without Keras' `__call__` bookkeeping: the layer takes no
    mask or training flag and does not autocast its input, so the call
    alone computes the same. Through `__call__` where a `keras.RematScope`
    gave the layer a remat mode, which only `__call__` applies.
    """
    if getattr(layer, "_remat_mode", None) is not None:
        return layer(x)
    return layer.call(x)


def has_float_kernel(dense):
    """Whether `dense`'s kernel is a float matrix (not quantized)."""
    return getattr(dense, "quantization_mode", None) is None


def _polynomial(coefficients, x):
    y = coefficients[0]
    for c in coefficients[1:]:
        y = ops.add(ops.multiply(y, x), c)
    return y


def _erf(x):
    """float32 `erf(x)` from multiplications, additions and a division."""
    x = ops.clip(x, -4.0, 4.0)
    x2 = ops.square(x)
    return ops.divide(
        ops.multiply(x, _polynomial(_ERF_P, x2)), _polynomial(_ERF_Q, x2)
    )


def exact_gelu(x):
    """Keras' exact GELU, `x (1 + erf(x / sqrt(2))) / 2`, export-safe.

    The same function as `keras.activations.gelu(x)` (within 1e-6 in
    float32), computed in float32 through `_erf`'s rational approximation,
    with the exact gradient `Phi(x) + x phi(x)` (`phi` the standard normal
    density). Why: JAX's `gelu` goes through `erfc`, whose expansion XLA's
    CPU compiler runs 3-5x slower forward than this; `ops.erf` itself
    becomes `chlo.erf`, which TensorFlow cannot read back from a
    SavedModel exported from JAX. This uses only elementwise arithmetic
    (and `exp` in the gradient).

    Args:
        x: float tensor.

    Returns:
        A tensor of `x`'s shape and dtype.
    """

    def cdf(x):
        return ops.multiply(0.5, ops.add(1.0, _erf(x * _SQRT_HALF)))

    @ops.custom_gradient
    def gelu(x):
        dtype = x.dtype

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            # From `x` alone: the backward pass keeps only the input.
            x32 = ops.cast(x, "float32")
            pdf = ops.multiply(
                ops.exp(ops.multiply(-0.5, ops.square(x32))), _INV_SQRT_2PI
            )
            slope = ops.add(cdf(x32), ops.multiply(x32, pdf))
            return ops.cast(
                ops.multiply(ops.cast(upstream, "float32"), slope), dtype
            )

        x32 = ops.cast(x, "float32")
        return ops.cast(ops.multiply(x32, cdf(x32)), dtype), grad

    return gelu(x)


def _mlp_intermediate(dense, rows):
    """A block's first MLP projection and its activation, on token rows.

    The layer's own function on a 2-D product (`rows_matmul`), without a
    Keras layer call per projection (on torch, which runs eagerly, each
    such call costs more than a decoding step's product). On JAX,
    Keras' exact GELU (`"gelu"`) is `exact_gelu`: the same function, 3-5x
    faster forward than JAX's own on XLA's CPU compiler. Quantized kernels
    go through the layer's own call.

    Args:
        dense: the block's built `keras.layers.Dense`
            (`_feedforward_intermediate_dense`).
        rows: float `[R, D]`.

    Returns:
        float `[R, intermediate_dim]`.
    """
    if (
        keras.backend.backend() == "jax"
        and dense.activation is keras.activations.gelu
        and has_float_kernel(dense)
    ):
        rows = _as_dtype(rows, dense.compute_dtype)
        return exact_gelu(rows_matmul(dense, rows, dense.units))
    return _dense_rows(dense, rows)


def _dense_rows(dense, rows):
    """`dense(rows)` on token rows `[R, D]`, without the layer call.

    One 2-D product (`rows_matmul`) and the layer's activation; quantized
    kernels go through the layer's own call.
    """
    if not has_float_kernel(dense):
        return dense(rows)
    rows = _as_dtype(rows, dense.compute_dtype)
    return dense.activation(rows_matmul(dense, rows, dense.units))


def _dropout(layer, x, training):
    """`layer(x, training=training)`; `x` itself when the rate is 0.

    A dropout of rate 0 is the identity in training too: skipping its
    layer call keeps eager decoding (torch) from paying for it per token.
    """
    if layer.rate == 0:
        return x
    return layer(x, training=training)


def _to_heads(dense, x):
    """A query, key or value projection: `[B, S, D]` to `[B, S, N, H]`.

    On token rows (one 2-D product) unless the kernel is quantized, which
    only the layer's own call applies.
    """
    if not has_float_kernel(dense):
        return dense(x)
    num_heads, head_dim = dense.kernel.shape[1:]
    rows = ops.reshape(x, (-1, x.shape[-1]))
    y = rows_matmul(dense, rows, num_heads * head_dim)
    # `ops.shape`: the length may be known only at run time (a SavedModel
    # scoring any text length).
    return ops.reshape(y, (-1, ops.shape(x)[1], num_heads, head_dim))


def project_keys_values(attention, x):
    """The keys and values `attention` computes from `x`.

    Args:
        attention: a built `keras.layers.MultiHeadAttention` (or keras-hub
            `CachedMultiHeadAttention`).
        x: float `[B, S, D]`.

    Returns:
        `(key, value)`, float `[B, S, heads, head_dim]` each.
    """
    return (
        _to_heads(attention._key_dense, x),
        _to_heads(attention._value_dense, x),
    )


def _attend(attention, query, keys_values, attention_mask, training):
    """`attention`'s output for `query` over given keys and values.

    What `attention(query=..., value=...)` computes after its key and
    value projections: the query projection, Keras' own
    `_compute_attention`, the gate if any, the output projection. The
    projections of plain kernels are 2-D products of token rows; only
    the attention itself sees `[B, Q, heads, head_dim]`.

    Args:
        attention: a built `keras.layers.MultiHeadAttention` (or keras-hub
            `CachedMultiHeadAttention`).
        query: float `[B, Q, D]`.
        keys_values: `(key, value)`, float `[B, S, heads, head_dim]`.
        attention_mask: optional bool `[B, Q, S]` (or `[B, 1, S]`).
        training: bool or None.

    Returns:
        float `[B * Q, D]`, the attention output as token rows.
    """
    dim = query.shape[-1]
    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
    h, _ = attention._compute_attention(
        _to_heads(attention._query_dense, query),
        *keys_values,
        attention_mask=attention_mask,
        training=training,
    )
    if getattr(attention, "_use_gate", False):
        h = ops.multiply(h, attention._gate_dense(query))
    output = attention._output_dense
    if not has_float_kernel(output):
        return ops.reshape(output(h), (-1, dim))
    rows = ops.reshape(h, (-1, h.shape[-2] * h.shape[-1]))
    return rows_matmul(output, rows, dim)


def swap_slots_and_heads(cache):
    """A key or value cache between keras-hub's layout and the heads-first one.

    Swaps the slot and head axes: `[..., S, heads, head_dim]` (keras-hub's
    caches) to `[..., heads, S, head_dim]` (`KeyValueCaches`'), and back
    again.

    Args:
        cache: float `[..., S, heads, head_dim]` or `[..., heads, S,
            head_dim]`.

    Returns:
        The same values with the two axes swapped.
    """
    return ops.swapaxes(cache, -3, -2)


def empty_key_value_caches(batch_size, layers, heads, slots, head_dim, dtype):
    """Zero key/value caches of a stack of blocks, for `KeyValueCaches`.

    Args:
        batch_size: int or int tensor.
        layers: int. Blocks.
        heads: int. Attention heads.
        slots: int or int tensor. Token slots `S` per block.
        head_dim: int.
        dtype: str. The cache dtype.

    Returns:
        tuple of `layers` pairs `(key, value)`, float `[B, heads, S,
        head_dim]` each.
    """
    shape = (batch_size, heads, slots, head_dim)
    return tuple(
        (ops.zeros(shape, dtype=dtype), ops.zeros(shape, dtype=dtype))
        for _ in range(layers)
    )


class KeyValueCaches:
    """Key/value caches of a stack of blocks, updated in place.

    Holds one key and one value cache per block, `[B, heads, S, head_dim]`
    each (`empty_key_value_caches`): heads first, so that the attention's
    products over a cache (batched over `B` and the heads) read it as it
    lies, and one array each, so that a block reads its caches without
    copying them out of a larger one. In keras-hub's layout, a block's
    `[B, 2, S, heads, head_dim]` and stacked over the blocks, XLA copied
    every block's whole caches for every new token before those products
    (transposed, or sliced out of the stack), copies that grow with the
    cache. `writer(layer, attention)` gives `pre_norm_block` its
    `keys_values`: the new tokens' keys and values are written into the
    block's caches with `ops.slice_update`, done in place by XLA on the
    loop-carried buffers, and the block attends to them
    (docs/performance.md).

    Args:
        caches: tuple of pairs `(key, value)`, float `[B, heads, S,
            head_dim]` each, one pair per block.
        index: int or int tensor. Slot of the first new token.
    """

    def __init__(self, caches, index):
        self.caches = tuple(tuple(pair) for pair in caches)
        self.index = index

    def writer(self, layer, attention):
        """`pre_norm_block`'s `keys_values` for one block.

        Args:
            layer: int. The block's index in the stack.
            attention: the block's self-attention layer, whose key and
                value projections give the new keys and values.

        Returns:
            A function of the block's normed input `[B, l, D]` that writes
            its keys and values at slots `[index, index + l)` of the
            block's caches and returns the block's whole `(key, value)`
            caches, `[B, S, heads, head_dim]` each (views that XLA folds
            into the attention's products, not copies).
        """

        def keys_values(normed):
            written = tuple(
                ops.slice_update(
                    cache,
                    [0, 0, self.index, 0],
                    _as_dtype(swap_slots_and_heads(new), cache.dtype),
                )
                for cache, new in zip(
                    self.caches[layer], project_keys_values(attention, normed)
                )
            )
            self.caches = (
                self.caches[:layer] + (written,) + self.caches[layer + 1 :]
            )
            return tuple(swap_slots_and_heads(cache) for cache in written)

        return keys_values


def pre_norm_block(
    block,
    x,
    attention_mask=None,
    training=None,
    keep_last=None,
    encoder_sequence=None,
    cross_attention_mask=None,
    keys_values=None,
    encoder_keys_values=None,
):
    """A pre-norm keras-hub transformer block, computed on token rows.

    For a `TransformerEncoder`, equal to `block(x, attention_mask=...,
    training=...)` (and, with `keep_last`, to its `[:, -keep_last:]`
    slice); for a `TransformerDecoder`, to `block(x, encoder_sequence,
    decoder_attention_mask=attention_mask,
    encoder_attention_mask=cross_attention_mask, use_causal_mask=False,
    training=...)`, and with caches (`keys_values`, `encoder_keys_values`)
    to the block's cached call: the same sublayers and weights. Every
    projection (query, key, value, attention output, MLP) is one 2-D
    matrix product of the `[B * S, D]` token rows with the kernel
    reshaped to a matrix; only the attention itself sees
    `[B, S, heads, head_dim]`. XLA then needs no transposed copy of the
    activation gradient before each weight gradient, which the einsums of
    `keras.layers.MultiHeadAttention` on `[B, S, D]` cost on the CPU
    (docs/performance.md). With `keep_last`, the attention queries,
    residuals and MLP are computed at the kept positions alone (their keys
    and values still come from every position).

    Args:
        block: a built pre-norm `keras_hub.layers.TransformerEncoder` or
            `keras_hub.layers.TransformerDecoder`.
        x: float `[B, S, D]`.
        attention_mask: optional bool `[B, S', S_kv]` (`S' = keep_last`
            when given, else `S`; `S_kv = S` without `keys_values`), the
            whole self-attention mask (a decoder's causal mask included).
            Defaults to `None`.
        training: bool or None. Defaults to `None`.
        keep_last: int or None. Defaults to `None`.
        encoder_sequence: float `[B, S_e, D_e]`, what a decoder block
            with cross-attention attends to; `None` for other blocks, or
            with `encoder_keys_values`. Defaults to `None`.
        cross_attention_mask: optional bool `[B, S', S_e]` or
            `[B, 1, S_e]`. Defaults to `None`.
        keys_values: optional function of the block's normed input
            `[B, S, D]` returning the self-attention's `(key, value)`,
            `[B, S_kv, heads, head_dim]` each: a cache holding this
            call's keys and values (`KeyValueCaches.writer`).
            Defaults to `None` (the keys and values of `x` alone).
        encoder_keys_values: optional `(key, value)`, float
            `[B, S_e, heads, head_dim]`: the cross-attention's keys and
            values of the encoder sequence, computed once (a cache).
            Defaults to `None`.

    Returns:
        float `[B, S, D]`, or `[B, keep_last, D]`.
    """
    # keras-hub's blocks keep their sublayers under private names (they
    # have no public accessors); `MultiHeadAttention`'s
    # `_compute_attention` is the attention between its projections.
    # tests/layers/test_transformer_stack.py checks the result against the
    # blocks' own calls.
    cross = getattr(block, "_cross_attention_layer", None)
    has_encoder = not (encoder_sequence is None and encoder_keys_values is None)
    if (cross is None) == has_encoder:
        raise ValueError(
            f"Block '{block.name}' was built "
            f"{'without' if cross is None else 'with'} cross-attention; "
            "pass `encoder_sequence` (or `encoder_keys_values`) exactly "
            "when it has one."
        )
    x = _as_dtype(x, block.compute_dtype)  # as the block's own call does
    dim = x.shape[-1]
    normed = _layer_norm(block._self_attention_layer_norm, x)
    query, residual = normed, x
    if keep_last is not None:
        query, residual = normed[:, -keep_last:, :], x[:, -keep_last:, :]
    num_queries = ops.shape(query)[1]  # maybe a tensor, as in `_to_heads`
    attention = block._self_attention_layer
    if keys_values is None:
        keys_values = functools.partial(project_keys_values, attention)
    h = _attend(attention, query, keys_values(normed), attention_mask, training)
    h = _dropout(block._self_attention_dropout, h, training)
    h = h + ops.reshape(residual, (-1, dim))
    if cross is not None:
        if encoder_keys_values is None:
            encoder_sequence = ops.cast(encoder_sequence, block.compute_dtype)
            encoder_keys_values = project_keys_values(cross, encoder_sequence)
        y = _layer_norm(block._cross_attention_layer_norm, h)
        y = _attend(
            cross,
            ops.reshape(y, (-1, num_queries, dim)),
            encoder_keys_values,
            cross_attention_mask,
            training,
        )
        h = _dropout(block._cross_attention_dropout, y, training) + h
    y = _layer_norm(block._feedforward_layer_norm, h)
    y = _mlp_intermediate(block._feedforward_intermediate_dense, y)
    y = _dense_rows(block._feedforward_output_dense, y)
    y = _dropout(block._feedforward_dropout, y, training) + h
    return ops.reshape(y, (-1, num_queries, dim))


def remat_block(block, x, remat=False, **kwargs):
    """`pre_norm_block(block, x, **kwargs)`, recomputed if `remat`.

    The keyword arguments (masks, flags, `training`) are closed over, so
    no gradient reaches a tensor among them on TensorFlow (`remat_call`):
    for self-attention blocks, whose only differentiable input is `x`.

    Args:
        block: a built pre-norm keras-hub transformer block.
        x: float `[B, S, D]`.
        remat: bool. Defaults to `False`.
        **kwargs: `pre_norm_block`'s other arguments.

    Returns:
        `pre_norm_block`'s output.
    """
    return remat_call(
        functools.partial(pre_norm_block, block, **kwargs), x, remat=remat
    )


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TransformerStack(keras.layers.Layer):
    """`num_layers` pre-norm `keras_hub.layers.TransformerEncoder` blocks.

    The encoders of both modalities, the Combiners and the TTM's process
    step all use this stack. Each block runs as `pre_norm_block`: the
    keras-hub block's own sublayers and weights, its projections computed
    on token rows. Blocks are named `transformer_layer_{i}` and
    the final norm `final_norm`, so variable paths read as
    `video_encoder/transformer/transformer_layer_0/self_attention/...`.

    Args:
        num_layers: int. Number of blocks.
        num_heads: int. Attention heads per block.
        intermediate_dim: int. Width of each block's MLP.
        dropout: float. Dropout rate, active only in training.
            Defaults to `0.0`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        activation: str. MLP activation. Defaults to `"gelu"`.
        remat: bool. Recompute each block's activations in the backward
            pass instead of keeping them (`remat_block`). Defaults to
            `False`.

    Call arguments:
        inputs: float `[B, S, D]`.
        attention_mask: optional bool `[B, S, S]`; `True` where a query may
            attend to a key.
        training: bool or None.
        keep_last: int or None. Return only the last `keep_last`
            positions, `call(inputs)[:, -keep_last:]`, computing the last
            block for those queries alone (its keys and values still come
            from every position): a Combiner keeps only its `m` slots, so
            the last block's attention queries and MLP for the other
            tokens would be thrown away.

    Returns:
        float `[B, S, D]`, or `[B, keep_last, D]`.
    """

    def __init__(
        self,
        num_layers,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        layer_norm_epsilon=1e-6,
        activation="gelu",
        remat=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.remat = remat
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_dim = intermediate_dim
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.activation = activation
        self.blocks = pre_norm_blocks(
            keras_hub.layers.TransformerEncoder,
            num_layers,
            num_heads,
            intermediate_dim,
            dropout,
            layer_norm_epsilon,
            self.dtype_policy,
            activation=activation,
        )
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="final_norm",
        )

    def build(self, inputs_shape):
        hidden_dim = inputs_shape[-1]
        if hidden_dim % self.num_heads:
            raise ValueError(
                f"Layer '{self.name}': width {hidden_dim} is not divisible "
                f"by num_heads={self.num_heads}. Change the hidden dim or "
                "the number of heads of this component."
            )
        for block in self.blocks:
            block.build(inputs_shape)
        self.final_norm.build(inputs_shape)
        self.built = True

    def call(self, inputs, attention_mask=None, training=None, keep_last=None):
        x = inputs
        for i, block in enumerate(self.blocks):
            last = keep_last if i == len(self.blocks) - 1 else None
            mask = attention_mask
            if last is not None and mask is not None:
                mask = mask[:, -last:, :]
            x = remat_block(
                block,
                x,
                remat=self.remat,
                attention_mask=mask,
                training=training,
                keep_last=last,
            )
        return self.final_norm(x)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_dim": self.intermediate_dim,
                "dropout": self.dropout,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "activation": self.activation,
                "remat": self.remat,
            }
        )
        return config
