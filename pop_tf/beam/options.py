"""Beam pipeline options for pop_tf's jobs: a safe local default runner, and typos as errors.

Beam itself only logs a warning for an option it does not know and then ignores it, so a
mistyped `--direct_num_worker=2` would silently run with one worker. pop_tf refuses it instead.
"""

import argparse
import difflib

from apache_beam.options.pipeline_options import PipelineOptions

from pop_tf.errors import UsageError


class BeamOptionError(UsageError, ValueError):
    """An unknown or malformed Beam pipeline option; the message names it."""


def _beam_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    seen = {}
    for cls in PipelineOptions.__subclasses__():  # the option groups Beam itself knows
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def pipeline_options(beam_args, default_runner: str) -> PipelineOptions:
    """`beam_args` as PipelineOptions; `--runner` defaults to `default_runner`.

    Beam's own default runner first downloads the Prism binary, which hangs without network,
    so pop_tf defaults to the in-process FnApiRunner (SPEC §2); any runner can still be named.
    """
    args = list(beam_args or ())
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(args)
    if unknown:
        name = unknown[0].split("=", 1)[0]
        known = [opt for action in parser._actions for opt in action.option_strings]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see `--help` for pop_tf options"
        raise BeamOptionError(f"unknown option {name}{hint}")
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.append(f"--runner={default_runner}")
    return PipelineOptions(args)
