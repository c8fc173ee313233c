import logging
import os
import subprocess
import sys

import pytest

from keras_mirasol import logs


@pytest.mark.one_backend
def test_quiet_native_logs_sets_defaults_and_keeps_the_users(monkeypatch):
    monkeypatch.setattr(logs, "has_accelerator", lambda: False)
    assert logs.quiet_native_logs({}) == {
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "JAX_PLATFORMS": "cpu",
    }
    mine = {"TF_CPP_MIN_LOG_LEVEL": "0", "JAX_PLATFORMS": "cuda"}
    assert logs.quiet_native_logs(dict(mine)) == mine
    # With a GPU or TPU, JAX chooses its platform itself.
    monkeypatch.setattr(logs, "has_accelerator", lambda: True)
    assert logs.quiet_native_logs({}) == {"TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.mark.one_backend
def test_absl_warnings_are_quieted_unless_their_level_was_set(monkeypatch):
    absl = logging.getLogger("absl")
    level = absl.level
    monkeypatch.setattr(os, "environ", {})
    try:
        absl.setLevel(logging.NOTSET)
        logs.quiet_native_logs()
        assert absl.level == logging.ERROR
        absl.setLevel(logging.INFO)
        logs.quiet_native_logs()
        assert absl.level == logging.INFO
    finally:
        absl.setLevel(level)


@pytest.mark.one_backend
def test_command_line_writes_no_tensorflow_log_lines(tmp_path):
    # `tokenizer` runs TensorFlow Text ops: without the defaults,
    # TensorFlow writes its failed CUDA probe ("E0000 ... cuInit") here.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "JAX_PLATFORMS")
    }
    annotations = tmp_path / "train.jsonl"
    annotations.write_text(
        '{"video": "a.mp4", "question": "what colour?", "answer": "red"}\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "keras_mirasol.cli", "tokenizer"]
        + [str(annotations), "--output", str(tmp_path / "v.spm")]
        + ["--vocabulary-size", "30"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    # Lines from TensorFlow's C++ logging after it started ("E0000 ...",
    # "W0000 ..."); the CUDA stub's lines before it ("I0000 ...
    # cudart_stub") are written before any setting is read.
    lines = [
        line
        for line in done.stderr.splitlines()
        if line[:1] in "EW" and line[1:5].isdigit()
    ]
    assert lines == [], lines
