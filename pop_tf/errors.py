"""The base of every error a user can fix: the CLI prints its message as one sentence."""

import contextlib
import errno
import logging
import os
import re


class PopTfError(Exception):
    """A problem with the user's input, options or environment, explained in the message.

    `exit_code` is what the CLI exits with: 2 for a wrong command line or config, 1 otherwise.
    """

    exit_code = 1


class UsageError(PopTfError):
    """A command-line or config mistake."""

    exit_code = 2


# A full, over-quota or read-only device: the user's environment, not a pop_tf bug, whichever
# library the write went through.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
_FULL_HINT = "free some space or point --workdir/--output at another disk, then rerun"
# Beam re-raises a worker's OSError as a RuntimeError (or as a traceback's text, from another
# process) and TensorFlow as an OpError: neither keeps the errno, both keep the C library's text,
# Python's "[Errno 28] No space left on device: 'path'" or TensorFlow's "path; No space left on device".
_ERRNO_TEXT = {code: re.compile(rf"\[Errno {code}\]|{re.escape(os.strerror(code))}", re.IGNORECASE)
               for code in STORAGE_ERRNOS}
_PATH_IN_TEXT = (re.compile(r"\[Errno \d+\] [^:\n]*: '([^'\n]+)'"),
                 re.compile(rf"(\S+); (?:{'|'.join(re.escape(os.strerror(code)) for code in STORAGE_ERRNOS)})"))


class StorageError(PopTfError):
    """The device holding a folder pop_tf writes is full, over its quota or read-only."""

    def __init__(self, code: int, folder: str = None):
        self.errno, self.folder = code, folder
        super().__init__(storage_sentence(code, folder))


def storage_sentence(code: int, folder: str = None) -> str:
    """What the user reads for a full (ENOSPC), over-quota (EDQUOT) or read-only (EROFS) device."""
    where = f" holding {folder}" if folder else ""
    if code == errno.EROFS:
        return f"the device{where} is read-only; choose a folder on a writable filesystem, then rerun"
    quota = " (disk quota exceeded)" if code == errno.EDQUOT else ""
    return f"no space left on the device{where}{quota}; {_FULL_HINT}"


def _chain(error: BaseException):
    """`error`, then every exception it wraps (causes, contexts, an exception group's members)."""
    seen, todo = set(), [error]
    while todo:
        current = todo.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]


def find_storage_error(error: BaseException):
    """(errno, path or None) of the full or read-only device behind `error`, or None.

    Looks through the exceptions `error` wraps, an OSError's errno first, then the text Beam and
    TensorFlow keep of one (a `shutil.Error` lists each failed copy's text).
    """
    chain = list(_chain(error))
    for current in chain:
        if isinstance(current, OSError) and current.errno in STORAGE_ERRNOS:
            return current.errno, current.filename
    for current in chain:
        try:
            text = str(current)
        except Exception:  # an exception whose __str__ fails says nothing either way
            continue
        for code, pattern in _ERRNO_TEXT.items():
            if pattern.search(text):
                matches = (p.search(text) for p in _PATH_IN_TEXT)
                return code, next((m.group(1) for m in matches if m), None)
    return None


def as_storage_error(error: BaseException, folder: str = None):
    """A StorageError naming `folder` (else the folder of the path that failed) when `error` is,
    or wraps, a full or read-only device; None otherwise, and for a PopTfError."""
    if isinstance(error, PopTfError):
        return None
    found = find_storage_error(error)
    if found is None:
        return None
    code, path = found
    if not folder and path:
        path = os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike)) else str(path)
        folder = path if os.path.isdir(path) else (os.path.dirname(path) or path)
    return StorageError(code, folder)


class _StorageLogFilter(logging.Filter):
    """Drops log records about a full or read-only device: the error is reported once, as a sentence."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and find_storage_error(record.exc_info[1]):
            return False
        try:
            message = record.getMessage()
        except Exception:
            return True
        return not any(pattern.search(message) for pattern in _ERRNO_TEXT.values())


# The loggers through which Beam logs a worker's exception, with its traceback, before re-raising it.
_BEAM_LOGGERS = ("apache_beam.runners.common", "apache_beam.runners.worker.sdk_worker",
                 "apache_beam.runners.worker.bundle_processor", "apache_beam.runners.direct.executor",
                 "apache_beam.runners.portability.fn_api_runner.fn_runner",
                 "apache_beam.runners.portability.fn_api_runner.worker_handlers", "apache_beam.io.filebasedsink")


@contextlib.contextmanager
def quiet_storage_logs():
    """Within: Beam does not log a full or read-only device's traceback before re-raising it."""
    quiet = _StorageLogFilter()
    loggers = [logging.getLogger(name) for name in _BEAM_LOGGERS]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


@contextlib.contextmanager
def storage_errors(folder: str = None):
    """Within: a full or read-only device, also wrapped by Beam or TensorFlow, is raised as a
    StorageError naming `folder` (one sentence, no traceback logged by Beam first)."""
    try:
        with quiet_storage_logs():
            yield
    except Exception as error:
        storage = as_storage_error(error, folder)
        if storage is None:
            raise
        raise storage from error


def describe_os_error(error: OSError) -> str:
    """One sentence for an operating-system error (full disk, unwritable or missing path).

    Such errors come from the user's environment, not from pop_tf, so the command line reports
    them like any other fixable problem instead of with a stack trace. Nothing half-written is
    taken as complete: every stage stages its outputs and moves them into place only at the end.
    """
    import shutil

    storage = as_storage_error(error)
    if storage is not None:
        return str(storage)
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
        # copytree collects one (source, destination, reason) per file: the first says what went wrong.
        failures = error.args[0]
        first = failures[0]
        source, reason = (first[0], first[-1]) if isinstance(first, tuple) and len(first) >= 2 else (first, "")
        more = f" (and {len(failures) - 1} more files)" if len(failures) > 1 else ""
        return f"cannot copy {source}{more}: {str(reason).splitlines()[0] if reason else 'unknown error'}"
    where = f" ({error.filename})" if error.filename else ""
    reason = error.strerror or str(error)
    hints = {errno.EACCES: "choose a folder you can write to",
             errno.ENOTDIR: "a path component is a file, not a folder"}
    hint = hints.get(error.errno, "check the path and rerun")
    return f"{reason}{where}; {hint}"


def reportable(error: BaseException) -> bool:
    """Whether `report` says `error` as one sentence: a PopTfError, an OSError, or a full or
    read-only device that Beam or TensorFlow wrapped. An entry point that catches `Exception`
    re-raises the rest (they are bugs, and their traceback is what a report needs)."""
    return isinstance(error, (PopTfError, OSError)) or find_storage_error(error) is not None


def report(program: str, error: BaseException) -> int:
    """Prints a user-fixable error (a PopTfError, an OSError, or a full or read-only device that
    Beam or TensorFlow wrapped) as one `PROGRAM: error: …` line on stderr and returns the exit
    code; every command-line entry point ends its errors here."""
    import sys

    storage = as_storage_error(error)
    if isinstance(error, PopTfError):
        message, code = str(error), error.exit_code
    elif storage is not None:
        message, code = str(storage), storage.exit_code
    elif isinstance(error, OSError):
        message, code = describe_os_error(error), 1
    else:
        first = next(iter(str(error).strip().splitlines()), "")
        message, code = f"{type(error).__name__}: {first}", 1
    print(f"{program}: error: {message}", file=sys.stderr)
    return code
