import copy
import json
import os

import numpy as np
import pytest

from tests.conftest import load_tool
from tests.data.hostile_decoders import read_clip_or_misbehave

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend


fuzz = load_tool("fuzz_convert")


@pytest.fixture(scope="module")
def fast_slice(tmp_path_factory):
    """50 inputs, every kind at least once, and a decoder that crashes its
    worker or hangs on two of them."""
    out = tmp_path_factory.mktemp("fuzz")
    summary = fuzz.run(
        str(out),
        50,
        seed=0,
        workers=2,
        timeout=10,
        long_seconds=20,
        hostile=True,
        read_clip=read_clip_or_misbehave,
    )
    with open(out / "inputs" / "manifest.json") as f:
        manifest = json.load(f)
    with open(out / "records" / "report.json") as f:
        report = json.load(f)
    written = fuzz.read_written(str(out / "records"))
    return summary, manifest, report, written


def test_every_invariant_holds_on_the_fast_slice(fast_slice):
    summary, manifest, _, _ = fast_slice
    assert summary["failures"] == [] and summary["ok"]
    kinds = {item["kind"] for item in manifest["inputs"]}
    assert kinds == set(fuzz.KINDS) | set(fuzz.HOSTILE_KINDS)
    assert summary["good"] >= 16 and summary["bad"] >= 18
    assert summary["either"] >= 2


def test_good_inputs_are_written_and_bad_ones_reported(fast_slice):
    """The same properties as `check`, spelled out on the files."""
    _, manifest, report, written = fast_slice
    ids = [clip["clip_id"] for clip in written]
    assert len(ids) == len(set(ids)) == report["clips"]
    locations = [skip["input"] for skip in report["skipped"]]
    assert len(locations) == len(set(locations))
    for item in manifest["inputs"]:
        location = f"{manifest['annotations']}:{item['line']}"
        if item["expect"] == "good":
            assert item["clip_id"] in ids and location not in locations
        elif item["expect"] == "bad":
            assert item["clip_id"] not in ids and location in locations
        else:
            assert (item["clip_id"] in ids) != (location in locations)
    expected = len(ids) + len(locations)
    assert expected == len(manifest["inputs"])
    reasons = {skip["input"]: skip["reason"] for skip in report["skipped"]}
    for item in manifest["inputs"]:
        if item["kind"] in ("crash", "hang"):
            location = f"{manifest['annotations']}:{item['line']}"
            assert fuzz.REASONS[item["kind"]] in reasons[location]


def test_written_audio_is_finite_and_float_pcm_is_cleaned(fast_slice):
    _, manifest, _, written = fast_slice
    assert all(clip["finite"] and clip["peak"] <= 1.0 for clip in written)
    by_id = {clip["clip_id"]: clip for clip in written}
    nan_inputs = [item for item in manifest["inputs"] if "non_finite" in item]
    assert nan_inputs
    for item in nan_inputs:
        audio = by_id[item["clip_id"]]["audio"]
        assert (audio[item["non_finite"]["nan"]] == 0).all()
        assert (audio[item["non_finite"]["posinf"]] == 1).all()
        assert (audio[item["non_finite"]["neginf"]] == -1).all()


def test_decoding_memory_follows_the_output(fast_slice):
    summary, _, _, _ = fast_slice
    memory = summary["long_decode"]
    assert memory["output_frames"] == 20
    # Holding every decoded frame would grow memory by `decoded_mib`.
    assert memory["growth_mib"] < memory["decoded_mib"] / 4


def test_check_catches_a_lost_input(fast_slice):
    """`check` is what the fuzz run trusts: it must fail when `convert`
    drops a good clip, writes one twice, or loses track of a bad one."""
    _, manifest, report, written = fast_slice
    assert fuzz.check(manifest, report, written) == []
    good = next(i for i in manifest["inputs"] if i["expect"] == "good")
    kept = [c for c in written if c["clip_id"] != good["clip_id"]]
    failures = fuzz.check(manifest, report, kept)
    assert any(good["clip_id"] in f and "not written" in f for f in failures)
    twice = written + [written[0]]
    assert any(
        "written 2 times" in f for f in fuzz.check(manifest, report, twice)
    )
    bad = next(i for i in manifest["inputs"] if i["expect"] == "bad")
    lost = copy.deepcopy(report)
    location = f"{manifest['annotations']}:{bad['line']}"
    lost["skipped"] = [s for s in lost["skipped"] if s["input"] != location]
    failures = fuzz.check(manifest, lost, written)
    assert any(bad["clip_id"] in f and "not reported" in f for f in failures)
    silent = copy.deepcopy(report)
    silent["skipped"][0]["reason"] = ""
    failures = fuzz.check(manifest, silent, written)
    assert any("without a reason" in f for f in failures)


def test_inputs_are_a_function_of_the_seed(tmp_path):
    first = fuzz.generate(str(tmp_path / "a"), 40, seed=3)
    second = fuzz.generate(str(tmp_path / "b"), 40, seed=3)
    other = fuzz.generate(str(tmp_path / "c"), 40, seed=4)
    assert first["inputs"] == second["inputs"] != other["inputs"]
    for item in first["inputs"]:
        names = [
            n
            for n in os.listdir(first["videos"])
            if n.startswith(item["clip_id"] + ".")
        ]
        for name in names:
            a = (tmp_path / "a" / "videos" / name).read_bytes()
            b = (tmp_path / "b" / "videos" / name).read_bytes()
            assert a == b, name


def test_the_command_line_prints_one_json_line(tmp_path, capsys):
    out = tmp_path / "fuzz"
    argv = ["--inputs", "32", "--seed", "1", "--out", str(out)]
    argv += ["--workers", "2", "--timeout", "20", "--long-seconds", "0"]
    assert fuzz.main(argv) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(line)
    assert summary["ok"] and summary["inputs"] == 32
    assert summary["written"] >= summary["good"]
    with pytest.raises(SystemExit):
        fuzz.main(argv)
    assert "is not empty" in capsys.readouterr().err


def test_damaged_records_are_skipped_and_counted(fast_slice):
    """Each shard of the slice's records cut short, and seeded bit flips:
    the pipeline counts exactly the damaged records."""
    summary, _, report, written = fast_slice
    assert summary["records_damaged"] >= len(report["shards"])
    assert summary["records_skipped"] == summary["records_damaged"]
    assert summary["records_damaged"] < len(written)


def test_the_record_check_catches_a_lost_question(fast_slice, tmp_path):
    """`read_damaged_records` fails when a clip's questions are missing
    or the count of damaged records is off."""
    summary, manifest, _, written = fast_slice
    out = os.path.dirname(os.path.dirname(manifest["videos"]))
    # The run's own damage, made again from its seed.
    damaged = fuzz.damage_records(
        os.path.join(out, "records"),
        str(tmp_path / "again"),
        np.random.default_rng([0, 1]),
    )
    assert len(damaged) == summary["records_damaged"]
    assert (
        fuzz.read_damaged_records(str(tmp_path / "again"), written, damaged)[0]
        == []
    )
    one = sorted(damaged)[0]
    failures, _ = fuzz.read_damaged_records(
        str(tmp_path / "again"), written, damaged - {one}
    )
    assert any("counted" in f for f in failures)
    assert any(f"missing from: ['{one}']" in f for f in failures)
    extra = dict(written[0], clip_id="never written")
    failures, _ = fuzz.read_damaged_records(
        str(tmp_path / "again"), written + [extra], damaged
    )
    assert failures == [
        "the pipeline's questions differ from the undamaged clips' "
        "(missing from: ['never written']; unexpected from: [])"
    ]


@pytest.mark.large
def test_the_full_run_of_1700_inputs(tmp_path):
    """Over 1000 damaged inputs (media, annotation lines and records)."""
    summary = fuzz.run(
        str(tmp_path / "fuzz"), 1700, seed=0, workers=2, timeout=20
    )
    assert summary["failures"] == [] and summary["ok"]
    assert summary["written"] == summary["good"] + summary["written_either"]
    damaged = summary["bad"] + summary["either"] + summary["records_damaged"]
    assert damaged >= 1000
