import os
import pathlib
import subprocess
import sys

import pytest

GUIDES = sorted(
    (pathlib.Path(__file__).parents[1] / "guides").glob("*.py"),
)
# Guides that choose their backend themselves (keras.distribution is
# JAX-only): run once, not under every backend.
ONE_BACKEND = {"distributed_training"}


def _param(guide):
    one = guide.stem in ONE_BACKEND
    return pytest.param(guide, marks=[pytest.mark.one_backend] if one else [])


@pytest.mark.parametrize(
    "guide", [_param(g) for g in GUIDES], ids=lambda p: p.stem
)
def test_guide_runs_top_to_bottom(guide, tmp_path):
    text = guide.read_text()
    for field in ("Title:", "Author:", "Description:", "Accelerator:"):
        assert field in text.split('"""')[1], field
    assert len(text.splitlines()) < 300
    # As a reader runs it: `python guide.py`, in a fresh process (a guide
    # may set JAX flags, which only a new process reads).
    done = subprocess.run(
        [sys.executable, str(guide)],
        cwd=tmp_path,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
