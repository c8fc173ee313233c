import os
import pathlib
import subprocess
import sys

import pytest

GUIDES = sorted(
    (pathlib.Path(__file__).parents[1] / "guides").glob("*.py"),
)
# The figures each guide draws in its working folder.
FIGURES = {
    "getting_started": ["training.png", "snippet_attention.png"],
    "finetune_on_your_videos": ["accuracy_by_type.png"],
    "long_videos": ["scaling.png"],
}


# A guide runs as its reader runs it, on its default backend (JAX; the
# distributed-training guide needs it). What the guides call is tested on
# every backend in tests/models and tests/test_*.py.
@pytest.mark.one_backend
@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
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
        env={k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for name in FIGURES.get(guide.stem, []):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
