"""Outputs never overlap inputs: the one check every stage runs before it writes anything.

A stage replaces the files it owns in its output folder (`pop_tf.stages.staging.install`), so an
output folder that is also an input folder (or lies inside one, or holds one) would have the
stage write among, and replace, the files it reads: `pop-tf ingest --input D --output D` would
put TFRecords into the user's dataset. `check_apart` refuses any output path that is, contains
or lies inside an input path, comparing the paths the operating system resolves (symlinks,
relative paths, `..`, trailing slashes) and, for folders that exist, their inodes (bind mounts
and case-insensitive filesystems name one folder in several ways). `check_stage` knows which
config keys of each stage are inputs and which are outputs.
"""

import os
import re

from pop_tf.errors import UsageError


class PathOverlapError(UsageError):
    """An output path overlaps an input path; the message names both options."""


# Which keys of a stage's config section it reads from and which it writes into. A list-valued
# key (evaluate.pix2pix_variants) holds several paths. Optional keys left empty are skipped.
STAGE_PATHS = {
    "ingest": (("input",), ("output",)),
    "pairs": (("input",), ("output",)),
    "train_ranker": (("input", "images", "truth"), ("output", "logdir")),
    "score": (("input", "model"), ("output",)),
    "cluster": (("input",), ("output",)),
    "train_translator": (("input", "clusters"), ("output", "logdir")),
    "evaluate": (("input", "ranker", "translator", "pix2pix_variants", "clusters", "truth"), ("output", "logdir")),
}

_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def _resolved(path: str) -> str:
    """The path the OS would use: absolute, symlinks followed, `..` applied after them."""
    if _SCHEME.match(path):
        # Object stores have no symlinks or relative paths; only the trailing slash varies.
        return path.rstrip("/")
    # realpath, not abspath: abspath drops `link/..` before the link is followed, the OS does not.
    return os.path.realpath(os.path.expanduser(path))


def _inside(inner: str, outer: str) -> bool:
    """Whether resolved path `inner` is `outer` or lies under it."""
    inner_remote, outer_remote = _SCHEME.match(inner), _SCHEME.match(outer)
    if inner_remote or outer_remote:
        if not (inner_remote and outer_remote):
            return False
        return inner == outer or inner.startswith(outer + "/")
    if inner == outer or inner.startswith(outer.rstrip(os.sep) + os.sep):
        return True
    try:
        outer_stat = os.stat(outer)
    except OSError:
        return False
    # The same folder under another name (a bind mount, another letter case) has the same inode.
    path = inner
    while True:
        try:
            if os.path.samestat(os.stat(path), outer_stat):
                return True
        except OSError:
            pass
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent


def _shown(path: str, resolved: str) -> str:
    return f"'{path}'" if resolved in (path, path.rstrip("/" + os.sep)) else f"'{path}' (= '{resolved}')"


def overlap(output: str, input_: str):
    """How `output` and `input_` overlap: "same", "output inside", "input inside", or None."""
    out, inp = _resolved(output), _resolved(input_)
    if _inside(out, inp):
        return "same" if _inside(inp, out) else "output inside"
    if _inside(inp, out):
        return "input inside"
    return None


def check_apart(outputs: dict, inputs: dict) -> None:
    """Raises PathOverlapError when any output path overlaps any input path.

    Args:
        outputs, inputs: {option name as the user knows it: path, or list of paths}; empty paths
            are skipped.
    """
    def items(named):
        for name, value in named.items():
            for path in (value if isinstance(value, (list, tuple)) else [value]):
                if path:
                    yield name, str(path)

    for out_name, out in items(outputs):
        for in_name, inp in items(inputs):
            how = overlap(out, inp)
            if how is None:
                continue
            shown_out, shown_in = _shown(out, _resolved(out)), _shown(inp, _resolved(inp))
            if how == "same":
                where = f"{out_name} {shown_out} is the same place as {in_name} {shown_in}"
            elif how == "output inside":
                where = f"{out_name} {shown_out} lies inside {in_name} {shown_in}"
            else:
                where = f"{in_name} {shown_in} lies inside {out_name} {shown_out}"
            raise PathOverlapError(
                f"{where}; outputs would be written among the inputs and could replace them, so nothing was "
                f"written: point {out_name} at a folder apart from {in_name}, neither inside the other")


def check_stage(stage: str, section_config) -> None:
    """`check_apart` over a stage config section's input and output keys (`STAGE_PATHS`)."""
    inputs, outputs = STAGE_PATHS[stage]
    check_apart({f"{stage}.{key}": getattr(section_config, key) for key in outputs},
                {f"{stage}.{key}": getattr(section_config, key) for key in inputs})
