"""ingest and pairs on a dask.distributed cluster of 2 worker processes: the same records as the
DirectRunner's, and every record still accounted for."""

import json
import os
import subprocess
import sys

import pytest

from pop_tf import config as config_lib
from pop_tf import synth
from pop_tf.beam import sinks
from pop_tf.stages import ingest, pairs

distributed = pytest.importorskip("distributed", reason="the test extra installs apache-beam[dask]")

DASK = "apache_beam.runners.dask.dask_runner.DaskRunner"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def cluster():
    # Worker processes import pop_tf from this checkout, like the test process does.
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = REPO + (os.pathsep + old if old else "")
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as local:
            yield local
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH")
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask") / "synth"
    synth.run(config_lib.SynthConfig(output=str(root), num_posts=80, image_size=32, seed=5))
    return root


def _posts(folder):
    """{post_id: (split, pixel digest, phash)} of an ingest output."""
    found = {}
    for split in ("train", "test"):
        for serialized in sinks.iter_records(os.path.join(folder, f"{split}-*.tfrecord.gz")):
            post = ingest.records.decode_post(serialized)
            found[post["post_id"]] = (post["split"], post["pixel_digest"], post["phash"])
    return found


def _rejects(folder):
    with open(os.path.join(folder, "rejects.jsonl"), encoding="utf-8") as f:
        return [(r["index"], r.get("post_id"), r["reason"]) for r in map(json.loads, f)]


def _pairs(folder):
    return {split: sorted((p["post_id_a"], p["post_id_b"], p["margin"]) for p in map(
        ingest.records.decode_pair, sinks.iter_records(os.path.join(folder, f"{split}_pairs-*.tfrecord.gz"))))
        for split in ("train", "test")}


def _run_both(out, cluster, dataset, beam_args):
    ingested = ingest.run(config_lib.IngestConfig(input=str(dataset), output=str(out / "ingest"), image_size=32,
                                                  test_ratio=0.3), beam_args)
    paired = pairs.run(config_lib.PairsConfig(input=ingested["output"], output=str(out / "pairs"), window_days=60,
                                              min_log_margin=0.1), beam_args)
    return ingested, paired


def test_ingest_and_pairs_on_dask_match_the_direct_runner(tmp_path, cluster, dataset):
    direct, direct_pairs = _run_both(tmp_path / "direct", cluster, dataset, [])
    dask, dask_pairs = _run_both(tmp_path / "dask", cluster, dataset,
                                 [f"--runner={DASK}", f"--dask_client_address={cluster.scheduler_address}"])
    accepted = _posts(direct["output"])
    assert len(accepted) > 50
    assert _posts(dask["output"]) == accepted
    assert _rejects(dask["output"]) == _rejects(direct["output"]) != []
    expected_pairs = _pairs(direct_pairs["output"])
    assert expected_pairs["train"] and expected_pairs["test"]
    assert _pairs(dask_pairs["output"]) == expected_pairs
    # pop_tf's sinks make the shards themselves equal: the same records, in the same order, as bytes.
    for ours, theirs in ((direct, dask), (direct_pairs, dask_pairs)):
        shards = ours["train"] + ours["test"]
        assert [os.path.basename(p) for p in shards] == [os.path.basename(p) for p in theirs["train"] + theirs["test"]]
        for path in shards:
            twin = os.path.join(theirs["output"], os.path.basename(path))
            assert list(sinks.iter_records(path)) == list(sinks.iter_records(twin)), path
    # The work ran as tasks on both worker processes, not in this one.
    with distributed.Client(cluster) as client:
        executed = client.run(lambda dask_worker: dask_worker.state.executed_count)
    assert len(executed) == 2 and min(executed.values()) > 0, executed
    stats = json.loads(open(dask["stats"]).read())
    assert stats["accepted"] + stats["rejected"] == stats["input_records"] == 80
