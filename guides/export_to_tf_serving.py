"""
Title: Serving a Mirasol model with TF Serving
Author: keras_mirasol developers
Date created: 2026/12/02
Last modified: 2026/12/02
Description: Export a SavedModel and send it what a TF Serving client sends.
Accelerator: None
"""

"""
## Setup

Export runs on the JAX or the TensorFlow backend (a torch process saves
the run and exports it from a JAX process). Everything here runs on a CPU
in about a minute.
"""

import os  # noqa: E402

os.environ.setdefault("KERAS_BACKEND", "jax")

from keras_mirasol.logs import quiet_native_logs  # noqa: E402

quiet_native_logs()

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_text  # noqa: E402, F401  (the `answer` signature's ops)

from keras_mirasol.data.media import read_clip  # noqa: E402
from keras_mirasol.data.media import write_clip  # noqa: E402
from keras_mirasol.export import export_saved_model  # noqa: E402
from keras_mirasol.models import MirasolCausalLM  # noqa: E402

"""
## A run folder

`keras-mirasol train` ends with a run folder: a preset that
`MirasolCausalLM.from_preset` loads (config, weights, tokenizer,
preprocessor). Here a randomly initialised `mirasol_tiny` with the bundled
vocabulary stands in for a trained run: its answers are noise, but the
exported model must give exactly the answers the Keras model gives, and
that is what this guide checks, to the character. The seed fixes the
random weights, so every run of this guide prints the same answers.
"""

keras.utils.set_random_seed(0)
lm = MirasolCausalLM.from_preset("mirasol_tiny")
lm.save_to_preset("runs/tiny")
lm = MirasolCausalLM.from_preset("runs/tiny")

"""
## Export

TF Serving loads numbered version folders under a model folder, so export
to `<model>/<version>`. `max_length` is the prompt plus answer length of
the generating signatures. `answer` (string in, string out) is opt-in: it
tokenizes inside the graph with TensorFlow Text ops, which the stock
model server has but `saved_model_cli run` and custom C++ loaders lack.
The command line does the same: `keras-mirasol export --model runs/tiny
--out exported/mirasol/1 --max-length 24 --answer`.
"""

MAX_LENGTH = 24
result = export_saved_model(
    lm,
    "exported/mirasol/1",
    max_length=MAX_LENGTH,
    signatures=("serving_default", "encode_av", "generate", "answer"),
)
for name, signature in result["signatures"].items():
    inputs = {k: v["shape"] for k, v in signature["inputs"].items()}
    print(f"{name}: {inputs}")

"""
`None` is a dynamic dimension: any batch size, and any text length for
`serving_default`. Media have the model's fixed shapes: 16 frames of
32x32 RGB in [0, 1] and 32,000 audio samples at 16 kHz for `mirasol_tiny`.

## Inspect it

`saved_model_cli` ships with TensorFlow. `show` lists a signature's
inputs and outputs, as a client sees them.
"""

shown = subprocess.run(
    [
        sys.executable,
        "-m",
        "tensorflow.python.tools.saved_model_cli",
        "show",
        "--dir",
        "exported/mirasol/1",
        "--tag_set",
        "serve",
        "--signature_def",
        "generate",
    ],
    capture_output=True,
    text=True,
    check=True,
)
print(shown.stdout)

"""
## A clip from a media file

A client cuts and resizes the clip to the model's shapes before it sends
it: `read_clip` decodes a file at the model's frame and sample rates and
`lm.preprocessor.prepare_media` takes the centred window. Here a short
mp4 is written first: a red square that turns blue, with a tone.
"""

frames = np.zeros((24, 48, 48, 3), np.uint8)
frames[:12, 12:36, 12:36, 0] = 255
frames[12:, 12:36, 12:36, 2] = 255
seconds = np.arange(3 * 16000) / 16000
tone = 0.3 * np.sin(2 * np.pi * 440 * seconds)
write_clip("clip.mp4", frames, fps=8, audio=tone, sample_rate=16000)

backbone = lm.backbone
clip = read_clip(
    "clip.mp4", fps=backbone.frame_rate, sample_rate=backbone.audio_sample_rate
)
media = lm.preprocessor.prepare_media(clip, 0.5)
media = {k: np.asarray(v)[None] for k, v in media.items()}  # a batch of 1
print({k: v.shape for k, v in media.items()})

"""
## The request a client sends

TF Serving's REST `predict` API takes a JSON body that names the signature
and gives each input column-wise, one list entry per clip. A client posts
it to `http://HOST:8501/v1/models/mirasol:predict`, e.g. with
`requests.post(url, json=body)`.
"""

questions = ["what colour is the square at the start?"]
body = {
    "signature_name": "answer",
    "inputs": {
        "video": media["video"].tolist(),
        "audio": media["audio"].tolist(),
        "question": questions,
    },
}
request = json.dumps(body)
print(f"request body: {len(request) / 1e6:.1f} MB")

"""
No server runs here, so play its part: parse the body, turn each input
into a tensor of the signature's dtype, and call the signature, as the
server does after it loads `exported/mirasol/1`. A server with only one
output drops its name: the reply is `{"outputs": [...]}`.
"""

served = tf.saved_model.load("exported/mirasol/1")


def predict(request):
    """What TF Serving does with a `predict` request body (a str)."""
    body = json.loads(request)
    signature = served.signatures[body["signature_name"]]
    specs = signature.structured_input_signature[1]
    inputs = {
        name: tf.constant(value, dtype=specs[name].dtype)
        for name, value in body["inputs"].items()
    }
    outputs = signature(**inputs)
    (output,) = outputs.values()
    return {"outputs": output.numpy().tolist()}


reply = predict(request)
served_answers = [a.decode("utf-8") for a in reply["outputs"]]
keras_answers = lm.generate(
    {**media, "prompts": questions}, max_length=MAX_LENGTH
)
print("served:", served_answers)
print("keras: ", list(keras_answers))
assert served_answers == list(keras_answers)

"""
## Without TensorFlow Text: the `generate` signature

A server without TensorFlow Text ops calls `generate`, which takes and
returns token ids. The client packs the prompt with the run's
preprocessor, as `lm.generate` does, and detokenizes the ids after the
prompt; every position after the end token is 0.
"""

packed = lm.preprocessor.generate_preprocess(
    {**media, "prompts": questions}, sequence_length=MAX_LENGTH
)
body = {
    "signature_name": "generate",
    "inputs": {
        "video": media["video"].tolist(),
        "audio": media["audio"].tolist(),
        "token_ids": np.asarray(packed["token_ids"]).tolist(),
        "padding_mask": np.asarray(packed["padding_mask"], "int32").tolist(),
    },
}
token_ids = np.asarray(predict(json.dumps(body))["outputs"])
prompt_length = int(np.asarray(packed["padding_mask"]).sum())
tokenizer = lm.preprocessor.tokenizer
answer_ids = [i for i in token_ids[0, prompt_length:] if i != 0]
if answer_ids and answer_ids[-1] == tokenizer.end_token_id:
    answer_ids = answer_ids[:-1]
print("generate:", tokenizer.detokenize(np.asarray(answer_ids, "int32")))

"""
## Run the real server

```shell
docker run -p 8501:8501 \\
    --mount type=bind,source=$PWD/exported/mirasol,target=/models/mirasol \\
    -e MODEL_NAME=mirasol -t tensorflow/serving \\
    --xla_cpu_compilation_enabled=true
```

The flag is for exports from the JAX backend: each signature is StableHLO
that the server compiles with XLA. A GPU server needs an export for both
platforms (`--platform cpu --platform cuda`). Use a TF Serving release at
least as new as the TensorFlow that exported the model. A new version
folder next to `1` is picked up without a restart.
"""
