"""The base of every error a user can fix: the CLI prints its message as one sentence."""


class PopTfError(Exception):
    """A problem with the user's input, options or environment, explained in the message.

    `exit_code` is what the CLI exits with: 2 for a wrong command line or config, 1 otherwise.
    """

    exit_code = 1


class UsageError(PopTfError):
    """A command-line or config mistake."""

    exit_code = 2


def describe_os_error(error: OSError) -> str:
    """One sentence for an operating-system error (full disk, unwritable or missing path).

    Such errors come from the user's environment, not from pop_tf, so the command line reports
    them like any other fixable problem instead of with a stack trace. Nothing half-written is
    taken as complete: every stage stages its outputs and moves them into place only at the end.
    """
    import errno

    where = f" ({error.filename})" if error.filename else ""
    reason = error.strerror or str(error)
    hints = {errno.ENOSPC: "free some space or point --workdir/--output at another disk, then rerun",
             errno.EDQUOT: "free some space or point --workdir/--output at another disk, then rerun",
             errno.EACCES: "choose a folder you can write to",
             errno.EROFS: "choose a folder on a writable filesystem",
             errno.ENOTDIR: "a path component is a file, not a folder"}
    hint = hints.get(error.errno, "check the path and rerun")
    return f"{reason}{where}; {hint}"


def report(program: str, error: Exception) -> int:
    """Prints a user-fixable error (a PopTfError or an OSError) as one `PROGRAM: error: …` line on
    stderr and returns the exit code; every command-line entry point ends its errors here."""
    import sys

    if isinstance(error, PopTfError):
        message, code = str(error), error.exit_code
    else:
        message, code = describe_os_error(error), 1
    print(f"{program}: error: {message}", file=sys.stderr)
    return code
