"""Mirasol3B models: components, backbone and presets."""

from keras_mirasol.models.attention_maps import snippet_attention
from keras_mirasol.models.audio_encoder import AudioEncoder
from keras_mirasol.models.av_decoder import NextSnippetLatentLoss
from keras_mirasol.models.av_decoder import TimeAlignedDecoder
from keras_mirasol.models.backbone import MirasolBackbone
from keras_mirasol.models.backbone import unchunked_config
from keras_mirasol.models.causal_lm import MirasolCausalLM
from keras_mirasol.models.combiner import AllTokensCombiner
from keras_mirasol.models.combiner import TransformerCombiner
from keras_mirasol.models.combiner import TTMCombiner
from keras_mirasol.models.parameter_count import count_parameters
from keras_mirasol.models.parameter_count import parameter_breakdown
from keras_mirasol.models.preprocessor import MirasolCausalLMPreprocessor
from keras_mirasol.models.presets import backbone_presets
from keras_mirasol.models.pretrained_audio_encoder import PretrainedAudioEncoder
from keras_mirasol.models.pretrained_text_decoder import (
    SUPPORTED_TEXT_BACKBONES,
)
from keras_mirasol.models.pretrained_text_decoder import PretrainedTextDecoder
from keras_mirasol.models.pretrained_video_encoder import PretrainedVideoEncoder
from keras_mirasol.models.stream import MirasolStream
from keras_mirasol.models.text_decoder import TextDecoder
from keras_mirasol.models.tokenizer import MirasolTokenizer
from keras_mirasol.models.tokenizer import chat_template
from keras_mirasol.models.tokenizer import train_tokenizer
from keras_mirasol.models.video_encoder import VideoEncoder

__all__ = [
    "AllTokensCombiner",
    "AudioEncoder",
    "MirasolBackbone",
    "MirasolCausalLM",
    "MirasolCausalLMPreprocessor",
    "MirasolStream",
    "MirasolTokenizer",
    "NextSnippetLatentLoss",
    "PretrainedAudioEncoder",
    "PretrainedTextDecoder",
    "PretrainedVideoEncoder",
    "SUPPORTED_TEXT_BACKBONES",
    "TTMCombiner",
    "TextDecoder",
    "TimeAlignedDecoder",
    "TransformerCombiner",
    "VideoEncoder",
    "backbone_presets",
    "chat_template",
    "count_parameters",
    "parameter_breakdown",
    "snippet_attention",
    "train_tokenizer",
    "unchunked_config",
]
