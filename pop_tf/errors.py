"""The base of every error a user can fix: the CLI prints its message as one sentence."""


class PopTfError(Exception):
    """A problem with the user's input, options or environment, explained in the message.

    `exit_code` is what the CLI exits with: 2 for a wrong command line or config, 1 otherwise.
    """

    exit_code = 1


class UsageError(PopTfError):
    """A command-line or config mistake."""

    exit_code = 2
