"""The figures draw what they are given: each test reads the drawn data
back from the figure and compares it with the input."""

import json
import sys

import numpy as np
import pytest

from keras_mirasol import cli
from keras_mirasol import plots

# Backend-independent (numpy and matplotlib): run once, under JAX.
pytestmark = pytest.mark.one_backend

PNG = b"\x89PNG\r\n\x1a\n"

HISTORY = {
    "loss": [2.5, 0.9, 0.4, 0.2],
    "sparse_categorical_accuracy": [0.4, 0.7, 0.9, 0.97],
    "val_loss": [0.5, 0.25],
    "val_sparse_categorical_accuracy": [0.85, 0.96],
}

SUMMARY = {
    "steps": 400,
    "accuracy": 0.9,
    "per_type": {"audio": 0.95, "video": 1.0, "order": 0.8},
    "zero_video": {"audio": 0.9, "video": 0.2, "order": 0.3},
    "zero_audio": {"audio": 0.3, "video": 1.0, "order": 0.8},
}


@pytest.fixture
def figures(monkeypatch):
    """Every figure the plots save, kept for the test to read."""
    saved = []
    save = plots._save

    def keep(figure, path):
        saved.append(figure)
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def test_history_draws_each_metric_per_step(tmp_path, figures):
    path = plots.plot_history(HISTORY, str(tmp_path / "t.png"), steps=400)
    assert open(path, "rb").read(8) == PNG
    loss, accuracy = figures[0].axes
    for axis, metric in (
        (loss, "loss"),
        (accuracy, "sparse_categorical_accuracy"),
    ):
        train, validation = axis.lines
        np.testing.assert_allclose(train.get_xdata(), [100, 200, 300, 400])
        np.testing.assert_allclose(train.get_ydata(), HISTORY[metric])
        # Two validations over four epochs: every second epoch.
        np.testing.assert_allclose(validation.get_xdata(), [200, 400])
        np.testing.assert_allclose(
            validation.get_ydata(), HISTORY[f"val_{metric}"]
        )
    assert loss.get_yscale() == "log"
    assert accuracy.get_xlabel() == "step"


def test_history_reads_a_run_folder_and_validation_after_the_last_epoch(
    tmp_path, figures
):
    history = dict(HISTORY, val_loss=[0.3])
    (tmp_path / "history.json").write_text(json.dumps(history))
    plots.plot_history(str(tmp_path), str(tmp_path / "t.png"), metrics=["loss"])
    (axis,) = figures[0].axes
    train, validation = axis.lines
    np.testing.assert_allclose(train.get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(validation.get_xdata(), [4])
    assert axis.get_xlabel() == "epoch"


def test_accuracy_by_type_draws_the_summary_and_its_ablations(
    tmp_path, figures
):
    plots.plot_accuracy_by_type(SUMMARY, str(tmp_path / "a.png"))
    (axis,) = figures[0].axes
    labels = [t.get_text() for t in axis.get_xticklabels()]
    assert labels == ["audio", "order", "video"]
    bars = axis.containers
    assert [b.get_label() for b in bars] == [
        "full input",
        "video zeroed",
        "audio zeroed",
    ]
    for container, key in zip(bars, ("per_type", "zero_video", "zero_audio")):
        heights = [bar.get_height() for bar in container]
        assert heights == [SUMMARY[key][t] for t in labels]


def test_scaling_draws_time_and_memory_and_marks_out_of_memory(
    tmp_path, figures
):
    rows = []
    for variant, times in (("ttm", [1.0, 2.0, 4.0]), ("unchunked", [3.0])):
        for frames, step in zip((64, 128, 256), times + [None] * 3):
            rows.append(
                dict(
                    variant=variant,
                    frames=frames,
                    step_s=step,
                    peak_rss_mb=None if step is None else 1024 * step,
                    out_of_memory=step is None,
                )
            )
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"summary": {"scaling": rows}}))
    plots.plot_scaling(str(bench), str(tmp_path / "s.png"))
    time_axis, memory_axis = figures[0].axes
    ttm, unchunked = time_axis.lines[0], time_axis.lines[1]
    np.testing.assert_allclose(ttm.get_xdata(), [64, 128, 256])
    np.testing.assert_allclose(ttm.get_ydata(), [1.0, 2.0, 4.0])
    np.testing.assert_allclose(unchunked.get_xdata(), [64])
    np.testing.assert_allclose(memory_axis.lines[0].get_ydata(), [1, 2, 4])
    notes = [t.get_text() for t in time_axis.texts]
    assert notes == ["out of memory", "out of memory"]


def test_snippet_attention_map_is_the_weights(tmp_path, figures):
    weights = np.random.default_rng(0).random((3, 8)).astype("float32")
    plots.plot_snippet_attention(
        weights, str(tmp_path / "m.png"), tokens=["a", "b", "c"]
    )
    axis = figures[0].axes[0]
    np.testing.assert_array_equal(axis.images[0].get_array(), weights)
    assert [t.get_text() for t in axis.get_yticklabels()] == ["a", "b", "c"]


def test_bad_inputs_say_what_to_give(tmp_path):
    with pytest.raises(ValueError, match="pass metrics= from those"):
        plots.plot_history(
            {"loss": [1.0]}, str(tmp_path / "t.png"), metrics=["auc"]
        )
    with pytest.raises(ValueError, match="per_type"):
        plots.plot_accuracy_by_type({}, str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="bench --scaling"):
        plots.plot_scaling(
            {"summary": {"scaling": []}}, str(tmp_path / "s.png")
        )
    with pytest.raises(ValueError, match=r"snippet_attention\(...\)\[0\]"):
        plots.plot_snippet_attention(
            np.zeros((1, 2, 3)), str(tmp_path / "m.png")
        )
    with pytest.raises(ValueError, match="2 tokens for 3 rows"):
        plots.plot_snippet_attention(
            np.zeros((3, 4)), str(tmp_path / "m.png"), tokens=["a", "b"]
        )
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_the_error_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"keras-mirasol\[guides\]"):
        plots.plot_history(HISTORY, str(tmp_path / "t.png"))


def test_the_plot_command_draws_a_run_and_a_bench_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.json").write_text(json.dumps(HISTORY))
    (run / "summary.json").write_text(json.dumps(SUMMARY))
    rows = [
        dict(
            variant="ttm",
            frames=f,
            step_s=f / 64,
            peak_rss_mb=f,
            out_of_memory=False,
        )
        for f in (64, 128)
    ]
    (tmp_path / "bench.json").write_text(
        json.dumps({"summary": {"scaling": rows}})
    )
    out = tmp_path / "figures"
    argv = ["plot", "--run", str(run), "--bench", str(tmp_path / "bench.json")]
    assert cli.main(argv + ["--out", str(out)]) == 0
    written = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written["plots"] == [
        str(out / "training.png"),
        str(out / "accuracy_by_type.png"),
        str(out / "scaling.png"),
    ]
    for path in written["plots"]:
        assert open(path, "rb").read(8) == PNG
    with pytest.raises(ValueError, match="--run RUN_DIR"):
        cli.main(["plot"])


def test_scaling_without_memory_draws_time_only(tmp_path, figures):
    rows = [dict(variant="ttm", frames=f, step_s=f / 32) for f in (32, 64)]
    plots.plot_scaling(rows, str(tmp_path / "s.png"), time_label="seconds")
    (axis,) = figures[0].axes
    np.testing.assert_allclose(axis.lines[0].get_ydata(), [1.0, 2.0])
    assert axis.get_ylabel() == "seconds"
