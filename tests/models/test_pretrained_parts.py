"""A Mirasol model around keras-hub parts: VideoPrism and Gemma3 / Qwen3.

Nothing is downloaded: the keras-hub backbones are tiny random ones of
the real classes, and a tiny SentencePiece vocabulary with Gemma's
special tokens stands in for Gemma's tokenizer.
"""

import io
import tempfile

import keras
import keras_hub
import numpy as np
import pytest
import sentencepiece

from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models import MirasolCausalLMPreprocessor
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models import PretrainedAudioEncoder
from keras_mirasol.models import PretrainedVideoEncoder
from keras_mirasol.models import chat_template
from keras_mirasol.models import snippet_attention
from keras_mirasol.models.attention_maps import cross_attention_layers
from keras_mirasol.models.attention_maps import latent_attention
from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY
from tests.conftest import CHANGED
from tests.conftest import gradient_temp_bytes
from tests.conftest import random_inputs
from tests.conftest import to_numpy

VOCABULARY = 64


def tiny_video_prism(num_frames=2, **overrides):
    """A video-only VideoPrism: 16x16 frames, 2x2 patches of 8x8, unless
    `overrides` (constructor arguments) say otherwise."""
    config = dict(
        num_frames=num_frames,
        patch_size=8,
        hidden_dim=16,
        intermediate_dim=32,
        num_heads=2,
        num_spatial_layers=1,
        num_temporal_layers=1,
        num_auxiliary_layers=0,
        image_shape=(16, 16, 3),
    )
    return keras_hub.models.VideoPrismBackbone(**{**config, **overrides})


def tiny_whisper():
    return keras_hub.models.WhisperBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        num_mels=80,
    )


def tiny_gemma3(vocabulary_size=VOCABULARY, num_layers=3):
    """A text-only Gemma3 with grouped-query attention and a sliding
    window, like the real ones."""
    return keras_hub.models.Gemma3Backbone(
        vocabulary_size=vocabulary_size,
        image_size=16,
        num_layers=num_layers,
        num_query_heads=4,
        num_key_value_heads=2,
        hidden_dim=32,
        intermediate_dim=64,
        head_dim=8,
        use_sliding_window_attention=True,
        sliding_window_size=4,
    )


def tiny_qwen3(vocabulary_size=VOCABULARY):
    return keras_hub.models.Qwen3Backbone(
        vocabulary_size=vocabulary_size,
        num_layers=2,
        num_query_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        hidden_dim=32,
        intermediate_dim=64,
    )


def tiny_gemma3_tokenizer():
    """A Gemma3Tokenizer on a tiny vocabulary with Gemma's special ids."""
    texts = [
        "what colour is the square",
        "red green blue yellow",
        "how many tones are there",
        "one two three four",
    ] * 10
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        vocab_size=VOCABULARY,
        model_type="bpe",
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        pad_piece="<pad>",
        eos_piece="<eos>",
        bos_piece="<bos>",
        unk_piece="<unk>",
        user_defined_symbols=["<start_of_turn>", "<end_of_turn>"],
        # Gemma's vocabulary adds no "▁" before the first piece.
        add_dummy_prefix=False,
        minloglevel=2,
    )
    return keras_hub.tokenizers.Gemma3Tokenizer(
        proto=model.getvalue(), has_vision_tokens=False
    )


def from_components(**kwargs):
    """A tiny Mirasol model around a tiny VideoPrism and Gemma3."""
    kwargs.setdefault("video_encoder", tiny_video_prism())
    kwargs.setdefault("text_decoder", tiny_gemma3())
    return MirasolBackbone.from_components(
        base="mirasol_tiny",
        num_snippets=4,
        max_sequence_length=16,
        audio_sample_rate=8000,
        **kwargs,
    )


def inputs_for(backbone, batch_size=2, length=8, seed=0):
    config = backbone.get_config()
    config["vocabulary_size"] = backbone.vocabulary_size
    config["image_size"] = backbone.image_size[0]
    return random_inputs(
        config, batch_size=batch_size, length=length, seed=seed
    )


def open_gates(decoder, value=0.7):
    for block in decoder.cross_attention_blocks:
        block.attention_gate.assign(value)
        block.mlp_gate.assign(value)


def hub_logits(language_model, token_ids, padding_mask):
    """The keras-hub language model's own logits, without Mirasol."""
    hidden = language_model(
        {"token_ids": token_ids, "padding_mask": padding_mask}
    )
    return to_numpy(language_model.token_embedding(hidden, reverse=True))


@pytest.mark.parametrize("family", ["gemma3", "qwen3"])
def test_text_logits_equal_the_language_model_until_the_gates_open(family):
    # With the gates at their initial 0 the inserted cross-attention adds
    # exactly nothing: Mirasol's logits are the language model's, on any
    # media. Opening the gates makes the media reach the text.
    keras.utils.set_random_seed(0)
    language_model = tiny_gemma3() if family == "gemma3" else tiny_qwen3()
    backbone = from_components(text_decoder=language_model)
    lm = MirasolCausalLM(backbone)
    x = inputs_for(backbone)
    x["padding_mask"][1, 6:] = 0
    expected = hub_logits(language_model, x["token_ids"], x["padding_mask"])
    np.testing.assert_array_equal(to_numpy(lm(x)), expected)
    other_media = inputs_for(backbone, seed=1)
    other_media = dict(x, video=other_media["video"])
    np.testing.assert_array_equal(to_numpy(lm(other_media)), expected)

    open_gates(backbone.text_decoder)
    opened = to_numpy(lm(x))
    assert np.abs(opened - expected).max() > CHANGED
    assert np.abs(to_numpy(lm(other_media)) - opened).max() > CHANGED


@pytest.mark.parametrize("family", ["gemma3", "qwen3"])
def test_cached_decoding_equals_the_full_pass(family):
    # The key/value caches (the language model's own and the latents' in
    # each cross-attention block) give the full pass's logits, token by
    # token, with the gates open.
    keras.utils.set_random_seed(0)
    language_model = tiny_gemma3() if family == "gemma3" else tiny_qwen3()
    backbone = from_components(text_decoder=language_model)
    open_gates(backbone.text_decoder)
    lm = MirasolCausalLM(backbone)
    x = inputs_for(backbone, length=9)
    full = to_numpy(lm(x))
    av_latents = lm.encode_media(x)
    # Seed the caches with the first 5 tokens (the rest padding), then
    # decode positions 5..8 one at a time.
    prompt = np.concatenate(
        [x["token_ids"][:, :5], np.zeros((2, 4), "int32")], axis=1
    )
    _, cache = lm.build_cache(prompt, av_latents)
    steps = []
    for index in range(5, 9):
        logits, _, cache = lm.call_with_cache(
            x["token_ids"][:, index : index + 1], cache, index
        )
        steps.append(to_numpy(logits)[:, 0])
    np.testing.assert_allclose(
        np.stack(steps, axis=1), full[:, 5:9], atol=1e-4, rtol=1e-4
    )


def test_video_features_per_snippet_equal_video_prism_on_that_snippet():
    # Each snippet's tokens are VideoPrism's patch features of that
    # snippet's frames alone; pooling averages 2x2 patches.
    keras.utils.set_random_seed(0)
    prism = tiny_video_prism()
    encoder = PretrainedVideoEncoder(prism, num_snippets=4)
    pooled = PretrainedVideoEncoder(prism, num_snippets=4, spatial_pool=2)
    video = np.random.default_rng(0).uniform(size=(2, 8, 16, 16, 3))
    video = video.astype("float32")
    tokens = to_numpy(encoder(video))
    assert tokens.shape == (2, 4, 2 * 4, 16)
    for snippet in range(4):
        frames = video[:, 2 * snippet : 2 * snippet + 2]
        alone = to_numpy(prism(frames))  # [B, 2 frames, 4 patches, 16]
        np.testing.assert_allclose(
            tokens[:, snippet], alone.reshape(2, 8, 16), atol=1e-5
        )
        np.testing.assert_allclose(
            to_numpy(pooled(video))[:, snippet],
            alone.mean(axis=2),
            atol=1e-5,
        )


def test_audio_features_per_snippet_equal_whisper_on_that_snippet():
    # Each 1 s snippet's tokens are what keras-hub's own pipeline gives
    # for that snippet alone: WhisperAudioConverter's log-mel features,
    # then WhisperBackbone's encoder.
    keras.utils.set_random_seed(0)
    whisper = tiny_whisper()
    encoder = PretrainedAudioEncoder(whisper, num_samples=64000, num_snippets=4)
    audio = np.random.default_rng(0).normal(size=(2, 64000))
    audio = (0.1 * audio).astype("float32")
    tokens = to_numpy(encoder(audio))
    assert tokens.shape == (2, 4, 50, 16)
    converter = keras_hub.layers.WhisperAudioConverter(
        num_mels=80, max_audio_length=1
    )
    for snippet in range(4):
        alone = audio[:, snippet * 16000 : (snippet + 1) * 16000]
        features = np.asarray(to_numpy(converter(alone)))
        expected = whisper(
            {
                "encoder_features": features,
                "decoder_token_ids": np.ones((2, 1), "int32"),
                "decoder_padding_mask": np.ones((2, 1), "int32"),
            }
        )["encoder_sequence_output"]
        np.testing.assert_allclose(
            tokens[:, snippet], to_numpy(expected), atol=1e-4
        )


def test_all_three_parts_train_with_whisper_frozen():
    keras.utils.set_random_seed(0)
    backbone = from_components(
        audio_encoder=tiny_whisper(), freeze=("audio_encoder",)
    )
    assert backbone.audio_sample_rate == 16000
    assert backbone.num_audio_samples == 16000  # 8 frames at 8 fps
    whisper = backbone.audio_encoder.backbone
    before = [to_numpy(w) for w in whisper.weights]
    lm = MirasolCausalLM(backbone)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = inputs_for(backbone)
    history = lm.fit(x, np.roll(x["token_ids"], -1, axis=1), epochs=2)
    assert np.isfinite(history.history["loss"]).all()
    for w, value in zip(whisper.weights, before):
        np.testing.assert_array_equal(to_numpy(w), value, w.path)
    with pytest.raises(ValueError, match="use_audio=False, but an audio"):
        from_components(audio_encoder=tiny_whisper(), use_audio=False)


def test_whisper_decoder_is_frozen_and_untouched_by_training():
    # Mirasol runs Whisper's encoder only: the decoder's weights are not
    # trainable, so AdamW keeps no state for them and its weight decay
    # leaves them as they were, while the encoder trains.
    keras.utils.set_random_seed(0)
    backbone = from_components(audio_encoder=tiny_whisper())
    whisper = backbone.audio_encoder.backbone
    decoder = [
        *whisper.decoder_embeddings.weights,
        *whisper.decoder_layer_norm.weights,
        *(w for b in whisper.decoder_transformer_layers for w in b.weights),
    ]
    encoder = whisper.encoder_transformer_layers[0].weights
    assert decoder and encoder
    trainable = {id(w) for w in backbone.trainable_weights}
    assert not {id(w) for w in decoder} & trainable
    assert {id(w) for w in encoder} <= trainable
    before = {w.path: to_numpy(w) for w in decoder + encoder}
    lm = MirasolCausalLM(backbone)
    lm.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.5))
    x = inputs_for(backbone)
    lm.fit(x, np.roll(x["token_ids"], -1, axis=1), epochs=1, verbose=0)
    state = " ".join(v.path for v in lm.optimizer.variables)

    def has_state(w):
        return w.path.replace("/", "_") in state

    assert all(has_state(w) for w in encoder)
    for w in decoder:
        np.testing.assert_array_equal(to_numpy(w), before[w.path], w.path)
        assert not has_state(w), w.path
    assert any(np.abs(to_numpy(w) - before[w.path]).max() > 0 for w in encoder)


def test_remat_of_the_keras_hub_parts_trains_to_the_same_weights():
    """`remat=True` runs VideoPrism and Whisper one snippet at a time,
    recomputed, and recomputes Gemma3's blocks: one training step moves
    every weight as without it."""
    trained, initial = [], None
    for remat in (False, True):
        keras.utils.set_random_seed(0)
        backbone = from_components(audio_encoder=tiny_whisper(), remat=remat)
        if remat:
            backbone.set_weights(initial)
        else:
            # Open gates: the text loss reaches the encoders too.
            open_gates(backbone.text_decoder)
            initial = backbone.get_weights()
        parts = (
            backbone.video_encoder,
            backbone.audio_encoder,
            backbone.text_decoder,
        )
        assert [part.remat for part in parts] == [remat] * 3
        lm = MirasolCausalLM(backbone)
        lm.compile(optimizer=keras.optimizers.SGD(0.5))
        x = inputs_for(backbone)
        lm.fit(x, np.roll(x["token_ids"], -1, axis=1), batch_size=2, verbose=0)
        trained.append({w.path: to_numpy(w) for w in backbone.weights})
    before = dict(zip((w.path for w in backbone.weights), initial))
    moved = {p for p, w in trained[0].items() if np.abs(w - before[p]).max()}
    # Each keras-hub part's weights moved, so equal weights are a check.
    for prefix in (
        "spatial_encoder/",
        "transformer_encoder_layer_0/",
        "decoder_block_0/",
    ):
        assert any(p.startswith(prefix) for p in moved), prefix
    for path, plain in trained[0].items():
        np.testing.assert_allclose(
            trained[1][path], plain, atol=1e-5, err_msg=path
        )
    # The switch is the model's, kept by its config.
    again = MirasolBackbone.from_config(backbone.get_config())
    assert again.remat and again.video_encoder.remat
    assert again.audio_encoder.remat and again.text_decoder.remat


@pytest.mark.one_backend
def test_remat_bounds_the_keras_hub_encoders_backward_memory():
    """XLA's plan of the gradient's buffers: with the keras-hub encoders
    under remat (one snippet at a time), an 8-snippet clip's gradient
    needs a fraction of the memory it needs with only Mirasol's own
    parts under remat."""

    def temp_bytes(hub_remat):
        keras.utils.set_random_seed(0)
        prism = tiny_video_prism(
            hidden_dim=32,
            intermediate_dim=256,
            num_spatial_layers=3,
            num_temporal_layers=2,
            image_shape=(32, 32, 3),
        )
        backbone = MirasolBackbone.from_components(
            video_encoder=prism,
            audio_encoder=tiny_whisper(),
            text_decoder=tiny_gemma3(),
            base="mirasol_tiny",
            num_snippets=8,
            max_sequence_length=16,
            remat=True,
        )
        for part in (backbone.video_encoder, backbone.audio_encoder):
            part.remat = hub_remat
        return gradient_temp_bytes(backbone, inputs_for(backbone, batch_size=4))

    plain, remat = temp_bytes(False), temp_bytes(True)
    assert remat < 0.5 * plain, (remat, plain)


def test_with_num_snippets_runs_each_pretrained_part_on_more_snippets():
    # VideoPrism and Whisper run per snippet: twice the snippets, the same
    # parts and weights, and the first half's latents unchanged.
    keras.utils.set_random_seed(0)
    backbone = from_components(
        audio_encoder=tiny_whisper(), freeze=("audio_encoder",)
    )
    longer = backbone.with_num_snippets(8)
    assert longer.count_params() == backbone.count_params()
    assert longer.num_audio_samples == 2 * backbone.num_audio_samples
    assert not longer.audio_encoder.backbone.trainable
    x = inputs_for(longer, batch_size=1, seed=2)
    _, long_latents = longer.encode_media(x["video"], x["audio"])
    _, short_latents = backbone.encode_media(
        x["video"][:, : backbone.num_frames],
        x["audio"][:, : backbone.num_audio_samples],
    )
    half = short_latents.shape[1]
    np.testing.assert_allclose(
        to_numpy(long_latents)[:, :half], to_numpy(short_latents), atol=1e-4
    )


def test_from_components_takes_its_config_from_the_parts():
    prism = tiny_video_prism()
    gemma = tiny_gemma3(vocabulary_size=50)
    backbone = from_components(video_encoder=prism, text_decoder=gemma)
    assert backbone.num_frames == 4 * prism.num_frames
    assert backbone.image_size == (16, 16)
    assert backbone.vocabulary_size == 50
    assert backbone.text_hidden_dim == gemma.hidden_dim
    assert backbone.video_encoder.backbone is prism
    assert backbone.text_decoder.backbone is gemma
    # Only the given parts are replaced: the Combiner, the time-aligned
    # model and the audio encoder are Mirasol's own, sized by the base.
    only_text = from_components(video_encoder=None, text_decoder=gemma)
    assert type(only_text.video_encoder).__name__ == "VideoEncoder"
    assert only_text.num_frames == 16


def test_parts_that_do_not_fit_say_what_to_change():
    prism = tiny_video_prism()
    config = MirasolBackbone.from_components(
        video_encoder=prism, base="mirasol_tiny"
    ).get_config()
    config["num_frames"] = 16
    with pytest.raises(ValueError, match="num_frames=16, but the video"):
        MirasolBackbone.from_config(config)
    with pytest.raises(ValueError, match="supported keras-hub backbones"):
        from_components(
            text_decoder=keras_hub.models.BertBackbone(
                vocabulary_size=VOCABULARY,
                num_layers=1,
                num_heads=2,
                hidden_dim=16,
                intermediate_dim=32,
            )
        )
    with pytest.raises(ValueError, match="video-only VideoPrism"):
        PretrainedVideoEncoder(
            keras_hub.models.VideoPrismBackbone(
                num_frames=2,
                patch_size=8,
                hidden_dim=16,
                intermediate_dim=32,
                num_heads=2,
                num_spatial_layers=1,
                num_temporal_layers=1,
                num_auxiliary_layers=0,
                vocabulary_size=10,
                num_text_layers=1,
                image_shape=(16, 16, 3),
            ),
            num_snippets=2,
        )
    with pytest.raises(ValueError, match="divide the video model's patch"):
        PretrainedVideoEncoder(prism, num_snippets=2, spatial_pool=3)
    with pytest.raises(ValueError, match="Mirasol's own TextDecoder"):
        from_components(text_decoder=None, freeze=("text_decoder",))
    with pytest.raises(ValueError, match="`freeze` takes names"):
        from_components(freeze=("combiner",))


def test_frozen_parts_get_no_updates_in_fit():
    # Frozen: VideoPrism and the language model keep their weights; the
    # inserted cross-attention blocks and Mirasol's own parts train.
    keras.utils.set_random_seed(0)
    backbone = from_components(freeze=("video_encoder", "text_decoder"))
    prism = backbone.video_encoder.backbone
    gemma = backbone.text_decoder.backbone
    frozen = {id(w) for w in prism.weights + gemma.weights}
    before = {w.path: to_numpy(w) for w in backbone.weights}
    assert not frozen & {id(w) for w in backbone.trainable_weights}
    lm = MirasolCausalLM(backbone)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = inputs_for(backbone)
    y = np.roll(x["token_ids"], -1, axis=1)
    lm.fit(x, y, batch_size=2, epochs=2, verbose=0)
    for w in prism.weights + gemma.weights:
        np.testing.assert_array_equal(to_numpy(w), before[w.path], w.path)
    gates = [
        block.attention_gate
        for block in backbone.text_decoder.cross_attention_blocks
    ]
    assert all(to_numpy(g) != 0 for g in gates)
    combiner = backbone.combiner.weights[0]
    assert np.abs(to_numpy(combiner) - before[combiner.path]).max() > 0


def test_preset_round_trip_keeps_parts_frozen_state_and_tokenizer():
    # A preset holds everything: the three keras-hub parts' configs and
    # weights, which parts are frozen, the Gemma tokenizer and the chat
    # template; it loads with no keras-hub download.
    keras.utils.set_random_seed(0)
    tokenizer = tiny_gemma3_tokenizer()
    backbone = from_components(
        audio_encoder=tiny_whisper(),
        text_decoder=tiny_gemma3(tokenizer.vocabulary_size()),
        freeze=("video_encoder",),
    )
    open_gates(backbone.text_decoder)
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer, prompt_template=chat_template(tokenizer)
    )
    lm = MirasolCausalLM(backbone, preprocessor)
    x = inputs_for(backbone)
    trainable = {w.path for w in backbone.trainable_weights}
    with tempfile.TemporaryDirectory() as folder:
        lm.save_to_preset(folder)
        again = MirasolCausalLM.from_preset(folder)
    np.testing.assert_allclose(
        to_numpy(again(x)), to_numpy(lm(x)), atol=1e-5, rtol=1e-5
    )
    assert {w.path for w in again.backbone.trainable_weights} == trainable
    assert not again.backbone.video_encoder.backbone.trainable
    again_tokenizer = again.preprocessor.tokenizer
    assert isinstance(again_tokenizer, keras_hub.tokenizers.Gemma3Tokenizer)
    assert again.preprocessor.prompt_template == chat_template(tokenizer)
    prompt = {"video": x["video"][:1], "audio": x["audio"][:1]}
    prompt["prompts"] = ["what colour"]
    assert again.generate(prompt, max_length=16) == lm.generate(
        prompt, max_length=16
    )


def test_lora_on_the_language_model_trains_only_adapters_and_reloads():
    keras.utils.set_random_seed(0)
    backbone = from_components()
    lm = MirasolCausalLM(backbone)
    base = {w.path: to_numpy(w) for w in backbone.weights}
    backbone.enable_lora(2)
    adapters = backbone.trainable_weights
    gemma_query = backbone.text_decoder.backbone.transformer_layers[0]
    gemma_query = gemma_query.attention.query_dense
    assert any(w is gemma_query.lora_kernel_a for w in adapters)
    assert all("lora_kernel" in w.path for w in adapters)
    lm.compile(optimizer=keras.optimizers.Adam(1e-2))
    x = inputs_for(backbone)
    lm.fit(x, np.roll(x["token_ids"], -1, axis=1), epochs=2, verbose=0)
    for w in backbone.weights:
        if "lora_kernel" not in w.path:
            np.testing.assert_array_equal(to_numpy(w), base[w.path], w.path)
    expected = to_numpy(lm(x))
    with tempfile.TemporaryDirectory() as folder:
        backbone.save_to_preset(folder)
        merged = MirasolBackbone.from_preset(folder)
    np.testing.assert_allclose(
        to_numpy(MirasolCausalLM(merged)(x)), expected, atol=1e-4, rtol=1e-4
    )


def test_prompt_template_wraps_prompts_and_tokenizers_without_start():
    tokenizer = tiny_gemma3_tokenizer()
    backbone = from_components(
        text_decoder=tiny_gemma3(tokenizer.vocabulary_size())
    )
    template = chat_template(tokenizer)
    plain = MirasolCausalLMPreprocessor.from_backbone(backbone, tokenizer)
    chat = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer, prompt_template=template
    )
    video = np.zeros((8, 16, 16, 3), "float32")
    audio = np.zeros((backbone.num_audio_samples,), "float32")
    question = "what colour"
    x = {"video": video, "audio": audio, "prompts": question}
    wrapped = plain.generate_preprocess(
        dict(x, prompts=template.format(prompt=question)), 32
    )
    np.testing.assert_array_equal(
        chat.generate_preprocess(x, 32)["token_ids"], wrapped["token_ids"]
    )
    turn = tokenizer.token_to_id("<start_of_turn>")
    assert list(wrapped["token_ids"][0, :2]) == [
        tokenizer.start_token_id,
        turn,
    ]
    with pytest.raises(ValueError, match="exactly once"):
        MirasolCausalLMPreprocessor.from_backbone(
            backbone, tokenizer, prompt_template="no placeholder"
        )

    # Qwen's tokenizers have no start token: rows start with the prompt.
    tokenizer.start_token_id = None
    no_start = MirasolCausalLMPreprocessor.from_backbone(backbone, tokenizer)
    ids = no_start.generate_preprocess(x, 32)["token_ids"][0]
    np.testing.assert_array_equal(
        ids[:5], plain.generate_preprocess(x, 32)["token_ids"][0][1:6]
    )
    with pytest.raises(ValueError, match="No chat format"):
        chat_template(MirasolTokenizer(proto=DEFAULT_VOCABULARY))


def test_a_stream_encodes_each_snippet_through_video_prism():
    # A live stream over a model with pretrained parts: VideoPrism on each
    # appended snippet, the latents equal to the offline model's, and the
    # text read through the language model's caches.
    keras.utils.set_random_seed(0)
    backbone = from_components(combiner_type="ttm")
    open_gates(backbone.text_decoder)
    lm = MirasolCausalLM(backbone)
    x = inputs_for(backbone, batch_size=1)
    _, offline = backbone.encode_media(x["video"], x["audio"])
    offline = to_numpy(offline)
    stream = lm.stream(batch_size=1)
    frames, samples = stream.frames_per_snippet, stream.samples_per_snippet
    for t in range(backbone.num_snippets):
        stream.append(
            x["video"][:, t * frames : (t + 1) * frames],
            x["audio"][:, t * samples : (t + 1) * samples],
        )
    np.testing.assert_allclose(to_numpy(stream.av_latents), offline, atol=1e-4)
    prompt = x["token_ids"][:, :4]
    token_ids = np.concatenate([prompt, np.zeros((1, 4), "int32")], axis=1)
    padding_mask = np.concatenate(
        [np.ones((1, 4), bool), np.zeros((1, 4), bool)], axis=1
    )
    from_stream = lm.generate_from_latents(
        stream.av_latents, token_ids, padding_mask
    )
    from_clip = lm.generate_from_latents(offline, token_ids, padding_mask)
    np.testing.assert_array_equal(
        to_numpy(from_stream["token_ids"]), to_numpy(from_clip["token_ids"])
    )


def test_snippet_attention_reads_the_gated_cross_attention_blocks():
    backbone = from_components()
    decoder = backbone.text_decoder
    inputs = inputs_for(backbone, batch_size=1, length=6)
    weights = to_numpy(snippet_attention(backbone, inputs))
    assert weights.shape == (1, 6, backbone.num_snippets)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert len(cross_attention_layers(decoder)) == len(
        decoder.cross_attention_blocks
    )
    # Reordering the snippets' latents reorders the columns.
    _, av_latents = backbone.encode_media(inputs["video"], inputs.get("audio"))
    latents = to_numpy(av_latents)
    snippets = backbone.num_snippets
    order = [3, 1, 0, 2]
    moved = latents.reshape(1, snippets, backbone.combiner_tokens, -1)[
        :, order
    ].reshape(latents.shape)

    def per_snippet(x):
        w = to_numpy(latent_attention(decoder, inputs["token_ids"], x))
        return w.reshape(1, 6, snippets, -1).sum(-1)

    np.testing.assert_allclose(
        per_snippet(moved), per_snippet(latents)[..., order], atol=1e-5
    )
