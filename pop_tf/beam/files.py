"""Whole-file reads and globs through Beam's `FileSystems` (local paths, gs://, …).

For the drivers of the Beam jobs, which read other stages' small files without importing
TensorFlow (`import tensorflow` costs a process seconds; see `pop_tf.tf_example`).
"""

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


def read_file(path: str) -> bytes:
    """The bytes of the file at `path`, read as stored (no decompression)."""
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        return f.read()


def glob(pattern: str) -> list:
    """The paths that match `pattern`, in the order the filesystem lists them."""
    return [match.path for match in FileSystems.match([pattern])[0].metadata_list]
