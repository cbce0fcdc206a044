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


def _runner_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    parser.add_argument("--runner", default=None)
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
    given = _runner_parser().parse_known_args(args)[0].runner
    # A runner's own options (DaskOptions, …) are known to Beam's parser only once its module has
    # been imported, which `runner_problem` does; an unknown option still takes precedence below.
    problem = runner_problem(default_runner if given is None else given)
    parser = _beam_parser()
    _, unknown = parser.parse_known_args(args)
    if unknown:
        name = unknown[0].split("=", 1)[0]
        known = [opt for action in parser._actions for opt in action.option_strings]
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see `--help` for pop_tf options"
        raise BeamOptionError(f"unknown option {name}{hint}")
    if problem:
        where = "--runner" if given is not None else "the stage's runner setting"
        raise BeamOptionError(f"{where}: {problem}")
    if given is None:
        args.append(f"--runner={default_runner}")
    return PipelineOptions(args)


def _runner_class(name):
    known = _known_runners()
    path = known.get(name.lower(), known.get(name.lower() + "runner", name)) if isinstance(name, str) else ""
    if "." not in path:
        return None
    module, attribute = path.rsplit(".", 1)
    try:
        return getattr(importlib.import_module(module), attribute)
    except Exception:  # noqa: BLE001 - pipeline_options has already refused an unusable runner
        return None


def on_dask(options: PipelineOptions) -> bool:
    """Whether `options` name Beam's DaskRunner (or a subclass of it)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    if isinstance(runner, str):
        runner = _runner_class(runner)
    elif runner is not None and not isinstance(runner, type):  # a runner instance
        runner = type(runner)
    if runner is None:
        return False
    try:
        from apache_beam.runners.dask.dask_runner import DaskRunner
    except ImportError:  # no dask installed: then it cannot be the DaskRunner either
        return False
    return isinstance(runner, type) and issubclass(runner, DaskRunner)


def source_splits(options: PipelineOptions, wanted: int) -> int:
    """Into how many elements a job's `Create` source should be cut: 1, except on Dask.

    Beam 2.77's DaskRunner turns `Reshuffle` into a no-op and puts a `Create` of fewer than 128
    elements into one dask partition, and a GroupByKey keeps its input's partition count, so a
    job whose source is one element runs as one task on one worker. On Dask, pop_tf therefore
    cuts its source into `wanted` elements and sets `--dask_npartitions` to match, unless
    `--dask_npartitions` (which then decides) or `--dask_partition_size` was given. Elsewhere
    the runner's own Reshuffle spreads the work, and one source element is cheapest.
    """
    if not on_dask(options):
        return 1
    from apache_beam.runners.dask.dask_runner import DaskOptions

    dask = options.view_as(DaskOptions)
    if dask.npartitions:
        return dask.npartitions
    if dask.partition_size:
        return max(1, wanted)
    dask.npartitions = max(1, wanted)
    return dask.npartitions


def close_runner(result) -> None:
    """Closes what a finished pipeline's runner left open: the DaskRunner's client connection."""
    client = getattr(result, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


def runner_name(options: PipelineOptions) -> str:
    """The runner `options` name, as a person would write it (the class name)."""
    from apache_beam.options.pipeline_options import StandardOptions

    runner = options.view_as(StandardOptions).runner
    if not isinstance(runner, str):
        runner = type(runner).__name__
    return runner.rsplit(".", 1)[-1]
