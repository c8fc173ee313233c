"""A stack of pre-norm transformer encoder blocks with a final norm."""

import contextlib
import functools

import keras
import keras_hub
from keras import ops

# `unroll` of the loops over snippets (`map_snippets`, the TTM Combiner):
# 1 (a loop) except inside `unrolled_snippet_loops()`.
_SNIPPET_LOOP_UNROLL = [1]


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


def call_block(block, x, remat=False, **kwargs):
    """`block(x, **kwargs)`, recomputed in the backward pass if `remat`.

    With `remat`, the block's activations are not kept for the backward
    pass but computed again from `x` (`keras.remat`: `jax.checkpoint`,
    `tf.recompute_grad`, torch's checkpoint): less memory, one more
    forward pass of the block. The keyword arguments (masks, flags,
    `training`) are bound in a closure, so Python values among them stay
    Python values (`jax.checkpoint` would trace a `use_causal_mask=False`).

    Args:
        block: a keras-hub transformer block.
        x: float `[B, S, D]`.
        remat: bool. Defaults to `False`.
        **kwargs: the block's call arguments.

    Returns:
        the block's output.
    """
    return remat_call(lambda inputs: block(inputs, **kwargs), x, remat=remat)


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


def _on_token_rows(block):
    """Whether `pre_norm_block` can compute `block` on token rows.

    A block whose attention projections are plain (not quantized, no
    gate): their kernels are read and multiplied as matrices.
    """
    attention = block._self_attention_layer
    denses = (
        attention._query_dense,
        attention._key_dense,
        attention._value_dense,
        attention._output_dense,
    )
    if getattr(attention, "_use_gate", False):
        return False
    return all(getattr(d, "quantization_mode", None) is None for d in denses)


def _rows_matmul(dense, rows, out_dim):
    """An `EinsumDense` projection of token rows as one 2-D product.

    Args:
        dense: a built `keras.layers.EinsumDense` whose kernel's first
            axes contract the input features (`[D, N, H]` or `[N, H, D]`).
        rows: float `[R, K]`, where `K` is the product of those axes.
        out_dim: int. Product of the kernel's other axes.

    Returns:
        float `[R, out_dim]`.
    """
    kernel = ops.cast(dense.kernel, rows.dtype)
    y = ops.matmul(rows, ops.reshape(kernel, (-1, out_dim)))
    if dense.bias is not None:
        y = y + ops.reshape(ops.cast(dense.bias, rows.dtype), (out_dim,))
    return y


def _attention_on_rows(attention, query, value, attention_mask, training):
    """`attention(query=query, value=value)` with every projection on rows.

    Args:
        attention: a built `keras.layers.MultiHeadAttention` that
            `_on_token_rows` accepts.
        query: float `[B, Q, D]`.
        value: float `[B, S, D]`, also the keys.
        attention_mask: optional bool `[B, Q, S]`.
        training: bool or None.

    Returns:
        float `[B * Q, D]`, the attention output as token rows.
    """
    dim = query.shape[-1]
    num_heads, head_dim = attention._query_dense.kernel.shape[1:]
    inner = num_heads * head_dim

    def heads(dense, x):
        y = _rows_matmul(dense, ops.reshape(x, (-1, dim)), inner)
        return ops.reshape(y, (-1, x.shape[1], num_heads, head_dim))

    if attention_mask is not None:
        attention_mask = ops.cast(attention_mask, "bool")
    h, _ = attention._compute_attention(
        heads(attention._query_dense, query),
        heads(attention._key_dense, value),
        heads(attention._value_dense, value),
        attention_mask=attention_mask,
        training=training,
    )
    return _rows_matmul(
        attention._output_dense, ops.reshape(h, (-1, inner)), dim
    )


def _residual_and_mlp(block, h, residual, training):
    """The block after its attention: dropout, residual, the MLP half.

    Any leading shape: `[B, Q, D]`, or token rows `[B * Q, D]`.
    """
    h = block._self_attention_dropout(h, training=training) + residual
    y = block._feedforward_layer_norm(h)
    y = block._feedforward_intermediate_dense(y)
    y = block._feedforward_output_dense(y)
    return block._feedforward_dropout(y, training=training) + h


def pre_norm_block(
    block, x, attention_mask=None, training=None, keep_last=None
):
    """A pre-norm `TransformerEncoder` block, computed on token rows.

    Equal to `block(x, attention_mask=..., training=...)` (and, with
    `keep_last`, to its `[:, -keep_last:]` slice): the same sublayers and
    weights. Every projection (query, key, value, attention output, MLP)
    is one 2-D matrix product of the `[B * S, D]` token rows with the
    kernel reshaped to a matrix; only the attention itself sees
    `[B, S, heads, head_dim]`. XLA then needs no transposed copy of the
    activation gradient before each weight gradient, which the einsums
    of `keras.layers.MultiHeadAttention` on `[B, S, D]` cost on the CPU
    (README, Performance). With `keep_last`, the attention queries,
    residuals and MLP are computed at the kept positions alone (their keys
    and values still come from every position).

    Args:
        block: a built pre-norm `keras_hub.layers.TransformerEncoder`.
        x: float `[B, S, D]`.
        attention_mask: optional bool `[B, S', S]` (`S' = keep_last` when
            given, else `S`). Defaults to `None`.
        training: bool or None. Defaults to `None`.
        keep_last: int or None. Defaults to `None`.

    Returns:
        float `[B, S, D]`, or `[B, keep_last, D]`.
    """
    # keras-hub's `TransformerEncoder` keeps its sublayers under private
    # names (it has no public accessors); `MultiHeadAttention`'s
    # `_compute_attention` is the attention between its projections.
    # tests/layers/test_transformer_stack.py checks the result against the
    # block's own call.
    x = ops.cast(x, block.compute_dtype)  # as the block's own call does
    normed = block._self_attention_layer_norm(x)
    query, residual = normed, x
    if keep_last is not None:
        query, residual = normed[:, -keep_last:, :], x[:, -keep_last:, :]
    attention = block._self_attention_layer
    if not _on_token_rows(block):
        # A quantized or gated attention applies its own kernels.
        h = attention(
            query=query,
            value=normed,
            attention_mask=attention_mask,
            training=training,
        )
        return _residual_and_mlp(block, h, residual, training)
    dim = x.shape[-1]
    h = _attention_on_rows(attention, query, normed, attention_mask, training)
    y = _residual_and_mlp(block, h, ops.reshape(residual, (-1, dim)), training)
    return ops.reshape(y, (-1, query.shape[1], dim))


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
            pass instead of keeping them (`remat_call`). Defaults to
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
            x = remat_call(
                functools.partial(
                    pre_norm_block,
                    block,
                    attention_mask=mask,
                    training=training,
                    keep_last=last,
                ),
                x,
                remat=self.remat,
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
