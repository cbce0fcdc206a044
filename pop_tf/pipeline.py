"""`pop-tf run`: the stages in order over one work folder (TFX-style), resumable.

Each stage writes into `<workdir>/<stage>/` and, when it finishes, a `_COMPLETE` marker holding a
fingerprint of its resolved config and of the fingerprints of the stages it reads (`INPUTS`). A
rerun skips a stage whose marker matches, so changing an option reruns exactly the stages that
depend on it. A stage without a marker (interrupted, even by `kill -9`) runs again, and the
training stages resume from their newest checkpoint. `from_stage` (`--from`) discards the
outputs of that stage and every later one and runs them from scratch. A lock file keeps two runs
out of one work folder.
"""

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time

from pop_tf import config as config_lib
from pop_tf.errors import PopTfError

MARKER = "_COMPLETE"
LOCK = ".pop_tf.lock"
# The full order of SPEC §4.
STAGE_ORDER = ("synth", "ingest", "pairs", "train_ranker", "score", "cluster", "train_translator",
               "evaluate", "export")

# What each stage reads ("dataset": the synthesised or given dataset). A stage reruns when its
# config or the fingerprint of anything it reads changes, and only then.
INPUTS = {
    "synth": (),
    "ingest": ("dataset",),
    "pairs": ("ingest",),
    "train_ranker": ("pairs", "ingest", "dataset"),  # the dataset's truth.jsonl, when it has one
    "score": ("ingest", "train_ranker"),
    "cluster": ("ingest",),
    "train_translator": ("score", "cluster"),
    "evaluate": ("score", "cluster", "train_ranker", "train_translator"),
    "export": ("train_ranker", "cluster", "train_translator"),
}


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


def _run_synth(config, workdir, dataset):
    from pop_tf import synth
    config.synth.output = os.path.join(workdir, "synth")
    return synth.run(config.synth)


def _run_ingest(config, workdir, dataset):
    from pop_tf.stages import ingest
    config.ingest.input = dataset
    config.ingest.output = os.path.join(workdir, "ingest")
    return ingest.run(config.ingest)


def _run_pairs(config, workdir, dataset):
    from pop_tf.stages import pairs
    config.pairs.input = os.path.join(workdir, "ingest")
    config.pairs.output = os.path.join(workdir, "pairs")
    return pairs.run(config.pairs)


def _run_train_ranker(config, workdir, dataset):
    from pop_tf.stages import train_ranker
    section = config.train_ranker
    section.input = os.path.join(workdir, "pairs")
    section.images = os.path.join(workdir, "ingest")
    section.output = os.path.join(workdir, "train_ranker")
    truth = os.path.join(dataset, "truth.jsonl")
    section.truth = section.truth or (truth if os.path.isfile(truth) else "")
    return train_ranker.run(section)


def _run_score(config, workdir, dataset):
    from pop_tf.stages import score
    config.score.input = os.path.join(workdir, "ingest")
    config.score.model = os.path.join(workdir, "train_ranker", "saved_model")
    config.score.output = os.path.join(workdir, "score")
    return score.run(config.score)


def _run_cluster(config, workdir, dataset):
    from pop_tf.stages import cluster
    config.cluster.input = os.path.join(workdir, "ingest")
    config.cluster.output = os.path.join(workdir, "cluster")
    return cluster.run(config.cluster)


def _run_train_translator(config, workdir, dataset):
    from pop_tf.stages import train_translator
    for key, value in train_translator.workdir_defaults(workdir).items():
        setattr(config.train_translator, key, value)
    return train_translator.run(config.train_translator)


def _run_evaluate(config, workdir, dataset):
    from pop_tf.stages import evaluate
    section = config.evaluate
    defaults = evaluate.workdir_defaults(workdir)
    truth = os.path.join(dataset, "truth.jsonl")  # the dataset's, which need not be <workdir>/synth's
    defaults["truth"] = truth if os.path.isfile(truth) else ""
    # Paths the preset or --set named stay; the rest point at this work folder's stages.
    for key, value in defaults.items():
        if not getattr(section, key):
            setattr(section, key, value)
    return evaluate.run(section)


def _run_export(config, workdir, dataset):
    from pop_tf.stages import export
    config.export.workdir = workdir
    if config.train_translator.model != "dmit":
        # the pix2pix generator has no SavedModel of its own (SPEC §7's translator is DMIT's)
        config.export.models = [m for m in config.export.models if m != "translator"]
    return export.run(config.export)


_RUNNERS = {"synth": _run_synth, "ingest": _run_ingest, "pairs": _run_pairs, "train_ranker": _run_train_ranker,
            "score": _run_score, "cluster": _run_cluster, "train_translator": _run_train_translator,
            "evaluate": _run_evaluate, "export": _run_export}


class WorkdirBusyError(PopTfError):
    """Another `pop-tf run` holds the work folder's lock."""


@contextlib.contextmanager
def _locked(workdir: str):
    """Holds an exclusive lock on `<workdir>/.pop_tf.lock` (released by the OS if the process dies)."""
    path = os.path.join(workdir, LOCK)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise WorkdirBusyError(f"{workdir} is in use by another pop-tf run ({holder}); wait for it to finish "
                                   "or use another --workdir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _stage_names(option: str, name, stages) -> None:
    if name is not None and name not in stages:
        raise config_lib.ConfigError(f"{option} {name!r} is not a stage; use one of {', '.join(stages)}")


def run(config: config_lib.Config, workdir: str, dataset: str = None, until: str = None,
        from_stage: str = None) -> dict:
    """Runs the stages in order (up to and including `until`); returns {stage: artifact paths}.

    `from_stage` reruns that stage and every later one from scratch, whatever their markers say.
    """
    _stage_names("--until", until, _RUNNERS)
    _stage_names("--from", from_stage, _RUNNERS)
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    with _locked(workdir):
        results = _run_stages(config, workdir, dataset, until, from_stage)
    print(summary(results), file=sys.stderr)
    return results


def _run_stages(config, workdir, dataset, until, from_stage) -> dict:
    stages = [s for s in STAGE_ORDER if not (s == "synth" and dataset)]
    if until is not None:
        stages = stages[:stages.index(until) + 1] if until in stages else []
    forced = set(STAGE_ORDER[STAGE_ORDER.index(from_stage):]) if from_stage else set()
    fingerprints, results = {"dataset": os.path.abspath(dataset) if dataset else None}, {}
    for stage in stages:
        stage_dir = os.path.join(workdir, stage)
        if stage == "ingest":
            dataset = dataset or os.path.join(workdir, "synth")
        upstream = [fingerprints.get(name) for name in INPUTS[stage]]
        fingerprint = _fingerprint(getattr(config, stage), upstream)
        started = time.monotonic()
        if stage in forced:
            shutil.rmtree(stage_dir, ignore_errors=True)  # checkpoints too: --from means from scratch
        if _read_marker(stage_dir) == fingerprint:
            print(f"[{stage}] complete with the same inputs, skipped", file=sys.stderr, flush=True)
            with open(os.path.join(stage_dir, MARKER)) as f:
                results[stage] = json.load(f)["outputs"]
        else:
            print(f"[{stage}] running …", file=sys.stderr, flush=True)
            results[stage] = _RUNNERS[stage](config, workdir, dataset)
            _write_marker(stage_dir, fingerprint, results[stage])
            print(f"[{stage}] done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
        fingerprints[stage] = fingerprint
        if stage == "synth":
            fingerprints["dataset"] = fingerprint
    return results


def _read_json(path: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


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
    for mode in ("style", "content"):
        if mode in uplift:
            u = uplift[mode]
            lines.append(f"  {mode} translation unpopular → popular: mean score uplift {u['mean_uplift']:+.3f}, "
                         f"{u['share_improved']:.0%} improved, {u['share_above_1']:.0%} scored above 1 after")
    if "evaluate" in results:
        lines.append(f"  report: {results['evaluate']['report']}")
    logs = {os.path.dirname(p["logs"]) for p in results.values() if isinstance(p, dict) and p.get("logs")}
    for folder in sorted(logs):
        lines.append(f"  TensorBoard: tensorboard --logdir {folder}")
    for model, path in sorted(results.get("export", {}).items()):
        if model != "manifest":
            lines.append(f"  SavedModel {model}: {path}")
    return "\n".join(lines)
