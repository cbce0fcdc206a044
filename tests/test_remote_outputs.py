"""ingest and pairs with input and output on a remote filesystem: everything goes through Beam's
FileSystems (here the `poptest://` scheme of tests/remote_fs.py, a stand-in for gs:// or s3://),
nothing through the local disk of the launching process."""

import json
import os

import pytest

from pop_tf import config as config_lib
from pop_tf import records, synth
from pop_tf.beam import sinks
from pop_tf.stages import ingest, pairs, staging
from tests import remote_fs


@pytest.fixture()
def remote_root(tmp_path, monkeypatch):
    root = tmp_path / "bucket"
    root.mkdir()
    monkeypatch.setenv(remote_fs.ROOT_VARIABLE, str(root))
    monkeypatch.chdir(tmp_path)  # a path taken for a local one would show up here as 'poptest:'
    synth.run(config_lib.SynthConfig(output=str(root / "data"), num_posts=40, image_size=32, seed=7))
    return root


def _ingest_cfg(**changes):
    cfg = config_lib.IngestConfig(input="poptest://data", output="poptest://work/ingest", image_size=32,
                                  test_ratio=0.3)
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


def test_ingest_and_pairs_write_remote_outputs(remote_root, tmp_path):
    paths = ingest.run(_ingest_cfg(num_shards=2))
    assert paths["output"] == "poptest://work/ingest"
    assert paths["train"] == ["poptest://work/ingest/train-00000-of-00002.tfrecord.gz",
                              "poptest://work/ingest/train-00001-of-00002.tfrecord.gz"]
    local = remote_root / "work" / "ingest"
    assert sorted(os.listdir(local)) == sorted(
        ["config.json", "rejects.jsonl", "stats.json", staging.RECORD] +
        [f"{split}-0000{k}-of-00002.tfrecord.gz" for split in ("train", "test") for k in range(2)])
    stats = json.loads((local / "stats.json").read_text())
    broken = {json.loads(line)["post_id"]: json.loads(line)["reason"]
              for line in (remote_root / "data" / "broken.jsonl").read_text().splitlines()}
    rejects = {r["post_id"]: r["reason"] for r in map(json.loads, (local / "rejects.jsonl").read_text().splitlines())}
    assert rejects == broken
    accepted = [records.decode_post(s) for s in sinks.iter_records(str(local / "*.tfrecord.gz"))]
    assert stats["accepted"] == len(accepted) == 40 - len(broken) > 0
    assert json.loads((local / staging.RECORD).read_text())["outputs"]["stats.json"] == "ingest"

    paired = pairs.run(config_lib.PairsConfig(input=paths["output"], output="poptest://work/pairs", window_days=60,
                                              min_log_margin=0.1, num_shards=1))
    assert paired["train"] == ["poptest://work/pairs/train_pairs-00000-of-00001.tfrecord.gz"]
    pair_stats = json.loads((remote_root / "work" / "pairs" / "stats.json").read_text())
    written = sum(1 for _ in sinks.iter_records(str(remote_root / "work" / "pairs" / "*_pairs-*.tfrecord.gz")))
    assert written == sum(pair_stats["pairs"].values()) > 0
    assert pair_stats["posts"] == stats["per_split"]

    # A rerun with fewer shards replaces the recorded outputs and leaves no staging folder behind.
    ingest.run(_ingest_cfg(num_shards=1))
    assert sorted(n for n in os.listdir(local) if n.endswith(".tfrecord.gz")) == [
        "test-00000-of-00001.tfrecord.gz", "train-00000-of-00001.tfrecord.gz"]
    assert not [n for n in os.listdir(local) if n.startswith(staging.PREFIX)]
    assert not os.path.exists(tmp_path / "poptest:")


def test_a_remote_file_pop_tf_did_not_write_is_never_replaced(remote_root, tmp_path):
    out = remote_root / "work" / "ingest"
    out.mkdir(parents=True)
    (out / "train-00000-of-00001.tfrecord.gz").write_bytes(b"the user's own file")
    with pytest.raises(staging.OutputFolderError, match="already holds 'train-00000-of-00001.tfrecord.gz'"):
        ingest.run(_ingest_cfg(num_shards=1))
    assert (out / "train-00000-of-00001.tfrecord.gz").read_bytes() == b"the user's own file"
    assert sorted(os.listdir(out)) == ["train-00000-of-00001.tfrecord.gz"]  # staging removed too
    assert not os.path.exists(tmp_path / "poptest:")
