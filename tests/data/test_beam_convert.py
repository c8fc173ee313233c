"""`convert` as an Apache Beam pipeline writes what `convert` writes.

Each test runs Beam's DirectRunner on the generated videos of
`tests/data/test_records.py` (good, damaged and missing files) and
compares the shards, byte for byte, and the report with the
single-machine `convert`'s.
"""

import importlib
import json
import multiprocessing
import sys

import pytest

from keras_mirasol import cli
from keras_mirasol.data import beam_convert
from tests.data.damaged_media import DAMAGED
from tests.data.damaged_media import DAMAGED_SETTINGS
from tests.data.damaged_media import write_annotations
from tests.data.hostile_decoders import read_clip_or_misbehave
from tests.data.test_records import convert_damaged
from tests.data.test_records import shard_bytes
from tests.data.test_records import skipped_reasons
from tests.data.test_records import written_clip_ids

# Backend-independent: run once, under JAX.
pytestmark = pytest.mark.one_backend

# What differs between two runs that write the same records.
RUN_FIELDS = ("seconds", "resumed_shards")


def beam_convert_damaged(root, out, **options):
    return beam_convert.convert(
        str(root / "videos"),
        str(root / "qa.jsonl"),
        str(out),
        clips_per_shard=4,
        verbose=False,
        **DAMAGED_SETTINGS,
        **options,
    )


def same_run(report):
    return {k: v for k, v in report.items() if k not in RUN_FIELDS}


@pytest.fixture(scope="module")
def local(damaged):
    out = damaged / "local"
    return convert_damaged(damaged, out, 2), out


def test_beam_writes_the_same_shards_and_report(damaged, local, tmp_path):
    report, out = local
    beam_out = tmp_path / "beam"
    beam_report = beam_convert_damaged(damaged, beam_out)
    assert report["skipped_clips"] == len(DAMAGED) and report["clips"] == 8
    assert same_run(beam_report) == same_run(report)
    assert beam_report["resumed_shards"] == 0
    # Same names and bytes: the records and their order within shards.
    assert shard_bytes(beam_out) == shard_bytes(out)
    assert json.loads((beam_out / "report.json").read_text()) == beam_report
    assert (beam_out / "convert.json").read_text() == (
        out / "convert.json"
    ).read_text()


def test_beam_resumes_shards_written_by_either_engine(damaged, local, tmp_path):
    report, out = local
    beam_out = tmp_path / "beam"
    # The local engine's output, less one shard: Beam writes that one only.
    beam_out.mkdir()
    for name, data in shard_bytes(out).items():
        (beam_out / name).write_bytes(data)
    (beam_out / "convert.json").write_bytes((out / "convert.json").read_bytes())
    lost = sorted(beam_out.glob("shard-00001-*"))
    assert [p.suffix for p in lost] == [".json", ".tfrecord"]
    for path in lost:
        path.unlink()
    kept = beam_out / "shard-00000-of-00004.tfrecord"
    kept_time = kept.stat().st_mtime_ns
    beam_report = beam_convert_damaged(damaged, beam_out)
    assert beam_report["resumed_shards"] == len(report["shards"]) - 1
    assert same_run(beam_report) == same_run(report)
    assert shard_bytes(beam_out) == shard_bytes(out)
    assert kept.stat().st_mtime_ns == kept_time
    # Started again with other settings: refused, nothing rewritten.
    with pytest.raises(ValueError, match="other settings"):
        beam_convert.convert(
            str(damaged / "videos"),
            str(damaged / "qa.jsonl"),
            str(beam_out),
            clips_per_shard=4,
            verbose=False,
            **dict(DAMAGED_SETTINGS, fps=4),
        )
    assert shard_bytes(beam_out) == shard_bytes(out)


def test_a_crashing_or_hanging_decoder_costs_only_its_file(hostile):
    order = ["good0.mp4", "crash.mp4", "good1.mp4", "hang.mp4"]
    order += ["raises.mp4", "good2.mp4"]
    write_annotations(hostile, order)
    out = hostile / "beam"
    report = beam_convert_damaged(
        hostile, out, timeout=2, _read_clip=read_clip_or_misbehave
    )
    assert written_clip_ids(out) == ["good0", "good1", "good2"]
    videos = hostile / "videos"
    reasons = skipped_reasons(report, out)
    assert reasons == {
        "crash.mp4": "worker process died while decoding "
        f"{videos / 'crash.mp4'} (killed by signal SIGSEGV)",
        "hang.mp4": f"timed out after 2 s decoding {videos / 'hang.mp4'}; "
        "worker killed",
        "raises.mp4": f"could not decode {videos / 'raises.mp4'}: "
        "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xcf in "
        "position 0: invalid byte",
    }
    assert multiprocessing.active_children() == []


def test_the_convert_command_runs_beam(damaged, local, tmp_path, capsys):
    report, out = local
    beam_out = tmp_path / "beam"
    argv = ["convert", "--videos", str(damaged / "videos")]
    argv += ["--annotations", str(damaged / "qa.jsonl"), "--out", str(beam_out)]
    argv += ["--clips-per-shard", "4", "--fps", str(DAMAGED_SETTINGS["fps"])]
    argv += ["--image-size", *map(str, DAMAGED_SETTINGS["image_size"])]
    argv += ["--sample-rate", str(DAMAGED_SETTINGS["sample_rate"])]
    argv += ["--runner", "DirectRunner"]
    argv += ["--pipeline-options=--direct_num_workers=2"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["clips"] == report["clips"]
    assert summary["skipped_clips"] == report["skipped_clips"]
    assert shard_bytes(beam_out) == shard_bytes(out)
    skipped = [
        line for line in captured.err.splitlines() if line.startswith("skip")
    ]
    assert len(skipped) == len(DAMAGED)


def test_the_convert_command_refuses_mixed_engine_flags(damaged, tmp_path):
    argv = ["convert", "--videos", str(damaged / "videos")]
    argv += ["--annotations", str(damaged / "qa.jsonl")]
    argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="--runner DirectRunner"):
        cli.main(argv + ["--pipeline-options=--direct_num_workers=2"])
    with pytest.raises(ValueError, match="direct_num_workers"):
        cli.main(argv + ["--runner", "DirectRunner", "--workers", "2"])
    assert not (tmp_path / "out").exists()


def test_without_apache_beam_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "apache_beam", None)
    monkeypatch.delitem(sys.modules, beam_convert.__name__)
    with pytest.raises(ImportError, match=r"keras-mirasol\[beam\]"):
        importlib.import_module(beam_convert.__name__)
