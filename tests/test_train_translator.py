"""The train_translator stage with model=pix2pix: the three diversity modes end to end on tiny
data, sample grids, metrics, resume, and the refusals."""

import json

import numpy as np
import pytest
from PIL import Image

from pop_tf import config as config_lib
from pop_tf.stages import cluster, train_translator
from tests.conftest import tiny_config

TINY_GAN = ["train_translator.model=pix2pix", "train_translator.image_size=32", "train_translator.base_filters=8",
            "train_translator.discriminator_layers=2", "train_translator.batch_size=4", "train_translator.epochs=1",
            "train_translator.steps_per_epoch=2", "train_translator.checkpoint_every=1",
            "train_translator.num_sample_edges=3", "train_translator.eval_inputs=4", "train_translator.eval_samples=3"]


@pytest.fixture(scope="module")
def cluster_dir(pairs_workdir, tmp_path_factory):
    cfg = tiny_config().cluster
    cfg.input, cfg.output = str(pairs_workdir / "ingest"), str(tmp_path_factory.mktemp("clusters"))
    cluster.run(cfg)
    return cfg.output


def _cfg(pairs_workdir, cluster_dir, output, *sets):
    cfg = tiny_config(*TINY_GAN, *sets).train_translator
    cfg.input, cfg.clusters, cfg.output = str(pairs_workdir / "ingest"), cluster_dir, str(output)
    return cfg


@pytest.mark.parametrize("diversity", ["none", "ms", "clusters"])
def test_each_diversity_mode_trains_and_reports_diversity(pairs_workdir, cluster_dir, tmp_path, diversity):
    cfg = _cfg(pairs_workdir, cluster_dir, tmp_path / diversity, f"train_translator.diversity={diversity}")
    paths = train_translator.run(cfg)
    metrics = json.loads(open(paths["metrics"]).read())
    assert metrics["steps"] == 2 and metrics["diversity"] == diversity
    assert metrics["diversity_pairs"] == 4 * 3  # 4 inputs × C(3, 2) pairs
    assert 0.0 <= metrics["diversity_l1"] <= 2.0 and 0.0 <= metrics["reconstruction_l1"] <= 2.0
    clusters = 3 if diversity == "clusters" else 1
    assert metrics["num_clusters"] == clusters
    with Image.open(paths["samples"]) as grid:
        assert grid.size == (3 * 32, (clusters + 1) * 32)  # edges on top, one row per cluster
    assert json.loads(open(paths["config"]).read())["diversity"] == diversity


def test_rerun_resumes_and_continues_the_step_count(pairs_workdir, cluster_dir, tmp_path, capfd):
    cfg = _cfg(pairs_workdir, cluster_dir, tmp_path / "resume", "train_translator.diversity=ms")
    train_translator.run(cfg)
    cfg.epochs = 2
    paths = train_translator.run(cfg)
    assert "resuming from" in capfd.readouterr().err
    assert json.loads(open(paths["metrics"]).read())["steps"] == 4


def test_l1_distance_by_hand():
    a, b = np.zeros((2, 2, 2, 3)), np.ones((2, 2, 2, 3))
    b[1] = -1.0
    np.testing.assert_allclose(train_translator.l1_distance(a, b), [1.0, 1.0])
    np.testing.assert_allclose(train_translator.l1_distance(a, a), [0.0, 0.0])


def test_dmit_is_refused_until_it_lands(tmp_path):
    cfg = config_lib.TranslatorConfig(input=str(tmp_path), output=str(tmp_path / "o"))
    with pytest.raises(train_translator.ModelNotBuiltError, match="issue #6"):
        train_translator.run(cfg)


def test_clusters_mode_needs_a_cluster_folder(pairs_workdir, tmp_path):
    cfg = _cfg(pairs_workdir, "", tmp_path / "o", "train_translator.diversity=clusters")
    with pytest.raises(config_lib.ConfigError, match="train_translator.clusters"):
        train_translator.run(cfg)
    cfg.clusters = str(tmp_path)
    with pytest.raises(cluster.ClusterStageError, match="not a complete cluster output"):
        train_translator.run(cfg)
