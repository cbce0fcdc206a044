"""Stage contracts: where each stage writes in a work folder, and which config keys it fills from which others.

`CONTRACTS` is the one table of the work-folder layout. Every entry point that takes a work
folder derives its paths from it: `pop-tf run` (`pop_tf.pipeline`), `pop-tf evaluate --workdir`,
`pop-tf ablate --workdir` and `python -m pop_tf.train ranker|clusterer|translator --workdir`.
A stage module never joins another stage's folder name to a work folder itself, and the names of
the files inside a folder are `pop_tf.layout`'s.

Each contract names:

- `name`: the stage (the `pop-tf run` order is the table's order; `pipeline=False` marks a
  command that combines stages outside `pop-tf run`, such as `pop-tf ablate`);
- `section`: its config section;
- `folder`: the folder it writes, relative to the work folder, and `output`: the config key that
  holds it (None where the stage derives it, as export does from `export.workdir`);
- `reads`: config key → `Source`, the folder of an earlier stage (or a path inside it) that key
  is filled with;
- `inputs`: the stages (and `DATASET`) whose fingerprints make `pop-tf run` rerun the stage, in
  the order they are hashed (changing the order would rerun every stage of existing work
  folders once);
- `keep_given`: the keys for which, in `pop-tf run`, a path the preset or `--set` named stays;
  every other key is always the work folder's. The single-stage commands pass the table's paths
  as command-line overrides: they replace a preset's, and `--set` replaces them;
- `combines` (commands outside `pop-tf run`): the stages whose sections the command fills with
  those stages' `reads`, setting their outputs itself.
"""

import dataclasses
import os
import typing

# Sources that are not a stage's folder.
DATASET = "dataset"  # the dataset ingest reads: `pop-tf run --dataset`, else the synth stage's folder
WORKDIR = "workdir"  # the work folder itself


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a config key's path comes from."""

    stage: str  # the stage whose folder it is in, or DATASET, or WORKDIR
    path: str = ""  # inside that folder ("" = the folder itself)
    only_if: typing.Literal["", "file", "dir"] = ""  # "file"/"dir": only when that exists, else empty
    many: bool = False  # a list-valued key: [path], or [] when `only_if` finds nothing


@dataclasses.dataclass(frozen=True)
class Contract:
    name: str
    section: str
    folder: str
    output: typing.Optional[str] = "output"
    reads: typing.Mapping[str, Source] = dataclasses.field(default_factory=dict)
    inputs: tuple = ()
    keep_given: tuple = ()
    pipeline: bool = True
    combines: tuple = ()


_TRUTH = Source(DATASET, "truth.jsonl", only_if="file")

CONTRACTS = (
    Contract("synth", "synth", "synth"),
    Contract("ingest", "ingest", "ingest", reads={"input": Source(DATASET)}, inputs=(DATASET,)),
    Contract("pairs", "pairs", "pairs", reads={"input": Source("ingest")}, inputs=("ingest",)),
    Contract("train_ranker", "train_ranker", "train_ranker",
             reads={"input": Source("pairs"), "images": Source("ingest"), "truth": _TRUTH},
             inputs=("pairs", "ingest", DATASET), keep_given=("truth",)),
    Contract("score", "score", "score",
             reads={"input": Source("ingest"), "model": Source("train_ranker", "saved_model")},
             inputs=("ingest", "train_ranker")),
    Contract("cluster", "cluster", "cluster", reads={"input": Source("ingest")}, inputs=("ingest",)),
    Contract("train_translator", "train_translator", "train_translator",
             reads={"input": Source("score"), "clusters": Source("cluster")}, inputs=("score", "cluster")),
    # The translator SavedModel or the pix2pix folder, whichever train_translator wrote (by its
    # `model`); the truth file only when the dataset has one. The dataset's truth is not among the
    # fingerprinted inputs: it reaches evaluate through score's (ingest reads the dataset).
    Contract("evaluate", "evaluate", "evaluate",
             reads={"input": Source("score"),
                    "ranker": Source("train_ranker", "saved_model"),
                    "translator": Source("train_translator", "saved_model", only_if="dir"),
                    "pix2pix_variants": Source("train_translator", "generator.weights.h5", only_if="file", many=True),
                    "clusters": Source("cluster"),
                    "truth": _TRUTH},
             inputs=("score", "cluster", "train_ranker", "train_translator"),
             keep_given=("input", "ranker", "translator", "pix2pix_variants", "clusters", "truth", "output")),
    # export copies <workdir>/<stage>/saved_model of the trained models (export.SOURCES) and keeps
    # its own record in <workdir>/export.
    Contract("export", "export", "export", output=None, reads={"workdir": Source(WORKDIR)},
             inputs=("train_ranker", "cluster", "train_translator")),
    # `pop-tf ablate`: its pix2pix variants and their evaluation; it reads what train_translator
    # and evaluate read (their `reads`), and sets their outputs per variant.
    Contract("ablation", "ablation", "ablation", pipeline=False, combines=("train_translator", "evaluate")),
)

BY_NAME = {c.name: c for c in CONTRACTS}
# The stages of `pop-tf run`, in order.
STAGE_ORDER = tuple(c.name for c in CONTRACTS if c.pipeline)


def folder(workdir: str, stage: str) -> str:
    """The folder `stage` writes in the work folder."""
    return os.path.join(workdir, BY_NAME[stage].folder)


def _path(source: Source, workdir: str, dataset: str):
    if source.stage == DATASET:
        base = dataset if dataset is not None else folder(workdir, "synth")
    elif source.stage == WORKDIR:
        base = workdir
    else:
        base = folder(workdir, source.stage)
    path = os.path.join(base, source.path) if source.path else base
    found = {"": True, "file": os.path.isfile, "dir": os.path.isdir}[source.only_if]
    present = found is True or found(path)
    if source.many:
        # The list holds the stage's folder (a pix2pix output folder), not the file that marks it.
        return [base] if present else []
    return path if present else ""


def inputs(stage: str, workdir: str, dataset: str = None) -> dict:
    """{config key: path} of what `stage` reads in the work folder (not its output).

    Args:
        dataset: the dataset folder; default the synth stage's folder in `workdir`.
    """
    return {key: _path(source, workdir, dataset) for key, source in BY_NAME[stage].reads.items()}


def paths(stage: str, workdir: str, dataset: str = None) -> dict:
    """{config key: path} of everything `stage` reads and writes in the work folder."""
    contract = BY_NAME[stage]
    resolved = inputs(stage, workdir, dataset)
    if contract.output:
        resolved[contract.output] = folder(workdir, stage)
    return resolved


def apply(section_config, stage: str, workdir: str, dataset: str = None) -> None:
    """Points a stage's config section at its places in the work folder (in place), as `pop-tf run`
    does: a `keep_given` key the section already names stays, every other key is replaced."""
    keep = BY_NAME[stage].keep_given
    for key, value in paths(stage, workdir, dataset).items():
        if key in keep and getattr(section_config, key):
            continue
        setattr(section_config, key, value)
