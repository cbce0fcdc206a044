"""pop_tf's own sinks: TensorFlow's TFRecord framing, every shard written, contents by order key."""

import gzip
import os

import apache_beam as beam
import pytest

from pop_tf.beam import sinks


def test_framing_round_trip_is_tensorflows_and_damage_is_caught(tmp_path):
    import tensorflow as tf

    values = [b"", b"a", os.urandom(70_000), b"\x00" * 9]
    with gzip.open(tmp_path / "x-00000-of-00001.tfrecord.gz", "wb") as f:
        for value in values:
            sinks.write_record(f, value)
    path = str(tmp_path / "x-00000-of-00001.tfrecord.gz")
    assert list(sinks.iter_records(path)) == values
    assert list(tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator()) == values
    original = gzip.decompress((tmp_path / "x-00000-of-00001.tfrecord.gz").read_bytes())
    data = bytearray(original)
    data[20] ^= 1  # inside the second record's length
    (tmp_path / "bad.tfrecord.gz").write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(sinks.CorruptRecordError, match="fails its checksum"):
        list(sinks.iter_records(str(tmp_path / "bad.tfrecord.gz")))
    (tmp_path / "short.tfrecord.gz").write_bytes(gzip.compress(original[:-3]))
    with pytest.raises(sinks.CorruptRecordError, match="ends inside a record"):
        list(sinks.iter_records(str(tmp_path / "short.tfrecord.gz")))


def test_every_shard_is_written_sorted_by_order_key(tmp_path):
    items = [("a", k, f"a{k}".encode()) for k in (5, 3, 9, 1)] + [("b", 7, b"b7")]
    with beam.Pipeline(runner="FnApiRunner") as p:
        summaries = (p | beam.Create(items) | sinks.WriteShards(str(tmp_path), ["a", "b", "c"], 3, ".tfrecord.gz"))
        lines = p | "Lines" >> beam.Create([(2, "two"), (1, "one")]) | sinks.WriteLines(str(tmp_path), "lines.txt")
        sinks.finish([summaries, lines])
    sinks.remove_temporary(str(tmp_path))
    names = sorted(os.listdir(tmp_path))
    assert names == sorted([f"{prefix}-0000{k}-of-00003.tfrecord.gz" for prefix in "abc" for k in range(3)]
                           + ["lines.txt"])
    by_shard = {name: list(sinks.iter_records(str(tmp_path / name))) for name in names if name != "lines.txt"}
    assert sorted(r for records in by_shard.values() for r in records) == sorted(i[2] for i in items)
    for name, records in by_shard.items():
        prefix, shard = name[0], int(name[2:7])
        expected = sorted((k, v) for p_, k, v in items if p_ == prefix and sinks.shard_of(k, 3) == shard)
        assert records == [v for _, v in expected], name
    assert (tmp_path / "lines.txt").read_text() == "one\ntwo\n"
