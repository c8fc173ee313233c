"""SavedModel export: signatures equal the Keras model, CLI tools run them."""

import collections
import contextlib
import io
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers SentencepieceOp for `answer`)
from keras import ops

from keras_mirasol import cli
from keras_mirasol.export import DEFAULT_SIGNATURES
from keras_mirasol.export import export_saved_model
from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import MirasolCausalLM
from keras_mirasol.models import MirasolTokenizer
from keras_mirasol.models.causal_lm import DEFAULT_VOCABULARY
from keras_mirasol.models.preprocessor import MirasolCausalLMPreprocessor
from tests.conftest import random_inputs
from tests.conftest import small_config
from tests.conftest import to_numpy

MAX_LENGTH = 12
QUESTIONS = [
    "what colour is the circle?",
    "when does the hiss play?",
    "how many squares are there?",
]


def small_lm(**overrides):
    tokenizer = MirasolTokenizer(proto=DEFAULT_VOCABULARY)
    config = small_config(
        vocabulary_size=tokenizer.vocabulary_size(), **overrides
    )
    backbone = MirasolBackbone(**config)
    preprocessor = MirasolCausalLMPreprocessor.from_backbone(
        backbone, tokenizer
    )
    return MirasolCausalLM(backbone, preprocessor), config


def media_of(x):
    return {k: x[k] for k in ("video", "audio") if k in x}


def packed_prompts(lm, media):
    x = lm.preprocessor.generate_preprocess(
        dict(media, prompts=QUESTIONS), sequence_length=MAX_LENGTH
    )
    x["padding_mask"] = x["padding_mask"].astype("int32")
    return x


def keras_generate(lm, x):
    """`lm`'s compiled `generate_step`, zeroed after each end token."""
    end = lm.preprocessor.tokenizer.end_token_id
    outputs = lm.make_generate_function()(x, stop_token_ids=(end,))
    return np.where(
        to_numpy(outputs["padding_mask"]), to_numpy(outputs["token_ids"]), 0
    )


def relabel_as_end_token(lm, x):
    """Make a random model stop: swap a token it generates with `</s>`.

    Swapping two rows of the tied embedding only renames the two tokens,
    so the model now ends each answer where it first said that token.

    Returns:
        bool: False (and the model unchanged) when no generated token
        qualifies.
    """
    tokenizer = lm.preprocessor.tokenizer
    token_ids = keras_generate(lm, x)
    answers = [
        row[mask == 0] for row, mask in zip(token_ids, x["padding_mask"])
    ]
    # Not the first answer token of any row, so some answers are not empty.
    never = {row[0] for row in answers} | set(tokenizer.special_token_ids)
    candidates = [t for row in answers for t in row if t not in never]
    if not candidates:
        # Every answer repeats its first token: no such token to rename.
        return False
    token = collections.Counter(candidates).most_common(1)[0][0]
    embeddings = lm.backbone.token_embedding.embeddings
    table = to_numpy(embeddings).copy()
    end = tokenizer.end_token_id
    table[[token, end]] = table[[end, token]]
    embeddings.assign(table)
    return True


def compiled(fn):
    """`fn` compiled per input shape: eager JAX is slow on a small CPU."""
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    return tf.function(fn, reduce_retracing=True)


def saved_model_cli():
    script = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    if os.path.exists(script):
        return [script]
    return [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]


# Export runs on JAX and TensorFlow only; on torch it refuses with an
# error that names the way (`test_torch_backend_refuses_with_the_way`).
export_backend = pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="SavedModel export needs the JAX or TensorFlow backend",
)


def load(path):
    return tf.saved_model.load(str(path)).signatures


def call(signature, inputs):
    outputs = signature(**{k: tf.constant(v) for k, v in inputs.items()})
    return {k: v.numpy() for k, v in outputs.items()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A run folder exported by `keras-mirasol export`."""
    # The first seed whose random model says some token after the first
    # of an answer (a random model may repeat one token forever).
    for seed in range(20):
        keras.utils.set_random_seed(seed)
        lm, config = small_lm()
        x = random_inputs(config, batch_size=len(QUESTIONS), seed=seed)
        prompts = packed_prompts(lm, media_of(x))
        if relabel_as_end_token(lm, prompts):
            break
    else:
        raise AssertionError("no seed gave a model that can be made to stop")
    root = tmp_path_factory.mktemp("export")
    run = str(root / "run")
    lm.save_to_preset(run)
    out = str(root / "exported" / "mirasol" / "1")
    argv = ["export", "--model", run, "--out", out]
    argv += ["--max-length", str(MAX_LENGTH)]
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        assert cli.main(argv) == 0
    return types.SimpleNamespace(
        lm=lm,
        forward=compiled(lambda x: lm(x, training=False)),
        encode_media=compiled(lm.encode_media),
        config=config,
        prompts=prompts,
        path=out,
        printed=stdout.getvalue(),
        progress=stderr.getvalue(),
        signatures=load(out),
    )


@export_backend
def test_export_command_prints_path_and_signatures(exported):
    result = json.loads(exported.printed.strip().splitlines()[-1])
    assert result["path"] == exported.path
    # Progress on stderr: a line per signature traced, then the write.
    lines = [
        line
        for line in exported.progress.splitlines()
        if line.startswith("export:")
    ]
    count = len(DEFAULT_SIGNATURES)
    for index, (line, name) in enumerate(zip(lines, DEFAULT_SIGNATURES), 1):
        assert line.startswith(f"export: [{index}/{count}] {name} traced in")
    assert lines[count:] == [lines[-1]]
    assert lines[-1].startswith(f"export: wrote {exported.path} in")
    assert list(result["signatures"]) == list(DEFAULT_SIGNATURES)
    assert os.path.exists(os.path.join(exported.path, "saved_model.pb"))
    config = exported.config
    video = [None, config["num_frames"], 16, 16, 3]
    vocabulary = exported.lm.backbone.vocabulary_size
    serving = result["signatures"]["serving_default"]
    assert serving["inputs"] == {
        "video": {"dtype": "float32", "shape": video},
        "audio": {"dtype": "float32", "shape": [None, 8000]},
        "token_ids": {"dtype": "int32", "shape": [None, None]},
        "padding_mask": {"dtype": "int32", "shape": [None, None]},
    }
    assert serving["outputs"] == {
        "logits": {"dtype": "float32", "shape": [None, None, vocabulary]}
    }
    generate = result["signatures"]["generate"]
    assert generate["inputs"]["token_ids"]["shape"] == [None, MAX_LENGTH]
    assert generate["outputs"] == {
        "token_ids": {"dtype": "int32", "shape": [None, MAX_LENGTH]}
    }
    assert set(result["signatures"]["encode_av"]["inputs"]) == {
        "video",
        "audio",
    }
    assert set(exported.signatures) == set(DEFAULT_SIGNATURES)


@export_backend
def test_serving_default_equals_the_forward_pass(exported):
    # Batch and length both differ from anything traced at export.
    x = random_inputs(exported.config, batch_size=3, length=7, seed=1)
    x["padding_mask"][0, 3:] = 0
    logits = call(exported.signatures["serving_default"], x)["logits"]
    expected = to_numpy(exported.forward(x))
    assert logits.shape == expected.shape
    np.testing.assert_allclose(logits, expected, atol=1e-4)


@export_backend
def test_encode_av_equals_encode_media(exported):
    media = media_of(random_inputs(exported.config, batch_size=2, seed=5))
    av_latents = call(exported.signatures["encode_av"], media)["av_latents"]
    expected = to_numpy(exported.encode_media(media))
    np.testing.assert_allclose(av_latents, expected, atol=1e-4)


@export_backend
def test_generate_equals_generate_step_and_stops(exported):
    token_ids = call(exported.signatures["generate"], exported.prompts)
    token_ids = token_ids["token_ids"]
    expected = keras_generate(exported.lm, exported.prompts)
    np.testing.assert_array_equal(token_ids, expected)
    # The prompt is kept; rows that said `</s>` are zero after it.
    prompt = exported.prompts["padding_mask"] == 1
    np.testing.assert_array_equal(
        token_ids[prompt], exported.prompts["token_ids"][prompt]
    )
    end = exported.lm.preprocessor.tokenizer.end_token_id
    stopped = [row for row in token_ids if end in row]
    assert stopped, token_ids
    for row in stopped:
        after = row[list(row).index(end) + 1 :]
        assert not after.any(), row


@export_backend
def test_saved_model_cli_show_lists_the_signatures(exported):
    shown = subprocess.run(
        saved_model_cli() + ["show", "--dir", exported.path, "--all"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in DEFAULT_SIGNATURES:
        signature = shown.split(f"signature_def['{name}']:")[1]
        signature = signature.split("signature_def[")[0]
        inputs = ["video", "audio"]
        if name != "encode_av":
            inputs += ["token_ids", "padding_mask"]
        for key in inputs:
            assert f"inputs['{key}']" in signature, (name, key)
    assert "shape: (-1, -1, " in shown  # logits: dynamic batch and length
    # Without `answer` the graph needs no TensorFlow Text ops; JAX exports
    # run as StableHLO in XlaCallModule ops.
    assert "SentencepieceOp" not in shown
    jax = keras.backend.backend() == "jax"
    assert ("'XlaCallModule'" in shown) == jax


@export_backend
def test_saved_model_cli_run_equals_keras(exported, tmp_path):
    lm = exported.lm
    # The longest text the model takes: max_sequence_length.
    x = random_inputs(exported.config, batch_size=2, length=16, seed=9)
    files = {}
    for key, value in dict(x, prompt_ids=exported.prompts["token_ids"]).items():
        files[key] = str(tmp_path / f"{key}.npy")
        np.save(files[key], value)
    for key in ("video", "audio", "padding_mask"):
        files[f"prompt_{key}"] = str(tmp_path / f"prompt_{key}.npy")
        np.save(files[f"prompt_{key}"], exported.prompts[key])
    feeds = {
        "serving_default": "video={video};audio={audio};"
        "token_ids={token_ids};padding_mask={padding_mask}",
        "encode_av": "video={video};audio={audio}",
        "generate": "video={prompt_video};audio={prompt_audio};"
        "token_ids={prompt_ids};padding_mask={prompt_padding_mask}",
    }
    runs = {}
    for name, feed in feeds.items():
        command = saved_model_cli() + ["run", "--dir", exported.path]
        command += ["--tag_set", "serve", "--signature_def", name]
        command += ["--inputs", feed.format(**files)]
        command += ["--outdir", str(tmp_path / name)]
        runs[name] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
    for name, run in runs.items():
        _, stderr = run.communicate()
        assert run.returncode == 0, (name, stderr.decode()[-2000:])

    def output(name, key):
        return np.load(tmp_path / name / f"{key}.npy")

    np.testing.assert_allclose(
        output("serving_default", "logits"),
        to_numpy(exported.forward(x)),
        atol=1e-4,
    )
    np.testing.assert_allclose(
        output("encode_av", "av_latents"),
        to_numpy(exported.encode_media(media_of(x))),
        atol=1e-4,
    )
    np.testing.assert_array_equal(
        output("generate", "token_ids"),
        keras_generate(lm, exported.prompts),
    )


@export_backend
def test_answer_signature_equals_generate_strings(exported, tmp_path):
    lm = exported.lm
    path = str(tmp_path / "answer")
    result = export_saved_model(
        lm, path, max_length=MAX_LENGTH, signatures=["answer"]
    )
    # `answer` needs `generate`; Keras makes the first the default.
    assert list(result["signatures"]) == [
        "serving_default",
        "generate",
        "answer",
    ]
    assert result["signatures"]["answer"] == {
        "inputs": {
            "video": {"dtype": "float32", "shape": [None, 8, 16, 16, 3]},
            "audio": {"dtype": "float32", "shape": [None, 8000]},
            "question": {"dtype": "string", "shape": [None]},
        },
        "outputs": {"answer": {"dtype": "string", "shape": [None]}},
    }
    media = media_of(exported.prompts)
    answers = call(
        load(path)["answer"], dict(media, question=np.array(QUESTIONS))
    )["answer"]
    expected = lm.generate(
        dict(media, prompts=QUESTIONS), max_length=MAX_LENGTH
    )
    assert [a.decode() for a in answers] == list(expected)
    # Answers of different lengths: some stopped at the end token.
    assert len({len(a) for a in expected}) > 1, expected


class PerClipCausalLM(MirasolCausalLM):
    """Encodes clips one by one in a Python loop: needs a static batch."""

    def encode_media(self, inputs):
        clips = [
            super(PerClipCausalLM, self).encode_media(
                {k: v[i : i + 1] for k, v in media_of(inputs).items()}
            )
            for i in range(inputs["video"].shape[0])
        ]
        return ops.concatenate(clips, axis=0)


@export_backend
def test_dynamic_batch_failure_names_the_signature_and_batch_size(tmp_path):
    lm, config = small_lm(use_audio=False)
    lm = PerClipCausalLM(lm.backbone, lm.preprocessor)
    path = str(tmp_path / "per_clip")
    with pytest.raises(ValueError, match="`encode_av`.*dynamic batch") as e:
        export_saved_model(lm, path, signatures=["encode_av"])
    assert "batch_size=N" in str(e.value)
    assert not os.path.exists(path)

    result = export_saved_model(
        lm, path, signatures=["encode_av"], batch_size=2
    )
    # Video-only: no audio input; the batch is fixed.
    assert result["signatures"]["encode_av"]["inputs"] == {
        "video": {"dtype": "float32", "shape": [2, 8, 16, 16, 3]}
    }
    media = media_of(random_inputs(config, batch_size=2, seed=3))
    av_latents = call(load(path)["encode_av"], media)["av_latents"]
    expected = to_numpy(MirasolCausalLM.encode_media(lm, media))
    np.testing.assert_allclose(av_latents, expected, atol=1e-4)

    # A SavedModel is replaced only when asked to.
    with pytest.raises(ValueError, match="not empty.*overwrite=True"):
        export_saved_model(lm, path, signatures=["encode_av"], batch_size=2)
    stale = os.path.join(path, "stale.txt")
    with open(stale, "w") as file:
        file.write("from the previous export")
    export_saved_model(
        lm, path, signatures=["encode_av"], batch_size=2, overwrite=True
    )
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    assert not os.path.exists(stale)


@export_backend
def test_bad_arguments_fail_before_tracing(exported, tmp_path):
    lm = exported.lm
    other = tmp_path / "notes"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not empty"):
        export_saved_model(lm, str(other))
    with pytest.raises(ValueError, match="holds no SavedModel"):
        export_saved_model(lm, str(other), overwrite=True)
    assert (other / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="max_length"):
        export_saved_model(lm, str(tmp_path / "a"), max_length=17)
    with pytest.raises(ValueError, match="subset of"):
        export_saved_model(lm, str(tmp_path / "b"), signatures=["decode"])
    bare = MirasolCausalLM(lm.backbone)
    with pytest.raises(ValueError, match="needs a model with a preprocessor"):
        export_saved_model(bare, str(tmp_path / "c"), signatures=["answer"])


@pytest.mark.skipif(
    keras.backend.backend() != "torch", reason="the error is for torch"
)
def test_torch_backend_refuses_with_the_way(tmp_path):
    lm, _ = small_lm(use_audio=False)
    path = tmp_path / "exported"
    with pytest.raises(ValueError, match="KERAS_BACKEND=jax keras-mirasol"):
        export_saved_model(lm, str(path))
    assert not path.exists()
