"""The demo's settings, its data folders and `demo --long` end to end."""

import json
import os

import pytest

from keras_mirasol import cli
from keras_mirasol.demo import LONG_CLIPS
from keras_mirasol.demo import model_overrides
from keras_mirasol.demo import prepare_data
from keras_mirasol.demo import run_demo
from keras_mirasol.models import MirasolBackbone
from keras_mirasol.models import backbone_presets
from tests.conftest import h5_arrays

TINY = backbone_presets["mirasol_tiny"]["config"]


def test_long_clips_keep_the_snippets_and_add_no_parameters():
    overrides = model_overrides("mirasol_tiny", long=True)
    assert overrides == {"num_frames": 128, "num_snippets": 32}
    long = dict(TINY, **overrides)
    # Each snippet spans the same frames as the preset's.
    per_snippet = TINY["num_frames"] // TINY["num_snippets"]
    assert long["num_frames"] // long["num_snippets"] == per_snippet
    assert long["num_snippets"] == LONG_CLIPS["num_snippets"]
    # 8x the clip, the same model: nothing grows with the clip.
    assert (
        MirasolBackbone(**long).count_params()
        == MirasolBackbone(**TINY).count_params()
    )


def test_the_baseline_and_the_combiner_are_config_switches():
    ttm = model_overrides("mirasol_tiny", long=True, combiner="ttm")
    assert ttm["combiner_type"] == "ttm" and ttm["num_snippets"] == 32
    baseline = model_overrides("mirasol_tiny", long=True, unchunked=True)
    assert baseline == {
        "num_frames": 128,
        "num_snippets": 1,
        "combiner_type": "all_tokens",
    }
    # The baseline keeps every token of the clip, so it grows with it.
    assert (
        MirasolBackbone(**dict(TINY, **baseline)).count_params()
        > MirasolBackbone(**TINY).count_params()
    )
    assert model_overrides("mirasol_tiny") == {}


def test_a_combiner_for_the_baseline_is_refused(tmp_path):
    with pytest.raises(ValueError, match="has no Combiner to choose"):
        run_demo(str(tmp_path), combiner="ttm", unchunked=True)
    assert not os.listdir(tmp_path)


def test_a_short_clip_stage_is_refused_where_it_cannot_apply(tmp_path):
    # The baseline's weights are sized by the clip: none carry over.
    with pytest.raises(ValueError, match="--short-steps 0"):
        run_demo(str(tmp_path), long=True, unchunked=True, short_steps=10)
    with pytest.raises(ValueError, match="without long=True"):
        run_demo(str(tmp_path), short_steps=10)
    assert not os.listdir(tmp_path)


@pytest.mark.one_backend
def test_a_rerun_with_other_clips_replaces_the_demo_records(tmp_path, capsys):
    prepare_data(str(tmp_path), clips=10, seed=0, image_size=(32, 32))
    records = prepare_data(str(tmp_path), clips=20, seed=0, image_size=(32, 32))
    assert "replacing records of another run" in capsys.readouterr().out
    clips = sum(
        json.loads(open(os.path.join(records[s], "report.json")).read())[
            "clips"
        ]
        for s in records
    )
    assert clips == 20


@pytest.mark.one_backend
def test_demo_long_trains_on_16_second_clips_of_32_snippets(tmp_path, capsys):
    argv = ["demo", "--long", "--combiner", "ttm", "--workdir", str(tmp_path)]
    argv += ["--clips", "10", "--steps", "2", "--epochs", "1"]
    argv += ["--short-clips", "10", "--short-steps", "2"]
    argv += ["--batch-size", "4", "--questions-per-clip", "2", "--workers", "1"]
    assert cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["clip_seconds"] == 16.0
    assert summary["num_snippets"] == 32
    assert summary["combiner"] == "ttm"
    assert summary["preset"] == "mirasol_tiny"
    assert summary["short_steps"] == 2
    assert summary["examples"] == 6  # 1 test clip, 6 questions
    # Stage 1 on 2 s clips of 4 snippets, stage 2 on 16 s clips of 32,
    # from stage 1's weights and tokenizer.
    short = tmp_path / "runs" / "demo_long_ttm_2s"
    config = json.loads((short / "config.json").read_text())["config"]
    assert (config["num_frames"], config["num_snippets"]) == (16, 4)
    assert config["combiner_type"] == "ttm"
    run = tmp_path / "runs" / "demo_long_ttm"
    config = json.loads((run / "config.json").read_text())["config"]
    assert (config["num_frames"], config["num_snippets"]) == (128, 32)
    assert config["combiner_type"] == "ttm"
    vocabulary = "assets/tokenizer/vocabulary.spm"
    assert (run / vocabulary).read_bytes() == (short / vocabulary).read_bytes()
    # 2 Adam steps at 1e-3 move no weight by more than about 2e-3; new
    # random weights would be far from stage 1's.
    before = h5_arrays(short / "model.weights.h5")
    after = h5_arrays(run / "model.weights.h5")
    assert before.keys() == after.keys()
    assert max(abs(after[k] - before[k]).max() for k in before) < 1e-2
    report = json.loads(
        (
            tmp_path
            / "data"
            / "demo_long"
            / "records"
            / "train"
            / "report.json"
        ).read_text()
    )
    assert report["skipped"] == [] and report["clips"] == 8
    # The run folder keeps the summary and its figures.
    saved = json.loads((run / "summary.json").read_text())
    assert saved == {k: v for k, v in summary.items() if k != "plots"}
    assert summary["plots"] == [
        str(run / "training.png"),
        str(run / "accuracy_by_type.png"),
    ]
    for path in summary["plots"]:
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
