"""File names inside stage output folders: what a writing stage and the stages that read it share.

A stage learns where another stage's outputs lie from this module, never by importing that stage.

- ingest writes its accepted posts as GZIP TFRecord shards, one set per split:
  `train-*.tfrecord.gz` and `test-*.tfrecord.gz` (`SPLITS`, `shard_pattern`). score writes the
  same records, each with its score and domain, under the same names. pairs, score, cluster,
  train_ranker, train_translator and evaluate read them.
- pairs writes `train_pairs-*.tfrecord.gz` and `test_pairs-*.tfrecord.gz` (`PAIR_PREFIXES`,
  `pair_shard_pattern`); train_ranker reads them.
- Every stage writes `stats.json` (its counts, `STATS`) and `config.json` (its resolved config,
  `CONFIG`) beside its outputs.
"""

import os

# The splits, in the order stages write and list them.
SPLITS = ("train", "test")
SHARD_SUFFIX = ".tfrecord.gz"
STATS = "stats.json"
CONFIG = "config.json"
PAIR_PREFIXES = {split: f"{split}_pairs" for split in SPLITS}
# The cluster stage's files that the translator and evaluation read (models.clusterer loads them).
CLUSTERS_NPZ = "clusters.npz"
ASSIGNMENTS = "assignments.csv"
EXTRACTOR_WEIGHTS = "feature_extractor.weights.h5"


def shard_pattern(folder: str, split: str) -> str:
    """The glob pattern of one split's post shards in an ingest or score output folder."""
    return os.path.join(folder, f"{split}-*{SHARD_SUFFIX}")


def pair_shard_pattern(folder: str, split: str) -> str:
    """The glob pattern of one split's pair shards in a pairs output folder."""
    return os.path.join(folder, f"{PAIR_PREFIXES[split]}-*{SHARD_SUFFIX}")


def find_shards(folder: str, glob) -> dict:
    """{split: sorted post shard paths} of an ingest or score output folder; [] for a split with none.

    Args:
        glob: pattern → matching paths, from the caller's filesystem layer: a Beam driver passes
            one over Beam's `FileSystems` (it does not import TensorFlow), others
            `tf.io.gfile.glob`. Which missing split is an error is the caller's to say.
    """
    return {split: sorted(glob(shard_pattern(folder, split))) for split in SPLITS}
