"""pop_tf's own file sinks and TFRecord framing, the same on every runner and every filesystem.

Beam's `WriteToTFRecord` and `WriteToText` finalize their files through side inputs, which Beam
2.77's DaskRunner does not run correctly: the job reports success while the last shard holds no
records. These sinks need only Map, GroupByKey and FlatMap:

    (prefix, order key, record) ─ key by (prefix, shard), shard = hash(order key) ─ GroupByKey ─
      each shard sorted by order key, written to `<folder>/_tmp/…`, renamed to
      `<folder>/<prefix>-SSSSS-of-NNNNN<suffix>` ─ one summary {"file", "records"} per shard

Every shard of every prefix is written, also an empty one, so a folder always holds exactly
`num_shards` files per prefix; the content of each file depends only on its records, not on the
runner or the bundle that wrote it (a retried task rewrites the same bytes). Files are written
through Beam's `FileSystems`, so `folder` may be local or on gs://, s3://, hdfs://. A writer
renames its file into place only once it is complete; the driver removes `_tmp` (`remove_temporary`)
before it reads the outputs.

The TFRecord framing (`write_record`, `iter_records`) is TensorFlow's: `tf.data.TFRecordDataset`
and Beam's `ReadAllFromTFRecord` read these files, and `iter_records` reads any GZIP TFRecord
file without importing TensorFlow.

Beam 2.77's DaskRunner also computes only the pipeline's last transform and what it depends on,
so a job must end in one transform that depends on every sink: `finish` flattens the sinks'
summaries into it.
"""

import hashlib
import json
import struct
import uuid

import apache_beam as beam
import google_crc32c
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

TMP = "_tmp"


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_record(f, record: bytes) -> None:
    """Appends one TFRecord (length, its masked CRC-32C, the data, its masked CRC-32C) to `f`."""
    length = struct.pack("<Q", len(record))
    f.write(length + struct.pack("<I", _masked_crc(length)) + record + struct.pack("<I", _masked_crc(record)))


def write_line(f, line: str) -> None:
    """Appends one line of text, UTF-8, to `f`."""
    f.write(line.encode("utf-8") + b"\n")


class CorruptRecordError(ValueError):
    """A TFRecord file is truncated or fails its checksum."""


def _read_records(f, path: str):
    while True:
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            raise CorruptRecordError(f"TFRecord file {path} ends inside a record header")
        length, length_crc = struct.unpack("<QI", header)
        if _masked_crc(header[:8]) != length_crc:
            raise CorruptRecordError(f"TFRecord file {path} has a record length that fails its checksum")
        body = f.read(length + 4)
        if len(body) < length + 4:
            raise CorruptRecordError(f"TFRecord file {path} ends inside a record")
        record = body[:length]
        if _masked_crc(record) != struct.unpack("<I", body[length:])[0]:
            raise CorruptRecordError(f"TFRecord file {path} has a record that fails its checksum")
        yield record


def iter_records(pattern: str):
    """Every record of the GZIP TFRecord files matching `pattern` (files in sorted order)."""
    paths = sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    for path in paths:
        with FileSystems.open(path, compression_type=CompressionTypes.GZIP) as f:
            yield from _read_records(f, path)


def shard_name(prefix: str, shard: int, num_shards: int, suffix: str) -> str:
    """Beam's default shard name: `<prefix>-SSSSS-of-NNNNN<suffix>`."""
    return f"{prefix}-{shard:05d}-of-{num_shards:05d}{suffix}"


def shard_of(order_key, num_shards: int) -> int:
    """The shard of a record: a hash of its order key, the same in every process and run."""
    digest = hashlib.sha256(json.dumps(order_key, sort_keys=True, default=str).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def _write_atomically(folder: str, name: str, write, compression_type) -> None:
    tmp = FileSystems.join(folder, TMP, f"{uuid.uuid4().hex}-{name}")
    with FileSystems.create(tmp, compression_type=compression_type) as f:
        write(f)
    target = FileSystems.join(folder, name)
    if FileSystems.exists(target):  # a retried task: same records, same bytes
        FileSystems.delete([target])
    FileSystems.rename([tmp], [target])


def _write_shard(key_and_items, folder: str, num_shards: int, suffix: str):
    (prefix, shard), items = key_and_items
    records = sorted((item for item in items if item is not None), key=lambda item: item[0])
    name = shard_name(prefix, shard, num_shards, suffix)

    def write(f):
        for _, record in records:
            write_record(f, record)

    _write_atomically(folder, name, write, CompressionTypes.GZIP)
    yield {"file": name, "records": len(records)}


class WriteShards(beam.PTransform):
    """Writes `(prefix, order key, serialized record)` as GZIP TFRecord shards into `folder`.

    Args:
        prefixes: every prefix the input may carry; each gets `num_shards` files, also empty ones.
        num_shards: files per prefix (>= 1).
    Returns a PCollection of one `{"file": name, "records": count}` per file written.
    """

    def __init__(self, folder: str, prefixes, num_shards: int, suffix: str):
        super().__init__()
        if num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards!r}")
        self.folder, self.prefixes, self.num_shards, self.suffix = folder, tuple(prefixes), num_shards, suffix

    def expand(self, pcoll):
        num_shards = self.num_shards
        keyed = pcoll | "KeyByShard" >> beam.Map(
            lambda item: ((item[0], shard_of(item[1], num_shards)), (item[1], item[2])))
        # One empty marker per shard, so a shard no record hashes to is still written.
        markers = (pcoll.pipeline
                   | "AllShards" >> beam.Create([((prefix, shard), None) for prefix in self.prefixes
                                                 for shard in range(num_shards)]))
        return ((keyed, markers)
                | "WithEveryShard" >> beam.Flatten()
                | "GroupByShard" >> beam.GroupByKey()
                | "WriteShard" >> beam.FlatMap(_write_shard, self.folder, num_shards, self.suffix))


def _write_lines(key_and_items, folder: str, name: str):
    _, items = key_and_items
    lines = sorted((item for item in items if item is not None), key=lambda item: item[0])

    def write(f):
        for _, line in lines:
            write_line(f, line)

    _write_atomically(folder, name, write, CompressionTypes.UNCOMPRESSED)
    yield {"file": name, "records": len(lines)}


class WriteLines(beam.PTransform):
    """Writes `(order key, text line)` into one UTF-8 file `folder/name`, sorted by order key,
    also when there are no lines. Returns a PCollection of one `{"file", "records"}`."""

    def __init__(self, folder: str, name: str):
        super().__init__()
        self.folder, self.name = folder, name

    def expand(self, pcoll):
        keyed = pcoll | "KeyAll" >> beam.Map(lambda item: (None, item))
        marker = pcoll.pipeline | "OneFile" >> beam.Create([(None, None)])
        return ((keyed, marker)
                | "WithTheFile" >> beam.Flatten()
                | "GroupAll" >> beam.GroupByKey()
                | "WriteFile" >> beam.FlatMap(_write_lines, self.folder, self.name))


def finish(summaries) -> beam.PCollection:
    """The job's last transform: every sink's summaries in one PCollection (see the module doc);
    apply it after everything else."""
    return tuple(summaries) | "AllWritten" >> beam.Flatten()


def remove_temporary(folder: str) -> None:
    """Removes what writers left in `folder/_tmp` (an attempt that died before its rename)."""
    tmp = FileSystems.join(folder, TMP)
    leftovers = [m.path for m in FileSystems.match([FileSystems.join(tmp, "*")])[0].metadata_list]
    if leftovers:
        FileSystems.delete(leftovers)
    if FileSystems.exists(tmp):  # the folder itself, on filesystems that have folders
        FileSystems.delete([tmp])
