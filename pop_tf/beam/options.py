"""Beam pipeline options for pop_tf's jobs: a safe local default runner, and typos as errors.

Beam itself only logs a warning for an option it does not know and then ignores it, so a
mistyped `--direct_num_worker=2` would silently run with one worker. pop_tf refuses it instead.
A runner name (`ingest.runner`, `pairs.runner` or `--runner`) is resolved the way Beam's
`create_runner` does and refused with a sentence when Beam could not build it, instead of the
traceback Beam raises when the pipeline starts.
"""

import argparse
import difflib
import importlib
from typing import Optional

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


def _known_runners() -> dict:
    """{lower-case class name: dotted path} of the runners Beam itself names, as `create_runner` maps them."""
    from apache_beam.options.pipeline_options import StandardOptions

    return {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}


def runner_problem(name) -> Optional[str]:
    """Why Beam could not build the runner `name`, as the end of a sentence, or None when it can.

    Like Beam's `create_runner`: a known runner's class name in any case, with or without the
    "Runner" suffix, or the dotted path of a `PipelineRunner` subclass, which is imported here
    (as Beam would import it when the pipeline starts) so that a missing module or extra shows
    before anything is written.
    """
    from apache_beam.runners.runner import PipelineRunner

    known = _known_runners()
    names = sorted(path.rsplit(".", 1)[-1] for path in known.values())
    if not isinstance(name, str) or not name.strip():
        return f"{name!r} is not a runner name; use one of {', '.join(names)}"
    path = known.get(name.lower(), known.get(name.lower() + "runner", name))
    shown = name if len(name) <= 80 else name[:77] + "..."
    if "." not in path:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return (f"{shown!r} is not a Beam runner{hint}; use one of {', '.join(names)}, or the dotted path of a "
                "PipelineRunner subclass")
    module, attribute = path.rsplit(".", 1)
    try:
        runner = getattr(importlib.import_module(module), attribute)
    except Exception as e:  # noqa: BLE001 - whatever the import raises, the runner is unusable here
        return f"the runner {shown!r} cannot be loaded here ({type(e).__name__}: {e})"
    if not (isinstance(runner, type) and issubclass(runner, PipelineRunner)):
        return f"{shown!r} is not a Beam PipelineRunner class"
    return None


def pipeline_options(beam_args, default_runner: str) -> PipelineOptions:
    """`beam_args` as PipelineOptions; `--runner` defaults to `default_runner`.

    Beam's own default runner first downloads the Prism binary, which hangs without network,
    so pop_tf defaults to the in-process FnApiRunner; any runner can still be named.
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
    given = parser.parse_known_args(args)[0].runner
    problem = runner_problem(default_runner if given is None else given)
    if problem:
        where = "--runner" if given is not None else "the stage's runner setting"
        raise BeamOptionError(f"{where}: {problem}")
    if given is None:
        args.append(f"--runner={default_runner}")
    return PipelineOptions(args)
