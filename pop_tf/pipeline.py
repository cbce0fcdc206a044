"""`pop-tf run`: the stages in order over one work folder (TFX-style), resumable.

Each stage writes into `<workdir>/<stage>/` and, when it finishes, a `_COMPLETE` marker holding a
fingerprint of its resolved config and of the fingerprints of the stages it reads (`INPUTS`). Which
folder each stage writes, which config keys point at which earlier stage's folder and which stages
each one's fingerprint covers are one table, `pop_tf.contracts.CONTRACTS`. A
rerun skips a stage whose marker matches, so changing an option reruns exactly the stages that
depend on it. A stage without a marker (interrupted, even by `kill -9`) runs again, and the
training stages resume from their newest checkpoint. `from_stage` (`--from`) discards the
outputs of that stage and every later one and runs them from scratch; their markers go before
any of them runs, so a `--from` run killed halfway leaves no later stage's old outputs taken as
complete. A given dataset's fingerprint is its content (`dataset_fingerprint`): editing its
metadata or adding, replacing or touching an image reruns ingest and everything after it. A lock
file keeps two runs out of one work folder.
"""

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import time

from pop_tf import config as config_lib
from pop_tf import contracts
from pop_tf.errors import PopTfError

log = logging.getLogger(__name__)

MARKER = "_COMPLETE"
LOCK = ".pop_tf.lock"
# The stage order (the contracts' order; docs/architecture.md, Data flow).
STAGE_ORDER = contracts.STAGE_ORDER

# What each stage reads ("dataset": the synthesised or given dataset). A stage reruns when its
# config or the fingerprint of anything it reads changes, and only then.
INPUTS = {stage: contracts.BY_NAME[stage].inputs for stage in STAGE_ORDER}


# Files of a dataset whose content is hashed (small text files a stage reads); every other file
# (the images) is taken by its size and modification time, so a run does not read every image.
_HASHED = ("metadata.jsonl", "metadata.csv", "truth.jsonl")


def _bookkeeping(name: str) -> bool:
    """pop_tf's own files in a folder (markers, records, locks, staging), not the dataset's."""
    from pop_tf.stages import staging

    return name in (MARKER, MARKER + ".tmp", LOCK, staging.RECORD) or name.startswith(staging.PREFIX)


def _hash_file(digest, path: str) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)


def dataset_fingerprint(dataset: str) -> str:
    """A fingerprint of the dataset folder's content: its path, the bytes of its metadata and
    truth files, and the relative path, size and modification time of every other file (the
    images), so an edit, a touched, added or removed image changes it."""
    digest = hashlib.sha256(os.path.abspath(dataset).encode() if "://" not in dataset else dataset.encode())
    if "://" in dataset:  # an object store, through Beam: sizes and times as it lists them
        from apache_beam.io.filesystems import FileSystems

        for match in FileSystems.match([FileSystems.join(dataset, "**")]):
            for item in sorted(match.metadata_list, key=lambda m: m.path):
                digest.update(json.dumps([item.path, item.size_in_bytes, item.last_updated_in_seconds]).encode())
        return digest.hexdigest()
    root = os.path.abspath(dataset)
    visited = set()
    for folder, folders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a link back up the tree
            folders[:] = []
            continue
        visited.add(real)
        folders[:] = sorted(f for f in folders if not _bookkeeping(f))
        for name in sorted(files):
            if _bookkeeping(name):
                continue
            path = os.path.join(folder, name)
            relative = os.path.relpath(path, root)
            digest.update(b"\0" + relative.encode(errors="surrogateescape") + b"\0")
            if relative in _HASHED:
                _hash_file(digest, path)
                continue
            try:
                info = os.stat(path)
            except OSError:  # a dangling link: ingest rejects what it names; its presence still counts
                digest.update(b"missing")
                continue
            digest.update(f"{info.st_size} {info.st_mtime_ns}".encode())
    return digest.hexdigest()


def _fingerprint(section_config, upstream: list) -> str:
    payload = json.dumps({"config": config_lib.to_dict(section_config), "upstream": upstream},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _read_marker(stage_dir: str):
    try:
        with open(os.path.join(stage_dir, MARKER)) as f:
            return json.load(f).get("fingerprint")
    except (OSError, ValueError):
        return None


def _write_marker(stage_dir: str, fingerprint: str, paths: dict) -> None:
    tmp = os.path.join(stage_dir, MARKER + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"fingerprint": fingerprint, "outputs": paths, "finished": time.time()}, f, indent=2)
    os.replace(tmp, os.path.join(stage_dir, MARKER))


def _configure(stage: str, config, workdir: str, dataset: str):
    """Points the `stage` section of `config` at its places in the work folder (`contracts.apply`:
    the dataset's truth file, which need not be <workdir>/synth's); returns the section."""
    section = getattr(config, contracts.BY_NAME[stage].section)
    contracts.apply(section, stage, workdir, dataset)
    if stage == "export" and config.train_translator.model != "dmit":
        # the pix2pix generator has no SavedModel of its own (the exported translator is DMIT's)
        section.models = [m for m in section.models if m != "translator"]
    return section


def _run_stage(stage: str, config, workdir: str, dataset: str) -> dict:
    import importlib

    from pop_tf.stages import staging

    section = _configure(stage, config, workdir, dataset)
    _check_stage_paths(stage, section)
    # An older pop_tf left no record of its outputs there; `check_paths` found the folder pop_tf's.
    staging.adopt(contracts.folder(workdir, stage))
    if stage in ("train_ranker", "train_translator"):
        from pop_tf import training

        training.repair_checkpoint_state(os.path.join(section.output, "checkpoints"), stage)
    module = importlib.import_module("pop_tf.synth" if stage == "synth" else f"pop_tf.stages.{stage}")
    # A failed stage leaves no staging folder; a full disk is one sentence naming its folder.
    with staging.run_scope(contracts.folder(workdir, stage)):
        return module.run(section)


def _check_stage_paths(stage: str, section) -> None:
    from pop_tf import paths

    if stage in paths.STAGE_PATHS:
        paths.check_stage(stage, section)
    elif stage == "export":
        from pop_tf.stages import export
        export.check_paths(section)


class StageFolderError(PopTfError):
    """A stage folder in the work folder holds files an earlier pop_tf run did not write."""


def _made_by_pop_tf(stage: str, stage_dir: str) -> bool:
    """Whether `stage_dir` is empty or was written by a pop_tf stage, so it may be replaced."""
    from pop_tf import synth
    from pop_tf.stages import staging

    names = os.listdir(stage_dir) if os.path.isdir(stage_dir) else []
    if MARKER in names or all(n.startswith((staging.PREFIX, ".export-")) or n == staging.RECORD for n in names):
        return True
    if stage == "synth":
        return not synth.foreign_entries(stage_dir)
    # Every stage writes its resolved config there, early (training stages) or with its outputs.
    return staging.written_by_pop_tf(stage_dir, stage)


def check_paths(config, workdir: str, dataset: str = None, stages=STAGE_ORDER) -> None:
    """Refuses, before anything is written, a run whose outputs would overlap its inputs or land
    in stage folders pop_tf did not write: the dataset and the work folder must lie apart, the
    export folder apart from both, each stage's paths apart (`pop_tf.paths`), and every existing
    `<workdir>/<stage>` folder must be pop_tf's (`--from` removes it whole)."""
    from pop_tf import paths

    if dataset:
        paths.check_apart({"--workdir": workdir}, {"--dataset": dataset})
        paths.check_apart({"export.export_dir (--export-dir)": config.export.export_dir}, {"--dataset": dataset})
    probe = copy.deepcopy(config)
    for stage in stages:
        section = _configure(stage, probe, workdir, dataset or contracts.folder(workdir, "synth"))
        _check_stage_paths(stage, section)
        stage_dir = contracts.folder(workdir, stage)
        if not _made_by_pop_tf(stage, stage_dir):
            raise StageFolderError(f"{stage_dir} holds files no pop_tf run wrote (no {MARKER} marker or {stage} "
                                   "config.json), and the run would write into or replace that folder: move it "
                                   "away or use another --workdir")


class WorkdirBusyError(PopTfError):
    """Another `pop-tf run` holds the work folder's lock."""


@contextlib.contextmanager
def _locked(workdir: str):
    """Holds an exclusive lock on `<workdir>/.pop_tf.lock` (released by the OS if the process
    dies); the lock every stage takes on its output folder (`staging.acquire_lock`)."""
    from pop_tf.stages import staging

    path = os.path.join(workdir, LOCK)
    fd = staging.acquire_lock(path, lambda holder: WorkdirBusyError(
        f"{workdir} is in use by another pop-tf run ({holder}); wait for it to finish or use another --workdir"))
    try:
        yield
    finally:
        staging.release_lock(fd, path, remove=False)


def _stage_names(option: str, name, stages) -> None:
    if name is not None and name not in stages:
        raise config_lib.ConfigError(f"{option} {name!r} is not a stage; use one of {', '.join(stages)}")


def run(config: config_lib.Config, workdir: str, dataset: str = None, until: str = None,
        from_stage: str = None) -> dict:
    """Runs the stages in order (up to and including `until`); returns {stage: artifact paths}.

    `from_stage` reruns that stage and every later one from scratch, whatever their markers say.
    """
    _stage_names("--until", until, STAGE_ORDER)
    _stage_names("--from", from_stage, STAGE_ORDER)
    # The stages point their sections at the work folder: on a copy, so a caller that runs the same
    # config again gets the same fingerprints, not ones of the paths the last run filled in.
    config = copy.deepcopy(config)
    workdir = os.path.abspath(workdir)
    check_paths(config, workdir, dataset, _stages(dataset, until))
    os.makedirs(workdir, exist_ok=True)
    with _locked(workdir):
        results = _run_stages(config, workdir, dataset, until, from_stage)
    log.info(summary(results))
    return results


def _stages(dataset, until) -> list:
    stages = [s for s in STAGE_ORDER if not (s == "synth" and dataset)]
    if until is not None:
        stages = stages[:stages.index(until) + 1] if until in stages else []
    return stages


def _run_stages(config, workdir, dataset, until, from_stage) -> dict:
    stages = _stages(dataset, until)
    forced = set(STAGE_ORDER[STAGE_ORDER.index(from_stage):]) if from_stage else set()
    # Before the first forced stage runs: killed while it does, a later stage's old outputs,
    # made from what the forced stage replaces, must not still read as complete.
    for stage in sorted(forced):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(contracts.folder(workdir, stage), MARKER))
    fingerprints, results = {"dataset": dataset_fingerprint(dataset) if dataset else None}, {}
    for stage in stages:
        stage_dir = contracts.folder(workdir, stage)
        if stage == "ingest":
            dataset = dataset or contracts.folder(workdir, "synth")
        upstream = [fingerprints.get(name) for name in INPUTS[stage]]
        fingerprint = _fingerprint(getattr(config, stage), upstream)
        started = time.monotonic()
        if stage in forced:
            shutil.rmtree(stage_dir, ignore_errors=True)  # checkpoints too: --from means from scratch
        if _read_marker(stage_dir) == fingerprint:
            log.info(f"[{stage}] complete with the same inputs, skipped")
            with open(os.path.join(stage_dir, MARKER)) as f:
                results[stage] = json.load(f)["outputs"]
        else:
            log.info(f"[{stage}] running …")
            results[stage] = _run_stage(stage, config, workdir, dataset)
            _write_marker(stage_dir, fingerprint, results[stage])
            log.info(f"[{stage}] done in {time.monotonic() - started:.1f}s")
        fingerprints[stage] = fingerprint
        if stage == "synth":  # its files, as written (and as anyone may have edited them since)
            content = dataset_fingerprint(stage_dir)
            fingerprints["dataset"] = hashlib.sha256((fingerprint + content).encode()).hexdigest()
    return results


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


# The stages whose networks run under a `mixed_precision` policy (`pop_tf.precision`).
PRECISION_STAGES = ("train_ranker", "cluster", "train_translator", "evaluate")


def summary(results: dict) -> str:
    """The closing lines of a run: headline figures and where to look next."""
    lines = [f"pop-tf run: stages done: {', '.join(results) or 'none'}"]
    ranker = _read_json(results.get("train_ranker", {}).get("metrics", ""))
    if ranker:
        figures = ", ".join(f"{k} {ranker[k]:.3f}" for k in ("pairwise_accuracy", "kendall_tau", "spearman")
                            if isinstance(ranker.get(k), float))
        lines.append(f"  ranker (held-out): {figures}")
    evaluation = _read_json(results.get("evaluate", {}).get("metrics", ""))
    uplift = evaluation.get("translator", {}).get("uplift", {})
    for mode, title in (("style", "style"), ("content", "content (popular label)"),
                        ("content_a_label", "content B→A (A's label, paper 1)")):
        if mode in uplift:
            u = uplift[mode]
            lines.append(f"  {title} translation unpopular → popular, pop_tf's ranker: mean score uplift "
                         f"{u['mean_uplift']:+.3f}, "
                         f"{u['share_improved']:.0%} improved, {u['share_above_1']:.0%} scored above 1 after")
    if evaluation:
        from pop_tf.stages import evaluate_attributes

        lines += [f"  {line}" for line in evaluate_attributes.summary_lines(evaluation)]
    precisions = [f"{stage} {config['mixed_precision']}" for stage in PRECISION_STAGES
                  for config in [_read_json(results.get(stage, {}).get("config", ""))] if "mixed_precision" in config]
    if precisions:
        lines.append(f"  compute precision: {', '.join(precisions)}")
    if "evaluate" in results:
        lines.append(f"  report: {results['evaluate']['report']}")
    logs = {os.path.dirname(p["logs"]) for p in results.values() if isinstance(p, dict) and p.get("logs")}
    for folder in sorted(logs):
        lines.append(f"  TensorBoard: tensorboard --logdir {folder}")
    for model, path in sorted(results.get("export", {}).items()):
        if model != "manifest":
            lines.append(f"  SavedModel {model}: {path}")
    return "\n".join(lines)
