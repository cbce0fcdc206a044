"""`pop-tf run`: the stages in order over one work folder (TFX-style), resumable.

Each stage writes into `<workdir>/<stage>/` and, when it finishes, a `_COMPLETE` marker holding a
fingerprint of its resolved config and of the fingerprints of the stages it reads (`INPUTS`). A
rerun skips a stage whose marker matches, so changing an option reruns exactly the stages that
depend on it.
Stages that have not landed yet are listed at the end instead of being faked.
"""

import hashlib
import json
import os
import sys
import time

from pop_tf import config as config_lib

MARKER = "_COMPLETE"
# The full order of SPEC §4; stages missing from `_RUNNERS` are not built yet.
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


def _run_export(config, workdir, dataset):
    from pop_tf.stages import export
    config.export.workdir = workdir
    built = {"ranker": "train_ranker", "clusterer": "cluster", "translator": "train_translator"}
    # a model whose training stage has not landed yet cannot be exported
    config.export.models = [m for m in config.export.models if built[m] in _RUNNERS]
    return export.run(config.export)


_RUNNERS = {"synth": _run_synth, "ingest": _run_ingest, "pairs": _run_pairs, "train_ranker": _run_train_ranker,
            "score": _run_score, "cluster": _run_cluster, "export": _run_export}


def run(config: config_lib.Config, workdir: str, dataset: str = None, until: str = None) -> dict:
    """Runs every built stage in order (up to and including `until`); returns {stage: artifact paths}."""
    if until is not None and until not in _RUNNERS:
        raise config_lib.ConfigError(f"--until {until!r} is not a stage; use one of {', '.join(_RUNNERS)}")
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    stages = [s for s in STAGE_ORDER if s in _RUNNERS and not (s == "synth" and dataset)]
    if until is not None:
        stages = stages[:stages.index(until) + 1] if until in stages else []
    fingerprints, results = {"dataset": os.path.abspath(dataset) if dataset else None}, {}
    for stage in stages:
        stage_dir = os.path.join(workdir, stage)
        if stage == "ingest":
            dataset = dataset or os.path.join(workdir, "synth")
        upstream = [fingerprints.get(name) for name in INPUTS[stage]]
        fingerprint = _fingerprint(getattr(config, stage), upstream)
        started = time.monotonic()
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
    pending = [s for s in STAGE_ORDER if s not in _RUNNERS]
    print(f"pop-tf run: stages done: {', '.join(stages)}; outputs in {workdir}", file=sys.stderr)
    if pending:
        print(f"pop-tf run: not built yet (open issues): {', '.join(pending)}", file=sys.stderr)
    return results
