import pathlib
import runpy

import pytest

GUIDES = sorted(
    (pathlib.Path(__file__).parents[1] / "guides").glob("*.py"),
)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: p.stem)
def test_guide_runs_top_to_bottom(guide):
    text = guide.read_text()
    for field in ("Title:", "Author:", "Description:", "Accelerator:"):
        assert field in text.split('"""')[1], field
    assert len(text.splitlines()) < 300
    runpy.run_path(str(guide), run_name="__main__")
