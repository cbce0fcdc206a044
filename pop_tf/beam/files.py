"""Whole-file reads and globs through Beam's `FileSystems` (local paths, gs://, …).

For the drivers of the Beam jobs, which read other stages' small files and write their own
(stats.json, config.json) without importing TensorFlow (`import tensorflow` costs a process
seconds; see `pop_tf.tf_example`), wherever the folders lie.
"""

import json

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def read_file(path: str) -> bytes:
    """The bytes of the file at `path`, read as stored (no decompression)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def glob(pattern: str) -> list:
    """The paths that match `pattern`, in the order the filesystem lists them."""
    return [match.path for match in FileSystems.match([pattern])[0].metadata_list]


def write_file(path: str, data: bytes) -> None:
    """Writes `data` to the file at `path` as it is (no compression), replacing it."""
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def write_json(path: str, value) -> None:
    """`value` as indented JSON with sorted keys and a final newline, as pop_tf's stats.json files."""
    write_file(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))
