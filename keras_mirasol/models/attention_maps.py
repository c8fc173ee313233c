"""Which snippets the text reads: the cross-attention weights over time.

The text decoder's cross-attention layers (keras-hub
`CachedMultiHeadAttention`, in the `TextDecoder` blocks or in the
`GatedCrossAttention` blocks of a pretrained text model) attend over the
`T * m` latents of the clip, `m` per snippet in time order. These
functions run the text decoder once, eagerly, with each of those layers
asked for its attention weights, and sum the weights of each snippet's
`m` latents: a `[B, L, T]` map of where each text position looks in time.
"""

import contextlib

from keras import ops


def cross_attention_layers(text_decoder):
    """The text decoder's cross-attention layers, first block first.

    Args:
        text_decoder: the backbone's `TextDecoder` or
            `PretrainedTextDecoder`.

    Returns:
        list of keras-hub `CachedMultiHeadAttention` layers.
    """
    if hasattr(text_decoder, "cross_attention_blocks"):
        return [
            block.attention for block in text_decoder.cross_attention_blocks
        ]
    # keras-hub's `TransformerDecoder` keeps its cross-attention layer
    # under this private name (it has no public accessor).
    return [
        block._cross_attention_layer
        for index, block in enumerate(text_decoder.blocks)
        if text_decoder.has_cross_attention(index)
    ]


@contextlib.contextmanager
def _recording(layers, weights):
    """Make `layers` append their attention weights `[B, N, L, S]` to
    `weights` on each call, for the `with` block.

    Keras' `MultiHeadAttention._compute_attention` is the one place where
    the weights exist (keras-hub's layer does not return them through
    `TransformerDecoder`); each layer's method is wrapped for the block
    and restored after it. The wrapper asks for the weights, which takes
    Keras' softmax path instead of `dot_product_attention`: the same
    attention, computed the long way.
    """
    for layer in layers:
        original = layer._compute_attention

        def compute(*args, _original=original, **kwargs):
            wanted = kwargs.pop("return_attention_scores", False)
            output, scores = _original(
                *args, return_attention_scores=True, **kwargs
            )
            weights.append(scores)
            return output, (scores if wanted else None)

        # An instance attribute, over the class's method until removed.
        layer._compute_attention = compute
    try:
        yield
    finally:
        for layer in layers:
            del layer._compute_attention


def latent_attention(text_decoder, token_ids, av_latents, padding_mask=None):
    """Cross-attention weights of each text position over the latents.

    Args:
        text_decoder: the backbone's `TextDecoder` or
            `PretrainedTextDecoder`.
        token_ids: int `[B, L]`.
        av_latents: float `[B, S, D_av]`, the backbone's `av_latents`.
        padding_mask: int or bool `[B, L]` or None. Defaults to `None`
            (every position is text).

    Returns:
        float `[B, L, S]`: the softmax weights, averaged over heads and
        cross-attention layers; each row sums to 1.
    """
    if padding_mask is None:
        padding_mask = ops.ones_like(token_ids)
    layers = cross_attention_layers(text_decoder)
    weights = []
    with _recording(layers, weights):
        text_decoder(token_ids, av_latents, padding_mask)
    if len(weights) != len(layers):
        raise RuntimeError(
            f"Recorded {len(weights)} attention maps from {len(layers)} "
            "cross-attention layers: this text decoder does not call them "
            "once each."
        )
    stacked = ops.stack(
        [ops.cast(w, "float32") for w in weights], axis=1
    )  # [B, layers, N, L, S]
    return ops.mean(stacked, axis=(1, 2))


def snippet_attention(backbone, inputs):
    """How much each text position's cross-attention reads each snippet.

    Args:
        backbone: a `MirasolBackbone` (not the unchunked baseline, whose
            latents are not grouped by snippet).
        inputs: dict of the backbone's inputs: `video`, `audio` (if the
            backbone has audio), `token_ids` and `padding_mask`.

    Returns:
        float `[B, L, T]`: per text position, the cross-attention weight
        on each of the `T` snippets (the weights of its `m` latents
        summed, averaged over heads and layers); each row sums to 1.

    Example:
    ```python
    backbone = keras_mirasol.models.MirasolBackbone.from_preset(
        "mirasol_tiny"
    )
    inputs = {
        "video": np.zeros((1, 16, 32, 32, 3), "float32"),
        "audio": np.zeros((1, 32000), "float32"),
        "token_ids": np.ones((1, 6), "int32"),
        "padding_mask": np.ones((1, 6), "int32"),
    }
    keras_mirasol.models.snippet_attention(backbone, inputs)  # (1, 6, 4)
    ```
    """
    if backbone.combiner_type == "all_tokens":
        raise ValueError(
            "snippet_attention needs a model whose latents are m per "
            "snippet; the unchunked baseline (combiner_type='all_tokens') "
            "attends over every token of the clip at once."
        )
    _, av_latents = backbone.encode_media(inputs["video"], inputs.get("audio"))
    weights = latent_attention(
        backbone.text_decoder,
        inputs["token_ids"],
        av_latents,
        inputs.get("padding_mask"),
    )
    batch, length, _ = ops.shape(weights)
    weights = ops.reshape(
        weights,
        (batch, length, backbone.num_snippets, backbone.combiner_tokens),
    )
    return ops.sum(weights, axis=-1)


def answer_attention(lm, inputs, answers):
    """Which snippets each token of an answer was predicted from.

    Runs `snippet_attention` on each question with its answer (e.g.
    `lm.generate`'s) and keeps the text positions that predict the
    answer's tokens (those the training loss weighs), with the media
    window `generate` uses.

    Args:
        lm: a `MirasolCausalLM`.
        inputs: dict as `lm.generate` takes it: `video`, `audio` (if the
            model has audio) and `prompts`, for a batch of clips.
        answers: list of str, one per prompt.

    Returns:
        list, per clip, of `(tokens, weights)`: the answer's tokens (str,
        the end token last) and float `[len(tokens), T]` numpy weights,
        each row summing to 1.
    """
    prompts = list(inputs["prompts"])
    if len(answers) != len(prompts):
        raise ValueError(
            f"Got {len(answers)} answers for {len(prompts)} prompts; give "
            "one answer per prompt."
        )
    preprocessor = lm.preprocessor
    x, labels, sample_weight = preprocessor(dict(inputs, responses=answers))
    # The window `generate` takes (the call above may draw a random one).
    media = preprocessor.generate_preprocess(inputs)
    x = dict(x, video=media["video"])
    if "audio" in media:
        x["audio"] = media["audio"]
    weights = ops.convert_to_numpy(snippet_attention(lm.backbone, x))
    labels = ops.convert_to_numpy(labels)
    sample_weight = ops.convert_to_numpy(sample_weight)
    tokenizer = preprocessor.tokenizer
    maps = []
    for index in range(len(prompts)):
        rows = [i for i, w in enumerate(sample_weight[index]) if w > 0]
        tokens = [tokenizer.id_to_token(int(labels[index, i])) for i in rows]
        maps.append((tokens, weights[index, rows]))
    return maps
