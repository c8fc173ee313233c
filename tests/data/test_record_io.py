import json

import numpy as np
import pytest
import tensorflow as tf

from keras_mirasol import cli
from keras_mirasol.data.record_io import BadRecord
from keras_mirasol.data.record_io import DamagedRecords
from keras_mirasol.data.record_io import check_records
from keras_mirasol.data.record_io import read_records
from keras_mirasol.data.record_io import write_records

# TFRecord files: the Keras backend plays no part.
pytestmark = pytest.mark.one_backend

FRAMING = 16  # bytes around each record's data: length, 2 checksums


def payloads(count=30, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.bytes(int(rng.integers(0, 2000))) for _ in range(count)]


def tf_write(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def offsets(records):
    """Byte offset of each record, and of the end of the file."""
    return np.concatenate([[0], np.cumsum([len(r) + FRAMING for r in records])])


def good_and_bad(path):
    good, bad = [], []
    for item in read_records(path):
        if isinstance(item, BadRecord):
            bad.append(item)
        else:
            good.append(item)
    return good, bad


def tf_read(path):
    return [r.numpy() for r in tf.data.TFRecordDataset(str(path))]


def test_the_same_bytes_as_tensorflows_writer_and_reader(tmp_path):
    records = payloads()
    tf_write(tmp_path / "tf.tfrecord", records)
    write_records(tmp_path / "ours.tfrecord", records)
    written = (tmp_path / "ours.tfrecord").read_bytes()
    assert written == (tmp_path / "tf.tfrecord").read_bytes()
    assert tf_read(tmp_path / "ours.tfrecord") == records
    good, bad = good_and_bad(tmp_path / "tf.tfrecord")
    assert bad == []
    assert good == list(enumerate(records))


def damage(path, records, edits):
    """Write `records`, apply `edits` ({byte: xor}), return the bytes."""
    tf_write(path, records)
    data = bytearray(path.read_bytes())
    for at, xor in edits.items():
        data[at] ^= xor
    path.write_bytes(bytes(data))
    return data


@pytest.mark.parametrize(
    "where, reason",
    [(12, "damaged data"), (2, "damaged header"), (9, "damaged header")],
)
def test_one_damaged_record_costs_only_itself(tmp_path, where, reason):
    """Data byte, length byte, length checksum byte of record 7."""
    records = payloads()
    ends = offsets(records)
    at = int(ends[7]) + (where if where < 12 else 12 + len(records[7]) // 2)
    path = tmp_path / "damaged.tfrecord"
    damage(path, records, {at: 0x10})
    # TensorFlow's reader stops at the damaged record, the rest is lost.
    with pytest.raises(tf.errors.DataLossError):
        tf_read(path)
    good, bad = good_and_bad(path)
    assert good == [(i, r) for i, r in enumerate(records) if i != 7]
    assert len(bad) == 1
    assert (bad[0].file, bad[0].record) == (str(path), 7)
    assert bad[0].offset == ends[7]
    assert bad[0].reason.startswith(reason)
    assert str(bad[0]).startswith(f"{path}: record 7 at byte {ends[7]}: ")


def test_a_file_cut_short_keeps_every_whole_record(tmp_path):
    records = payloads()
    tf_write(tmp_path / "whole.tfrecord", records)
    data = (tmp_path / "whole.tfrecord").read_bytes()
    ends = offsets(records)
    for cut in (int(ends[20]) + 5, int(ends[20]) + 14, int(ends[21]) - 1):
        path = tmp_path / f"cut{cut}.tfrecord"
        path.write_bytes(data[:cut])
        good, bad = good_and_bad(path)
        assert good == list(enumerate(records[:20]))
        assert [(b.record, b.offset) for b in bad] == [(20, ends[20])]
        assert bad[0].reason.startswith("truncated")


def test_random_damage_loses_exactly_the_damaged_records(tmp_path):
    """Seeded bit flips anywhere (headers, data, checksums): every record
    whose bytes are untouched comes out, in order; none that was touched
    does; each damaged stretch is reported."""
    records = payloads(60, seed=1)
    ends = offsets(records)
    rng = np.random.default_rng(2)
    for trial in range(40):
        count = int(rng.integers(1, 6))
        where = rng.choice(int(ends[-1]), size=count, replace=False)
        path = tmp_path / f"trial{trial}.tfrecord"
        damage(
            path, records, {int(w): 1 << int(rng.integers(8)) for w in where}
        )
        touched = set(np.searchsorted(ends, where, side="right") - 1)
        good, bad = good_and_bad(path)
        assert [i for i, _ in good] == [
            i for i in range(len(records)) if i not in touched
        ]
        assert all(records[i] == r for i, r in good)
        # Neighbouring damaged headers are one stretch: one report.
        assert 1 <= len(bad) <= len(touched)
        assert {b.record for b in bad} <= touched


def test_check_records_repairs_and_keeps_the_original(tmp_path):
    records = payloads()
    ends = offsets(records)
    damaged = tmp_path / "a.tfrecord"
    original = damage(damaged, records, {int(ends[3]) + 20: 1})
    intact = tmp_path / "b.tfrecord"
    tf_write(intact, records[:5])
    before = intact.read_bytes()
    files = [str(damaged), str(intact)]
    report = check_records(files)
    assert report["files"] == 2 and report["records"] == 29 + 5
    assert report["damaged"] == [
        f"{damaged}: record 3 at byte {ends[3]}: damaged data (its checksum "
        "fails)"
    ]
    assert report["repaired"] == []
    assert damaged.read_bytes() == original  # only read

    report = check_records(files, repair=True)
    assert report["repaired"] == [str(damaged)]
    assert tf_read(damaged) == records[:3] + records[4:]
    assert (tmp_path / "a.tfrecord.damaged").read_bytes() == original
    assert intact.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.tfrecord",
        "a.tfrecord.damaged",
        "b.tfrecord",
    ]
    assert check_records(files)["damaged"] == []


def test_the_check_records_command(tmp_path, capsys):
    records = payloads(10)
    damage(tmp_path / "a.tfrecord", records, {int(offsets(records)[4]): 2})
    argv = ["check-records", str(tmp_path)]
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip())["records"] == 9
    lines = captured.err.strip().splitlines()
    assert [line for line in lines if line.startswith("damaged")] == [
        f"damaged {tmp_path / 'a.tfrecord'}: record 4 at byte "
        f"{offsets(records)[4]}: damaged header (its checksum fails); bytes "
        f"{offsets(records)[4]} to {offsets(records)[5]} skipped"
    ]
    assert cli.main(argv + ["--repair"]) == 0
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert tf_read(tmp_path / "a.tfrecord") == records[:4] + records[5:]


def test_damaged_records_are_noted_once(caplog):
    damaged = DamagedRecords()
    bad = BadRecord("f.tfrecord", 3, 120, "damaged data (its checksum fails)")
    with caplog.at_level("WARNING"):
        assert damaged.add(bad)
        assert not damaged.add(bad._replace(reason="again"))
        assert damaged.add(bad._replace(record=4, offset=300))
    assert len(damaged) == 2
    assert [b.record for b in damaged] == [3, 4]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "f.tfrecord: record 3 at byte 120" in messages[0]
    assert "check-records --repair" in messages[0]
