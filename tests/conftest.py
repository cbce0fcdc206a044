"""Shared fixtures: one tiny pipeline work folder per test session (synth → ingest → pairs)."""

import pytest

from pop_tf import config as config_lib
from pop_tf import pipeline

TINY = ["synth.num_posts=240", "synth.image_size=48", "synth.num_users=8", "ingest.image_size=32",
        "train_ranker.backbone=small", "train_ranker.weights=none", "train_ranker.small_width=4",
        "train_ranker.image_size=32", "train_ranker.batch_size=8", "train_ranker.epochs=1",
        "train_ranker.steps_per_epoch=3", "train_ranker.checkpoint_every=2", "train_ranker.num_logged_images=4",
        "train_ranker.head_learning_rate=0.001", "train_ranker.backbone_learning_rate=0.001",
        "score.batch_size=32", "cluster.weights=none", "cluster.feature_size=64", "cluster.num_clusters=3",
        "cluster.examples_per_cluster=2",
        # DMIT with shallow networks: tracing its six-update step dominates the time, not the arithmetic.
        "train_translator.model=dmit", "train_translator.image_size=32", "train_translator.base_filters=8",
        "train_translator.content_residual_blocks=0", "train_translator.decoder_residual_blocks=1",
        "train_translator.style_blocks=2", "train_translator.image_d_blocks=2",
        "train_translator.content_d_blocks=2", "train_translator.batch_size=2", "train_translator.epochs=1",
        "train_translator.pix2pix_epochs=1",
        "train_translator.steps_per_epoch=2", "train_translator.checkpoint_every=1",
        "train_translator.num_sample_edges=3", "train_translator.eval_inputs=4",
        "train_translator.eval_samples=3",
        "evaluate.inception_weights=none", "evaluate.lpips_weights=none", "evaluate.num_inputs=3",
        "evaluate.samples_per_input=2", "evaluate.ndb_bins=3", "evaluate.ndb_image_size=8",
        "evaluate.num_grid_pairs=2", "evaluate.batch_size=8", "evaluate.attribute_steps=50",
        "evaluate.attribute_width=8"]


def tiny_config(*sets):
    return config_lib.resolve(None, [*TINY, *sets])


@pytest.fixture(scope="session")
def pairs_workdir(tmp_path_factory):
    """A work folder with synth, ingest and pairs outputs of a tiny synthetic dataset (32×32)."""
    workdir = tmp_path_factory.mktemp("tiny_pipeline")
    pipeline.run(tiny_config(), str(workdir), until="pairs")
    return workdir
