"""Stage outputs appear whole or not at all: write into a staging folder, check, then install.

A Beam job writes its shards into `<output>/.staging-<id>/`; the stage counts and checks what
was written there; only then `install` moves the files into `<output>`, replacing the files of
the previous run that the stage owns. A killed run leaves at most a staging folder, which the
next run removes, so a half-written output is never taken as complete.
"""

import os
import shutil
import uuid

from pop_tf.errors import PopTfError

PREFIX = ".staging-"


class OutputFolderError(PopTfError):
    """The output folder cannot be created or written."""


def make_staging(output: str) -> str:
    """A fresh staging folder inside `output`, after removing those of killed runs."""
    try:
        os.makedirs(output, exist_ok=True)
        for name in os.listdir(output):
            if name.startswith(PREFIX):
                shutil.rmtree(os.path.join(output, name), ignore_errors=True)
        staging = os.path.join(output, f"{PREFIX}{uuid.uuid4().hex[:12]}")
        os.makedirs(staging)
    except OSError as e:
        raise OutputFolderError(f"cannot write to output folder '{output}': {e.strerror}") from None
    return staging


def install(staging: str, output: str, owned_prefixes=(), owned_names=()) -> None:
    """Replaces the stage's previous outputs in `output` with the staged files.

    Only files whose names start with one of `owned_prefixes` or equal one of `owned_names` are
    removed first, so shards of an earlier run with more shards do not linger and nothing else in
    the folder is touched. Renames stay on one filesystem, so each file appears whole.
    """
    for name in os.listdir(output):
        if name.startswith(tuple(owned_prefixes)) or name in owned_names:
            os.remove(os.path.join(output, name))
    for name in sorted(os.listdir(staging)):
        os.replace(os.path.join(staging, name), os.path.join(output, name))
    shutil.rmtree(staging, ignore_errors=True)
