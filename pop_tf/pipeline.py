"""`pop-tf run`: the stages in order over one work folder (TFX-style), resumable.

Each stage writes into `<workdir>/<stage>/` and, when it finishes, a `_COMPLETE` marker holding a
fingerprint of its resolved config and of its inputs' markers. A rerun skips a stage whose marker
matches, so changing an option reruns exactly the stages it affects and those after them.
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


_RUNNERS = {"synth": _run_synth, "ingest": _run_ingest, "pairs": _run_pairs}


def run(config: config_lib.Config, workdir: str, dataset: str = None) -> dict:
    """Runs every built stage in order; returns {stage: artifact paths}."""
    workdir = os.path.abspath(workdir)
    os.makedirs(workdir, exist_ok=True)
    stages = [s for s in STAGE_ORDER if s in _RUNNERS and not (s == "synth" and dataset)]
    upstream, results = [], {}
    if dataset:
        upstream.append(os.path.abspath(dataset))
    for stage in stages:
        stage_dir = os.path.join(workdir, stage)
        if stage == "ingest":
            dataset = dataset or os.path.join(workdir, "synth")
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
        upstream.append(fingerprint)
    pending = [s for s in STAGE_ORDER if s not in _RUNNERS]
    print(f"pop-tf run: stages done: {', '.join(stages)}; outputs in {workdir}", file=sys.stderr)
    if pending:
        print(f"pop-tf run: not built yet (open issues): {', '.join(pending)}", file=sys.stderr)
    return results
