"""A Beam filesystem for the scheme `poptest://`, kept in a local folder: a stand-in for gs://,
s3:// or hdfs:// in tests. Like an object store it is reached only through Beam's FileSystems:
`os` functions given a `poptest://` path fail or write somewhere else, which the tests check.

The local folder is `$POP_TF_TEST_FS_ROOT`, so that worker processes see the same one.
"""

import os

from apache_beam.io.filesystem import FileMetadata, FileSystem
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "poptest"
PREFIX = f"{SCHEME}://"
ROOT_VARIABLE = "POP_TF_TEST_FS_ROOT"


def _local(path: str) -> str:
    if not path.startswith(PREFIX):
        raise ValueError(f"not a {PREFIX} path: {path!r}")
    return os.path.join(os.environ[ROOT_VARIABLE], path[len(PREFIX):])


def _remote(local: str) -> str:
    return PREFIX + os.path.relpath(local, os.environ[ROOT_VARIABLE]).replace(os.sep, "/")


class PopTestFileSystem(FileSystem):
    """Every operation is the local filesystem's on the translated path."""

    def __init__(self, pipeline_options=None):
        super().__init__(pipeline_options)
        self._local_fs = LocalFileSystem(pipeline_options)

    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *(p.strip("/") for p in paths)])

    def split(self, path):
        head, _, tail = path.rstrip("/").rpartition("/")
        return (head if len(head) >= len(PREFIX) else PREFIX), tail

    def has_dirs(self):
        return True

    def _url_dirname(self, url_or_path):
        head = url_or_path.rpartition("/")[0]
        return head if len(head) >= len(PREFIX) else PREFIX

    def mkdirs(self, path):
        return self._local_fs.mkdirs(_local(path))

    def _list(self, dir_or_prefix):
        for folder, _, names in os.walk(_local(dir_or_prefix)):
            for name in names:
                local = os.path.join(folder, name)
                yield FileMetadata(_remote(local), os.path.getsize(local), os.path.getmtime(local))

    def create(self, path, *args, **kwargs):
        return self._local_fs.create(_local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return self._local_fs.open(_local(path), *args, **kwargs)

    def copy(self, sources, destinations):
        return self._local_fs.copy([_local(p) for p in sources], [_local(p) for p in destinations])

    def rename(self, sources, destinations):
        return self._local_fs.rename([_local(p) for p in sources], [_local(p) for p in destinations])

    def exists(self, path):
        return self._local_fs.exists(_local(path))

    def size(self, path):
        return self._local_fs.size(_local(path))

    def last_updated(self, path):
        return self._local_fs.last_updated(_local(path))

    def checksum(self, path):
        return self._local_fs.checksum(_local(path))

    def metadata(self, path):
        meta = self._local_fs.metadata(_local(path))
        return FileMetadata(path, meta.size_in_bytes, meta.last_updated_in_seconds)

    def delete(self, paths):
        return self._local_fs.delete([_local(p) for p in paths])

    def report_lineage(self, path, lineage):
        return None
