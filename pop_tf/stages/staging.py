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
"""

import dataclasses
import json
import os
import re
import shutil
import uuid

from pop_tf.errors import PopTfError

PREFIX = ".staging-"
RECORD = ".pop_tf_outputs.json"
ANY_OWNER = "*"  # recorded by `adopt`: an older pop_tf's output, its stage unknown
_STAGING_NAME = re.compile(r"^\.staging-[0-9a-f]{12}$")


class OutputFolderError(PopTfError):
    """The output folder cannot be created or written, or holds files pop_tf did not write."""


def make_staging(output: str) -> str:
    """A fresh staging folder inside `output`, after removing those of killed runs."""
    try:
        os.makedirs(output, exist_ok=True)
        for name in os.listdir(output):
            if _STAGING_NAME.match(name):  # only names this function makes
                shutil.rmtree(os.path.join(output, name), ignore_errors=True)
        staging = os.path.join(output, f"{PREFIX}{uuid.uuid4().hex[:12]}")
        os.makedirs(staging)
    except OSError as e:
        raise OutputFolderError(f"cannot write to output folder '{output}': {e.strerror}") from None
    return staging


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
