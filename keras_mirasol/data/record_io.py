"""TFRecord files read record by record, past damaged ones.

A TFRecord file is a run of records, each framed as

    uint64  length of the data (little-endian)
    uint32  masked CRC-32C of the 8 length bytes
    bytes   data [length]
    uint32  masked CRC-32C of the data

`tf.data.TFRecordDataset` stops with a `DataLossError` at the first record
whose checksum fails or that a truncated copy cut short; every good record
after it in that file is lost with it (`ignore_errors` drops the rest of
the file too). `read_records` checks each record's checksums itself and
goes on past a bad one: past its data when only the data is damaged (the
length's own checksum vouches for the length), or to the next offset that
holds a valid header when the header is damaged. It yields every good
record, and a `BadRecord` naming the file, the record's number and byte
offset and the reason for each damaged one, so a pipeline can skip and
count them. `write_records` writes the same framing (what
`tf.io.TFRecordWriter` writes, uncompressed).

Pure Python and `google_crc32c` (CRC-32C in C); no TensorFlow.
"""

import collections
import logging
import os
import struct
import threading

import google_crc32c

_HEADER = 12  # length (8) and its checksum (4)
_FOOTER = 4  # checksum of the data
_READ = 1 << 20  # bytes read at a time while looking for the next header
_ZEROS = bytes(4)

logger = logging.getLogger(__name__)


class BadRecord(
    collections.namedtuple("BadRecord", ["file", "record", "offset", "reason"])
):
    """A damaged record: `file`, `record` (its number in the file, counting
    good and damaged records from 0), `offset` (its first byte) and
    `reason`."""

    __slots__ = ()

    def __str__(self):
        return (
            f"{self.file}: record {self.record} at byte {self.offset}: "
            f"{self.reason}"
        )


def masked_crc(data):
    """TFRecord's masked CRC-32C of `data` (bytes), as an int."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _header_length(header):
    """The data length a 12-byte header gives, or None if its checksum
    fails."""
    (length,) = struct.unpack("<Q", header[:8])
    (crc,) = struct.unpack("<I", header[8:12])
    return length if masked_crc(header[:8]) == crc else None


def _next_header(f, start, size):
    """The first offset >= `start` of `f` that holds a valid header whose
    record fits in the file's `size` bytes, or None."""
    position = start
    while position + _HEADER <= size:
        f.seek(position)
        window = f.read(_READ + _HEADER)
        # A record's length is under 2 GB (protobuf's limit): the upper
        # four bytes of a header are zero, which rules out most offsets
        # before any checksum is computed.
        at = window.find(_ZEROS, 4) - 4
        while 0 <= at <= len(window) - _HEADER:
            length = _header_length(window[at : at + _HEADER])
            end = position + at + _HEADER + (length or 0) + _FOOTER
            if length is not None and end <= size:
                return position + at
            at = window.find(_ZEROS, at + 5) - 4
        position += _READ
    return None


def read_records(path):
    """Every record of a TFRecord file, in order, past damaged ones.

    Args:
        path: str. An uncompressed TFRecord file.

    Yields:
        `(record, data)` for each good record: `record` its number in the
        file, `data` bytes; and a `BadRecord` for each damaged one (a
        failed checksum, or a record the end of the file cuts short),
        where it is met.
    """
    path = os.fsdecode(path)
    size = os.path.getsize(path)
    record, offset = 0, 0
    with open(path, "rb") as f:
        while offset < size:
            f.seek(offset)
            header = f.read(_HEADER)
            if len(header) < _HEADER:
                yield BadRecord(
                    path,
                    record,
                    offset,
                    f"truncated: the file ends {size - offset} bytes into "
                    "the record's header",
                )
                return
            length = _header_length(header)
            if length is None:
                following = _next_header(f, offset + 1, size)
                end = size if following is None else following
                yield BadRecord(
                    path,
                    record,
                    offset,
                    "damaged header (its checksum fails); bytes "
                    f"{offset} to {end} skipped",
                )
                record, offset = record + 1, end
                continue
            end = offset + _HEADER + length + _FOOTER
            if end > size:
                yield BadRecord(
                    path,
                    record,
                    offset,
                    f"truncated: {length} bytes of data announced, the file "
                    f"ends {size - offset - _HEADER} bytes into them",
                )
                return
            data = f.read(length)
            (crc,) = struct.unpack("<I", f.read(_FOOTER))
            if masked_crc(data) != crc:
                yield BadRecord(
                    path, record, offset, "damaged data (its checksum fails)"
                )
            else:
                yield record, data
            record, offset = record + 1, end


_INTACT = {}  # (path, size, mtime) -> bool: files already read


def is_intact(path):
    """Whether every record of a TFRecord file is whole and its checksums
    hold. Read once per file version (path, size, modification time) in
    a process; the answer is remembered.

    Args:
        path: str. An uncompressed TFRecord file.

    Returns:
        bool.
    """
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _INTACT:
        _INTACT[key] = not any(
            isinstance(item, BadRecord) for item in read_records(path)
        )
    return _INTACT[key]


def write_records(path, records):
    """Write records to a TFRecord file (uncompressed), atomically.

    Args:
        path: str. The file; written as `path + ".tmp"`, flushed to disk
            and renamed.
        records: iterable of bytes.
    """
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        for data in records:
            length = struct.pack("<Q", len(data))
            f.write(length + struct.pack("<I", masked_crc(length)))
            f.write(data + struct.pack("<I", masked_crc(data)))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class DamagedRecords:
    """The damaged records a pipeline met, each once.

    Thread-safe (tf.data reads files on several threads). Each record is
    logged as a warning the first time it is met; passes over the data
    after the first meet it again and add nothing.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._records = {}

    def add(self, bad):
        """Note `bad` (a `BadRecord`); True if it is new."""
        key = (bad.file, bad.offset)
        with self._lock:
            if key in self._records:
                return False
            self._records[key] = bad
        logger.warning(
            "Skipped a damaged record: %s. `keras-mirasol check-records "
            "--repair %s` rewrites the file with its good records.",
            bad,
            os.path.dirname(bad.file) or ".",
        )
        return True

    def __len__(self):
        with self._lock:
            return len(self._records)

    def __iter__(self):
        with self._lock:
            records = sorted(self._records.values())
        return iter(records)


def check_records(files, repair=False):
    """Read every record of `files`; list the damaged ones; repair.

    Args:
        files: list of str. TFRecord files (uncompressed).
        repair: bool. Rewrite each file that holds damaged records with
            its good records only, in order (atomically); the original
            is kept beside it as `FILE.damaged` (not read by the
            pipeline, which reads `*.tfrecord`). Defaults to `False`.

    Returns:
        dict: `files` and `records` (good records) read, `damaged` (one
        line per damaged record: file, record number, byte offset and
        reason) and `repaired` (the files rewritten).
    """
    report = {"files": 0, "records": 0, "damaged": [], "repaired": []}
    for path in files:
        report["files"] += 1
        good, bad = [], []
        for item in read_records(path):
            if isinstance(item, BadRecord):
                bad.append(item)
            else:
                report["records"] += 1
                if repair:
                    good.append(item[1])
        report["damaged"] += [str(item) for item in bad]
        if repair and bad:
            _repair(path, good)
            report["repaired"].append(path)
    return report


def _repair(path, good):
    """`path` holds `good` only; its old bytes stay as `path.damaged`.

    At every moment `path` is either the old file or the repaired one.
    """
    write_records(f"{path}.repaired", good)
    kept = f"{path}.damaged"
    if os.path.exists(kept):
        os.remove(kept)
    os.link(path, kept)
    os.replace(f"{path}.repaired", path)
