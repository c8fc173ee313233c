import json
import multiprocessing
import os
import shutil
from time import monotonic

import numpy as np
import pytest
import tensorflow as tf

from keras_mirasol import cli
from keras_mirasol.data import convert
from keras_mirasol.data import read_clip
from keras_mirasol.data import write_clip
from keras_mirasol.data.records import find_video
from keras_mirasol.data.records import serialize_clip
from keras_mirasol.data.snippets import decode_audio
from keras_mirasol.data.snippets import decode_frames
from keras_mirasol.data.snippets import parse_clip
from tests.data.damaged_media import DAMAGED
from tests.data.damaged_media import DAMAGED_SETTINGS
from tests.data.damaged_media import write_annotations
from tests.data.hostile_decoders import read_clip_or_misbehave

# tf.data, media files and TFRecords: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend

RATE = 8000
SIZE = (16, 16)
SETTINGS = dict(fps=8, image_size=SIZE, sample_rate=RATE)
GOOD = ["good0.mp4", "good1.mp4", "good2.mp4"]
BAD = {
    "corrupt.mp4": "corrupt.mp4",
    "truncated.mp4": "truncated.mp4",
    "empty.mp4": "empty.mp4",
    "missing.mp4": "not found",
}


def video_of(index, frames=8):
    """Frame k is uniformly grey at level 20 * k + 5 * index."""
    levels = 20 * np.arange(frames) + 5 * index
    return np.broadcast_to(
        levels[:, None, None, None].astype(np.uint8), (frames, 16, 16, 3)
    )


def tone(index, seconds=1.0):
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.4 * np.sin(2 * np.pi * (300 + 200 * index) * t)).astype("f4")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """Videos (good, silent and damaged) and their annotations.

    Annotation lines by video, in file order: two questions for each good
    video (`good1` named without extension), one for the silent video and
    each damaged or missing one, plus a line that is not JSON and one
    without a video field.
    """
    root = tmp_path_factory.mktemp("records")
    videos = root / "videos"
    videos.mkdir()
    for index, name in enumerate(GOOD):
        write_clip(videos / name, video_of(index), 8, tone(index), RATE)
    write_clip(videos / "silent.mp4", video_of(3), 8, audio=None)
    rng = np.random.default_rng(0)
    (videos / "corrupt.mp4").write_bytes(rng.bytes(4000))
    data = (videos / "good0.mp4").read_bytes()
    (videos / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (videos / "empty.mp4").write_bytes(b"")
    lines = []
    for index, name in enumerate(GOOD):
        video = "good1" if index == 1 else name
        for q in range(2):
            lines.append(
                {
                    "video": video,
                    "question": f"question {q} about {name}",
                    "answer": f"answer {q}",
                    "type": f"type{q}",
                }
            )
    lines[1]["clip_id"] = "ignored: the first annotation names the clip"
    lines[0]["clip_id"] = "first"
    lines.append({"video": "silent.mp4", "caption": "a quiet ramp"})
    for name in BAD:
        lines.append({"video": name, "question": "q", "answer": "a"})
    text = [json.dumps(line) for line in lines]
    text.insert(2, "{not json")
    text.insert(5, json.dumps({"question": "no video", "answer": "a"}))
    annotations = root / "qa.jsonl"
    annotations.write_text("\n".join(text) + "\n")
    return root


def run_convert(source, out, workers=1, clips_per_shard=2, **overrides):
    settings = dict(SETTINGS, **overrides)
    return convert(
        str(source / "videos"),
        str(source / "qa.jsonl"),
        str(out),
        clips_per_shard=clips_per_shard,
        workers=workers,
        verbose=False,
        **settings,
    )


@pytest.fixture(scope="module")
def converted(source):
    out = source / "out"
    report = run_convert(source, out, workers=2)
    return report, out


def read_records(out):
    files = sorted(str(p) for p in out.glob("*.tfrecord"))
    records = []
    for serialized in tf.data.TFRecordDataset(files):
        x = decode_audio(decode_frames(parse_clip(serialized)))
        records.append({k: v.numpy() for k, v in x.items()})
    return records


def shard_bytes(out):
    return {p.name: p.read_bytes() for p in sorted(out.glob("shard-*"))}


def test_every_good_clip_is_delivered(source, converted):
    report, out = converted
    records = read_records(out)
    names = [r["clip_id"].decode() for r in records]
    # Ids come from the first annotation, else the file name.
    assert names == ["first", "good1", "good2", "silent"]
    assert report["clips"] == 4 and report["skipped_clips"] == 4
    assert report["annotations"] == 7
    for index, record in enumerate(records):
        assert record["video"].shape == (8, 16, 16, 3)
        assert record["fps"] == 8.0 and record["sample_rate"] == RATE
        levels = record["video"].mean(axis=(1, 2, 3))
        np.testing.assert_allclose(
            levels, 20 * np.arange(8) + 5 * index, atol=6
        )
    for index, record in enumerate(records[:3]):
        name = GOOD[index]
        assert record["questions"].tolist() == [
            f"question 0 about {name}".encode(),
            f"question 1 about {name}".encode(),
        ]
        assert record["answers"].tolist() == [b"answer 0", b"answer 1"]
        assert record["types"].tolist() == [b"type0", b"type1"]
    assert records[3]["questions"].tolist() == [b""]
    assert records[3]["answers"].tolist() == [b"a quiet ramp"]


def test_records_hold_what_read_clip_decodes(source, converted):
    _, out = converted
    record = read_records(out)[1]
    clip = read_clip(source / "videos" / "good1.mp4", **SETTINGS)
    np.testing.assert_array_equal(record["video"], clip["video"])
    np.testing.assert_allclose(record["audio"], clip["audio"], atol=2 / 32768)
    assert record["has_audio"]
    # The tone is there: its spectrum peaks at 500 Hz.
    spectrum = np.abs(np.fft.rfft(record["audio"]))
    assert abs(np.argmax(spectrum) * RATE / len(record["audio"]) - 500) < 5


def test_no_annotation_is_dropped_silently(source, converted):
    report, out = converted
    lines = (source / "qa.jsonl").read_text().splitlines()
    assert len(lines) == 13
    assert report["annotations"] + len(report["skipped"]) == len(lines)
    assert report["skipped_annotations"] == len(report["skipped"]) == 6
    reasons = {}
    for skipped in report["skipped"]:
        path, line = skipped["input"].rsplit(":", 1)
        assert path == str(source / "qa.jsonl")
        reasons[int(line)] = skipped["reason"]
    # Lines 3 (not JSON) and 6 (no video), then one line per bad file.
    assert reasons[3].startswith("not JSON")
    assert "no video field" in reasons[6]
    bad_lines = dict(zip(range(10, 14), BAD.values()))
    for line, problem in bad_lines.items():
        assert problem in reasons[line]
    assert set(reasons) == {3, 6, *bad_lines}
    by_video = {s.get("video") for s in report["skipped"]}
    assert by_video == {None, *BAD}
    with open(out / "report.json") as f:
        assert json.load(f) == report


def test_a_clip_without_audio_is_kept_as_silence(converted):
    report, out = converted
    assert report["no_audio"] == ["silent.mp4"]
    records = {r["clip_id"].decode(): r for r in read_records(out)}
    silent = records.pop("silent")
    assert not silent["has_audio"]
    np.testing.assert_array_equal(silent["audio"], np.zeros(RATE))
    for record in records.values():
        assert record["has_audio"]
        assert np.abs(record["audio"]).max() > 0.3


def test_shards_and_their_reports(converted):
    report, out = converted
    # 8 videos (4 unusable) in shards of 2.
    assert report["shards"] == [
        f"shard-{i:05d}-of-00004.tfrecord" for i in range(4)
    ]
    assert report["resumed_shards"] == 0
    names = sorted(os.listdir(out))
    assert names == sorted(
        ["convert.json", "report.json"]
        + report["shards"]
        + [s.replace(".tfrecord", ".json") for s in report["shards"]]
    )
    counts = [
        sum(1 for _ in tf.data.TFRecordDataset(str(out / s)))
        for s in report["shards"]
    ]
    # good0 good1 | good2 silent | corrupt truncated | empty missing
    assert counts == [2, 2, 0, 0]


def test_a_second_run_resumes_every_shard(tmp_path, source, converted):
    report, out = converted
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = shard_bytes(copy)
    times = {p.name: p.stat().st_mtime_ns for p in copy.glob("shard-*")}
    again = run_convert(source, copy)
    assert again["resumed_shards"] == len(report["shards"]) == 4
    assert shard_bytes(copy) == before
    assert {p.name: p.stat().st_mtime_ns for p in copy.glob("shard-*")} == times
    for key in ("clips", "annotations", "skipped", "no_audio", "shards"):
        assert again[key] == report[key]


def test_a_deleted_shard_is_written_again(tmp_path, source, converted):
    _, out = converted
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = shard_bytes(copy)
    times = {p.name: p.stat().st_mtime_ns for p in copy.glob("shard-*")}
    for suffix in (".tfrecord", ".json"):
        (copy / f"shard-00001-of-00004{suffix}").unlink()
    again = run_convert(source, copy)
    assert again["resumed_shards"] == 3
    assert shard_bytes(copy) == before
    for name, time in times.items():
        if name.startswith("shard-00001"):
            continue
        assert (copy / name).stat().st_mtime_ns == time
    assert again["no_audio"] == ["silent.mp4"]


def test_other_settings_into_the_same_folder_are_an_error(
    tmp_path, source, converted
):
    _, out = converted
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    before = shard_bytes(copy)
    with pytest.raises(
        ValueError, match=r"other settings \(changed: \['fps'\]"
    ):
        run_convert(source, copy, fps=4)
    with pytest.raises(ValueError, match=r"changed: \['image_size'\]"):
        run_convert(source, copy, image_size=(8, 8))
    assert shard_bytes(copy) == before


def test_no_usable_annotation_is_an_error(tmp_path, source):
    annotations = tmp_path / "bad.jsonl"
    annotations.write_text('{"question": "q", "answer": "a"}\nnope\n')
    with pytest.raises(ValueError, match="No usable annotation"):
        convert(
            str(source / "videos"),
            str(annotations),
            str(tmp_path / "out"),
            verbose=False,
        )


def test_serialize_then_parse_round_trip():
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (3, 10, 6, 3), dtype=np.uint8)
    audio = rng.uniform(-1, 1, 4000).astype(np.float32)
    audio[:4] = [1.0, -1.0, 0.0, 0.5]
    clip = dict(
        video=video, audio=audio, fps=8.0, sample_rate=RATE, has_audio=True
    )
    notes = [
        {"question": "what colour?", "answer": "red", "type": "video"},
        {"question": "", "answer": "a caption, ünïcode", "type": ""},
    ]
    serialized = serialize_clip(clip, notes, "clip_7", "clip_7.mp4")
    parsed = parse_clip(tf.constant(serialized))
    assert parsed["frames"].shape == (3,)
    assert parsed["clip_id"].numpy() == b"clip_7"
    assert parsed["fps"].numpy() == 8.0
    assert parsed["sample_rate"].dtype == tf.int32
    assert parsed["sample_rate"].numpy() == RATE
    assert parsed["has_audio"].numpy().item() is True
    assert parsed["questions"].numpy().tolist() == [b"what colour?", b""]
    assert [a.decode() for a in parsed["answers"].numpy()] == [
        "red",
        "a caption, ünïcode",
    ]
    assert parsed["types"].numpy().tolist() == [b"video", b""]
    x = decode_audio(decode_frames(parsed))
    assert x["video"].dtype == tf.uint8
    np.testing.assert_array_equal(x["video"].numpy(), video)
    assert x["audio"].dtype == tf.float32 and x["audio"].shape == (4000,)
    # int16 PCM: within half a quantization step.
    np.testing.assert_allclose(
        x["audio"].numpy(), audio, atol=0.5 / 32767 + 1e-7
    )
    assert np.abs(x["audio"].numpy()).max() <= 1.0


def serialized_audio(audio):
    """A serialized clip of one black 2x2 frame and `audio`."""
    clip = dict(
        video=np.zeros((1, 2, 2, 3), np.uint8),
        audio=audio,
        fps=8.0,
        sample_rate=RATE,
        has_audio=True,
    )
    return serialize_clip(clip, [], "c", "c.mp4")


def test_audio_round_trip_is_within_one_quantization_step():
    audio = np.random.default_rng(1).uniform(-1, 1, 4000).astype(np.float32)
    serialized = serialized_audio(audio)
    x = decode_audio(parse_clip(tf.constant(serialized)))
    np.testing.assert_allclose(x["audio"].numpy(), audio, atol=1 / 32767)


def test_nan_and_infinite_samples_are_stored_as_silence_and_full_scale():
    audio = np.array([0.5, np.nan, np.inf, -np.inf, 3.0, -3.0], np.float32)
    serialized = serialized_audio(audio)
    pcm = parse_clip(tf.constant(serialized))["audio_pcm"].numpy()
    stored = np.frombuffer(pcm, "<i2").tolist()
    assert stored == [16384, 0, 32767, -32767, 32767, -32767]


def test_find_video_tries_the_name_then_msrvtt_numbering(tmp_path):
    (tmp_path / "7010.mp4").write_bytes(b"x")
    (tmp_path / "video12.webm").write_bytes(b"x")
    assert find_video(str(tmp_path), "7010") == str(tmp_path / "7010.mp4")
    assert find_video(str(tmp_path), "12") == str(tmp_path / "video12.webm")
    assert find_video(str(tmp_path), "video12.mp4") == str(
        tmp_path / "video12.webm"
    )
    assert find_video(str(tmp_path), "13") is None


def convert_damaged(root, out, workers, **options):
    return run_convert(
        root, out, workers, clips_per_shard=4, **DAMAGED_SETTINGS, **options
    )


def written_clip_ids(out):
    files = sorted(str(p) for p in out.glob("*.tfrecord"))
    return [
        parse_clip(serialized)["clip_id"].numpy().decode()
        for serialized in tf.data.TFRecordDataset(files)
    ]


def skipped_reasons(report, out):
    with open(out / "report.json") as f:
        assert json.load(f) == report
    reasons = {s["video"]: s["reason"] for s in report["skipped"]}
    assert len(reasons) == len(report["skipped"]) == report["skipped_clips"]
    return reasons


@pytest.mark.parametrize("workers", [2, 1])
def test_damaged_files_are_skipped_and_every_good_clip_written(
    damaged, tmp_path, workers
):
    out = tmp_path / "out"
    report = convert_damaged(damaged, out, workers)
    good = ["good0", "good1", "good2", "metadata", "handler"]
    good += ["good3", "good4", "good5"]
    assert written_clip_ids(out) == good
    assert report["clips"] == report["annotations"] == 8
    reasons = skipped_reasons(report, out)
    assert sorted(reasons) == sorted(DAMAGED)
    assert reasons["missing.mp4"] == "file not found"
    for name in DAMAGED[:-1]:
        assert str(damaged / "videos" / name) in reasons[name]


@pytest.mark.parametrize("workers", [2, 1])
def test_any_exception_while_decoding_costs_only_its_file(hostile, workers):
    """Not only `MediaError`: whatever a decoder raises is reported."""
    order = ["good0.mp4", "raises.mp4", "good1.mp4"]
    write_annotations(hostile, order)
    out = hostile / "out"
    report = convert_damaged(
        hostile, out, workers, _read_clip=read_clip_or_misbehave
    )
    assert written_clip_ids(out) == ["good0", "good1"]
    assert skipped_reasons(report, out) == {
        "raises.mp4": f"could not decode {hostile / 'videos' / 'raises.mp4'}"
        ": UnicodeDecodeError: 'utf-8' codec can't decode byte 0xcf in "
        "position 0: invalid byte"
    }


def test_the_convert_command_reports_damaged_files(damaged, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["convert", "--videos", str(damaged / "videos"), "--out", str(out)]
    argv += ["--annotations", str(damaged / "qa.jsonl"), "--workers", "2"]
    argv += ["--timeout", "30"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["clips"] == 8 and summary["skipped_clips"] == 5
    skipped = [
        line for line in captured.err.splitlines() if line.startswith("skip")
    ]
    assert len(skipped) == 5


def test_a_worker_that_dies_costs_only_its_file(hostile):
    order = ["good0.mp4", "crash.mp4", "good1.mp4", "killed.mp4"]
    order += ["good2.mp4", "good3.mp4", "exit.mp4", "good4.mp4"]
    write_annotations(hostile, order)
    out = hostile / "out"
    report = convert_damaged(hostile, out, 2, _read_clip=read_clip_or_misbehave)
    assert written_clip_ids(out) == [f"good{i}" for i in range(5)]
    reasons = skipped_reasons(report, out)
    videos = hostile / "videos"
    assert reasons == {
        "crash.mp4": "worker process died while decoding "
        f"{videos / 'crash.mp4'} (killed by signal SIGSEGV)",
        "killed.mp4": "worker process died while decoding "
        f"{videos / 'killed.mp4'} (killed by signal SIGKILL)",
        "exit.mp4": "worker process died while decoding "
        f"{videos / 'exit.mp4'} (exit code 3)",
    }
    assert multiprocessing.active_children() == []


def test_a_hanging_decoder_is_killed_after_the_timeout(hostile):
    order = ["good0.mp4", "hang.mp4", "good1.mp4", "good2.mp4"]
    write_annotations(hostile, order)
    out = hostile / "out"
    start = monotonic()
    report = convert_damaged(
        hostile, out, 2, timeout=2, _read_clip=read_clip_or_misbehave
    )
    # The hanging worker ignores SIGTERM: killed 1 s after the timeout.
    assert monotonic() - start < 30
    assert written_clip_ids(out) == ["good0", "good1", "good2"]
    hang = hostile / "videos" / "hang.mp4"
    assert skipped_reasons(report, out) == {
        "hang.mp4": f"timed out after 2 s decoding {hang}; worker killed"
    }
    # The worker is gone, reaped (not a zombie), and so is every other.
    pid = int((hostile / "videos" / "hang.mp4.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert multiprocessing.active_children() == []
