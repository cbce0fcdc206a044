"""Stage outputs appear whole or not at all: write into a staging folder, check, then install.

A Beam job writes its shards into `<output>/.staging-<id>/`; the stage counts and checks what
was written there; only then `install` moves the files into `<output>`, replacing the files of
the previous run that the stage owns. A killed run leaves at most a staging folder, which the
next run removes, so a half-written output is never taken as complete.

`install` removes or replaces only what pop_tf itself put there: every install records the names
it moved in, and their owner, in `<output>/.pop_tf_outputs.json`, and a later install removes
only names recorded for the same owner. A file the record does not name (the user's, or another
stage's) that the stage would replace or that looks like one of its outputs stops the install
before anything is moved, so it is never deleted and never read back as a stage output. A folder
without a record whose `config.json` is a stage's resolved config was written by a pop_tf from
before the record, and is adopted whole (`adopt`).

One process at a time writes an output folder: `make_staging` takes an exclusive lock on
`<output>/.staging-lock` (the same fcntl lock `pop-tf run` holds on its work folder), so a second
run into the same output stops at once, naming the process that holds it, instead of deleting
the first run's staging folder. `install` releases it. A stage's `run` decorated with
`stage_run` (and every stage `pop-tf run` runs) removes its staging folder and releases the lock
however it fails, and reports a full or read-only device, also one Beam or TensorFlow wrapped,
as one sentence naming the output folder; a process that ends does the same for whatever is left.

An output folder on a remote filesystem (`gs://`, `s3://`, `hdfs://`: any scheme but `file://`)
goes through Beam's `FileSystems`, for the Beam stages whose workers write there, with a narrower
contract: the staging folder, the check, the record of owned names and the final move are the
same, but outputs are plain files (no folders), there is **no lock** (object stores have no
flock: two runs into the same remote output must be kept apart by the user), staging folders of
killed runs are not removed (without a lock one may belong to a live run; delete
`<output>/.staging-*` by hand), an output without a record is never adopted, and a move is a copy
then a delete on object stores, so each file appears whole but not all of them at one instant.
"""

import atexit
import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import re
import shutil
import time
import uuid

from pop_tf import errors
from pop_tf.errors import PopTfError

PREFIX = ".staging-"
RECORD = ".pop_tf_outputs.json"
# Named like a staging folder so every listing that skips those skips it, but never matched by
# `_STAGING_NAME`, so cleaning up after killed runs never removes a live lock.
LOCK = PREFIX + "lock"
ANY_OWNER = "*"  # recorded by `adopt`: an older pop_tf's output, its stage unknown
_STAGING_NAME = re.compile(r"^\.staging-[0-9a-f]{12}$")
_SCHEME = re.compile(r"^([a-zA-Z][-a-zA-Z0-9+.]*)://")  # as Beam's FileSystems.get_scheme

_HELD = {}  # real path of an output folder this process holds → (descriptor, lock file)
_LIVE = {}  # staging folder made and not yet installed → its output folder
_SCOPES = []  # per open `run_scope`: the (staging, output) pairs made within it
_EXIT_CLEANUP = []  # registered once


class OutputFolderError(PopTfError):
    """The output folder cannot be created or written, or holds files pop_tf did not write."""


class OutputBusyError(OutputFolderError):
    """Another process is writing the same output folder."""


def acquire_lock(path: str, busy) -> int:
    """Takes an exclusive fcntl lock on the file `path` (made when missing) and writes this
    process's pid into it; returns its descriptor. Raises `busy(holder)` ("pid N") when another
    process holds it. The OS drops the lock when the process dies, even by `kill -9`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise busy(holder) from None
        except BaseException:
            os.close(fd)
            raise
        # A holder releasing it unlinks the file: when that happened between our open and our
        # lock, ours is a lock on a file nobody else will open; take the one at `path` instead.
        try:
            current = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd


def _holder(fd: int) -> str:
    """What the lock file says of its holder; one that locked it a moment ago may not have written
    it yet, so an empty file is read again for up to half a second."""
    for _ in range(50):
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.01)
    return "another process"


def release_lock(fd: int, path: str, remove: bool = True) -> None:
    """Releases a lock of `acquire_lock`; `remove` deletes its file first, while still held."""
    if remove:
        with contextlib.suppress(OSError):
            os.remove(path)
    os.close(fd)


def _lock_output(output: str) -> None:
    key = os.path.realpath(output)
    if key in _HELD:  # this process already writes there (a rerun in the same process)
        return
    path = os.path.join(output, LOCK)
    _HELD[key] = (acquire_lock(path, lambda holder: OutputBusyError(
        f"output folder {output} is being written by another pop_tf process ({holder}); wait for it to "
        "finish or choose another output folder")), path)


def _unlock_output(output: str) -> None:
    held = _HELD.pop(os.path.realpath(output), None)
    if held:
        release_lock(*held)


def is_remote(path: str) -> bool:
    """Whether `path` is on a filesystem other than the local one (a URL scheme other than file)."""
    match = _SCHEME.match(str(path))
    return bool(match) and match.group(1).lower() != "file"


def _discard(staging: str) -> None:
    """Removes a staging folder and everything in it, ignoring errors (as `shutil.rmtree` does)."""
    if not is_remote(staging):
        shutil.rmtree(staging, ignore_errors=True)
        return
    with contextlib.suppress(Exception):
        _remote_delete_tree(staging)


def _clean_up_at_exit() -> None:
    for staging in list(_LIVE):
        _discard(staging)
    _LIVE.clear()
    for fd, path in list(_HELD.values()):
        release_lock(fd, path)
    _HELD.clear()


def make_staging(output: str) -> str:
    """A fresh staging folder inside `output`, after locking `output` and removing the staging
    folders of killed runs (on a remote filesystem: neither, see the module doc).

    Raises:
        OutputBusyError: another process is writing `output`.
        StorageError: the device holding `output` is full or read-only.
        OutputFolderError: `output` cannot be created or written.
    """
    if is_remote(output):
        return _register(_make_remote_staging(output), output)
    try:
        os.makedirs(output, exist_ok=True)
        _lock_output(output)
        for name in os.listdir(output):
            if _STAGING_NAME.match(name):  # only names this function makes; no other process is in there
                shutil.rmtree(os.path.join(output, name), ignore_errors=True)
        staging = os.path.join(output, f"{PREFIX}{uuid.uuid4().hex[:12]}")
        os.makedirs(staging)
    except OSError as e:
        _unlock_output(output)
        storage = errors.as_storage_error(e, output)
        if storage is not None:
            raise storage from None
        raise OutputFolderError(f"cannot write to output folder '{output}': {e.strerror}") from None
    return _register(staging, output)


def _register(staging: str, output: str) -> str:
    if not _EXIT_CLEANUP:
        atexit.register(_clean_up_at_exit)
        _EXIT_CLEANUP.append(True)
    _LIVE[staging] = output
    if _SCOPES:
        _SCOPES[-1].append((staging, output))
    return staging


@contextlib.contextmanager
def run_scope(folder: str = None):
    """Around one stage run: however it ends, the staging folders made within are removed (except
    one a PopTfError's message names: left for inspection) and their output folders unlocked; a full
    or read-only device, also wrapped by Beam or TensorFlow, is raised as one StorageError naming
    `folder` (default: the output folder of the first staging folder made)."""
    made = []
    _SCOPES.append(made)
    try:
        with errors.quiet_storage_logs():
            yield
    except BaseException as error:
        # Only pop_tf's own sentence leaves one on purpose; an OSError names it as where it failed.
        message = str(error) if isinstance(error, PopTfError) else ""
        for staging, _ in made:
            if staging not in message:
                _discard(staging)
            _LIVE.pop(staging, None)
        storage = errors.as_storage_error(error, folder or (made[0][1] if made else None)) \
            if isinstance(error, Exception) else None
        if storage is not None:
            raise storage from error
        raise
    finally:
        _SCOPES.remove(made)
        for staging, output in made:
            if _LIVE.pop(staging, None) is not None:  # made but never installed
                _discard(staging)
            _unlock_output(output)


def stage_run(run):
    """Decorates a stage's `run(cfg, …)` to run inside a `run_scope`."""

    @functools.wraps(run)
    def scoped(*args, **kwargs):
        with run_scope():
            return run(*args, **kwargs)

    return scoped


def recorded_outputs(output: str) -> dict:
    """{name: owner} of what earlier installs moved into `output` ({} without a readable record)."""
    try:
        with open(os.path.join(output, RECORD)) as f:
            outputs = json.load(f).get("outputs", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(name): str(owner) for name, owner in outputs.items()} if isinstance(outputs, dict) else {}


def written_by_pop_tf(output: str, stage: str = None) -> bool:
    """Whether `output` holds the resolved `config.json` a pop_tf stage (`stage`, when it names a
    config section) writes beside its outputs: every key one of the section's, and most of them
    (an older pop_tf wrote fewer; a user's config.json of a few common keys is not taken)."""
    from pop_tf import config as config_lib

    try:
        with open(os.path.join(output, "config.json")) as f:
            written = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(written, dict):
        return False
    sections = [f.name for f in dataclasses.fields(config_lib.Config)]
    for name in [stage] if stage in sections else sections:
        fields = set(config_lib.to_dict(getattr(config_lib.Config(), name)))
        if set(written) <= fields and 2 * len(written) >= len(fields):
            return True
    return False


def adopt(output: str) -> None:
    """Records everything in `output` as replaceable by the stage that writes there, when the folder
    has no record yet: for an output folder an older pop_tf wrote, which the caller has made sure
    of (`written_by_pop_tf`; `pop_tf.pipeline` checks its work folder's stage folders)."""
    if os.path.isdir(output) and not os.path.lexists(os.path.join(output, RECORD)):
        _write_record(output, {name: ANY_OWNER for name in os.listdir(output) if not name.startswith(PREFIX)})


def _write_record(output: str, outputs: dict) -> None:
    path = os.path.join(output, RECORD)
    with open(path + ".tmp", "w") as f:
        json.dump({"outputs": dict(sorted(outputs.items()))}, f, indent=1)
    os.replace(path + ".tmp", path)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def install(staging: str, output: str, owned_prefixes=(), owned_names=(), owner: str = None) -> None:
    """Replaces the stage's previous outputs in `output` with the staged files (or folders).

    Names that start with one of `owned_prefixes` or equal one of `owned_names` are the
    stage's; of those, only the ones an earlier install recorded for `owner` are removed first,
    so shards of an earlier run with more shards do not linger and nothing else in the folder is
    touched. Renames stay on one filesystem, so each file appears whole.

    Raises:
        OutputFolderError: `output` holds a file the stage would replace, or one named like its
            outputs, that no earlier install of `owner` recorded; nothing was moved, and the
            staging folder is removed.
    """
    try:
        (_install_remote if is_remote(output) else _install)(staging, output, owned_prefixes, owned_names, owner)
    finally:
        # Whatever was not moved in is gone too when the install fails halfway (a full disk):
        # the record already names each file that was.
        _discard(staging)
        _LIVE.pop(staging, None)
        _unlock_output(output)


def _install(staging: str, output: str, owned_prefixes, owned_names, owner) -> None:
    owner = owner or "|".join(sorted(owned_prefixes)) + "|" + "|".join(sorted(owned_names))
    if written_by_pop_tf(output, owner):
        adopt(output)  # an output folder from before the record (a no-op once it has one)
    recorded = recorded_outputs(output)
    staged = sorted(os.listdir(staging))
    present = [n for n in os.listdir(output) if n != RECORD and not n.startswith(PREFIX)]
    ours = lambda name: name.startswith(tuple(owned_prefixes)) or name in owned_names  # noqa: E731
    mine = lambda name: recorded.get(name) in (owner, ANY_OWNER)  # noqa: E731
    foreign = sorted(n for n in present if (ours(n) or n in staged) and not mine(n))
    if foreign:
        shutil.rmtree(staging, ignore_errors=True)
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputFolderError(
            f"output folder '{output}' already holds {', '.join(repr(n) for n in foreign[:3])}{more}, which no "
            f"earlier pop_tf run recorded as its own output there ({RECORD}); nothing was replaced: move "
            "them away or choose another output folder")
    # Recorded before anything moves, so a run killed halfway leaves every file it touched recorded.
    _write_record(output, {**recorded, **{name: owner for name in staged}})
    for name in present:
        if ours(name) and mine(name) and name not in staged:
            _remove(os.path.join(output, name))
    for name in staged:
        target = os.path.join(output, name)
        if os.path.isdir(target) and not os.path.islink(target):  # a folder output (a SavedModel) of ours
            shutil.rmtree(target)
        os.replace(os.path.join(staging, name), target)
    _write_record(output, {name: who for name, who in {**recorded, **{n: owner for n in staged}}.items()
                           if os.path.lexists(os.path.join(output, name))})
    shutil.rmtree(staging, ignore_errors=True)


# The remote subset (see the module doc), through Beam's FileSystems; imported here only, so the
# stages that never write remotely do not import Beam.

def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def _remote_names(folder: str) -> list:
    """The names of the files directly in `folder` on a remote filesystem."""
    fs = _fs()
    prefix = folder.rstrip("/") + "/"
    names = set()
    for meta in fs.match([fs.join(folder, "*")])[0].metadata_list:
        if meta.path.startswith(prefix):
            names.add(meta.path[len(prefix):].split("/", 1)[0])
    return sorted(names)


def _remote_delete_tree(folder: str) -> None:
    fs = _fs()
    found = [m.path for m in fs.match([fs.join(folder, "**")])[0].metadata_list]
    if found:
        fs.delete(found)
    if fs.exists(folder):  # the folder itself, on filesystems that have folders
        fs.delete([folder])


def _make_remote_staging(output: str) -> str:
    fs = _fs()
    staging = fs.join(output, f"{PREFIX}{uuid.uuid4().hex[:12]}")
    try:
        fs.mkdirs(staging)  # object stores have no folders: there, nothing to make
    except OSError as e:
        if not fs.exists(staging):
            raise OutputFolderError(f"cannot write to output folder '{output}': {e}") from None
    return staging


def _remote_record(output: str) -> dict:
    fs = _fs()
    path = fs.join(output, RECORD)
    try:
        if not fs.exists(path):
            return {}
        with fs.open(path) as f:
            outputs = json.loads(f.read()).get("outputs", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(name): str(owner) for name, owner in outputs.items()} if isinstance(outputs, dict) else {}


def _write_remote_record(output: str, outputs: dict) -> None:
    fs = _fs()
    with fs.create(fs.join(output, RECORD)) as f:  # an object store replaces an object whole
        f.write(json.dumps({"outputs": dict(sorted(outputs.items()))}, indent=1).encode("utf-8"))


def _install_remote(staging: str, output: str, owned_prefixes, owned_names, owner) -> None:
    fs = _fs()
    owner = owner or "|".join(sorted(owned_prefixes)) + "|" + "|".join(sorted(owned_names))
    recorded = _remote_record(output)
    staged = _remote_names(staging)
    present = [n for n in _remote_names(output) if n != RECORD and not n.startswith(PREFIX)]
    ours = lambda name: name.startswith(tuple(owned_prefixes)) or name in owned_names  # noqa: E731
    mine = lambda name: recorded.get(name) == owner  # noqa: E731
    foreign = sorted(n for n in present if (ours(n) or n in staged) and not mine(n))
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputFolderError(
            f"output folder '{output}' already holds {', '.join(repr(n) for n in foreign[:3])}{more}, which no "
            f"earlier pop_tf run recorded as its own output there ({RECORD}); nothing was replaced: move "
            "them away or choose another output folder")
    _write_remote_record(output, {**recorded, **{name: owner for name in staged}})
    stale = [fs.join(output, n) for n in present if ours(n) and mine(n) and n not in staged]
    if stale:
        fs.delete(stale)
    targets = [fs.join(output, name) for name in staged]
    existing = [t for t in targets if fs.exists(t)]
    if existing:  # HDFS refuses to rename onto an existing file
        fs.delete(existing)
    if staged:
        fs.rename([fs.join(staging, name) for name in staged], targets)
    after = set(_remote_names(output))
    _write_remote_record(output, {name: who for name, who in {**recorded, **{n: owner for n in staged}}.items()
                                  if name in after})
