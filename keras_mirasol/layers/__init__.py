"""Reusable Mirasol building blocks."""

from keras_mirasol.layers.block_causal_mask import block_causal_mask
from keras_mirasol.layers.block_causal_mask import snippet_ids
from keras_mirasol.layers.framed_mel_spectrogram import FramedMelSpectrogram
from keras_mirasol.layers.gated_cross_attention import GatedCrossAttention
from keras_mirasol.layers.token_learner import TokenLearner
from keras_mirasol.layers.transformer_stack import TransformerStack
from keras_mirasol.layers.tubelet_embedding import TubeletEmbedding

__all__ = [
    "FramedMelSpectrogram",
    "GatedCrossAttention",
    "TokenLearner",
    "TransformerStack",
    "TubeletEmbedding",
    "block_causal_mask",
    "snippet_ids",
]
