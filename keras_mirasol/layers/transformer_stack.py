"""A stack of pre-norm transformer encoder blocks with a final norm."""

import contextlib

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


def _block_for_last_queries(block, x, keep_last, attention_mask, training):
    """A pre-norm `TransformerEncoder` block's output at the last positions.

    Equal to `block(x)[:, -keep_last:]`: the same sublayers and weights,
    with attention queries, residuals and MLP only at the kept positions.

    Args:
        block: a built pre-norm `keras_hub.layers.TransformerEncoder`.
        x: float `[B, S, D]`.
        keep_last: int.
        attention_mask: optional bool `[B, keep_last, S]`.
        training: bool or None.

    Returns:
        float `[B, keep_last, D]`.
    """
    normed = block._self_attention_layer_norm(x)
    h = block._self_attention_layer(
        query=normed[:, -keep_last:, :],
        value=normed,
        attention_mask=attention_mask,
        training=training,
    )
    h = block._self_attention_dropout(h, training=training)
    x = h + x[:, -keep_last:, :]
    h = block._feedforward_layer_norm(x)
    h = block._feedforward_intermediate_dense(h)
    h = block._feedforward_output_dense(h)
    h = block._feedforward_dropout(h, training=training)
    return h + x


@keras.saving.register_keras_serializable(package="keras_mirasol")
class TransformerStack(keras.layers.Layer):
    """`num_layers` pre-norm `keras_hub.layers.TransformerEncoder` blocks.

    The encoders of both modalities, the Combiners and the TTM's process
    step all use this stack. Blocks are named `transformer_layer_{i}` and
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
            pass instead of keeping them (`call_block`). Defaults to
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
        blocks = self.blocks if keep_last is None else self.blocks[:-1]
        for block in blocks:
            x = call_block(
                block,
                x,
                self.remat,
                attention_mask=attention_mask,
                training=training,
            )
        if keep_last is not None:
            if attention_mask is not None:
                attention_mask = attention_mask[:, -keep_last:, :]
            x = _block_for_last_queries(
                self.blocks[-1], x, keep_last, attention_mask, training
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
