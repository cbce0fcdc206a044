"""The train_translator stage: pix2pix's three diversity modes and DMIT end to end on tiny data
(sample grids, metrics, resume, refusals), DMIT's domain-pair input pipeline, and the translator
SavedModel in a fresh process without pop_tf."""

import glob
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import config as config_lib
from pop_tf import data, records, serving
from pop_tf.models import clusterer
from pop_tf.stages import cluster, score, train_ranker, train_translator
from tests.conftest import tiny_config

TINY_GAN = ["train_translator.model=pix2pix", "train_translator.image_size=32", "train_translator.base_filters=8",
            "train_translator.pix2pix_image_d_blocks=2", "train_translator.batch_size=4", "train_translator.epochs=1",
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


def test_rerun_resumes_and_continues_the_step_count(pairs_workdir, cluster_dir, tmp_path, caplog):
    cfg = _cfg(pairs_workdir, cluster_dir, tmp_path / "resume", "train_translator.diversity=ms")
    train_translator.run(cfg)
    cfg.pix2pix_epochs = 2
    paths = train_translator.run(cfg)
    assert "resuming from" in caplog.text
    assert json.loads(open(paths["metrics"]).read())["steps"] == 4


def test_l1_distance_by_hand():
    a, b = np.zeros((2, 2, 2, 3)), np.ones((2, 2, 2, 3))
    b[1] = -1.0
    np.testing.assert_allclose(train_translator.l1_distance(a, b), [1.0, 1.0])
    np.testing.assert_allclose(train_translator.l1_distance(a, a), [0.0, 0.0])


def test_pix2pix_refuses_an_image_size_its_discriminator_cannot_take(pairs_workdir, tmp_path):
    cfg = _cfg(pairs_workdir, "", tmp_path / "o", "train_translator.pix2pix_image_d_blocks=3")
    with pytest.raises(config_lib.ConfigError, match="lower train_translator.pix2pix_image_d_blocks \\(3\\)"):
        train_translator.run(cfg)
    assert not (tmp_path / "o").exists()


def test_clusters_mode_needs_a_cluster_folder(pairs_workdir, tmp_path):
    cfg = _cfg(pairs_workdir, "", tmp_path / "o", "train_translator.diversity=clusters")
    with pytest.raises(config_lib.ConfigError, match="train_translator.clusters"):
        train_translator.run(cfg)
    (tmp_path / "empty").mkdir()  # beside the output: a folder containing it is refused as an overlap
    cfg.clusters = str(tmp_path / "empty")
    with pytest.raises(clusterer.ClusterError, match="not a complete cluster output"):
        train_translator.run(cfg)


# ------------------------------------------------------------------------------------------- DMIT

S = 32
DOMAINS = ["unpopular/edge", "unpopular/color", "popular/edge", "popular/color"]
TINY_DMIT = ["train_translator.model=dmit"]  # the tiny DMIT networks are conftest.TINY's


@pytest.fixture(scope="module")
def scored_dir(pairs_workdir, tmp_path_factory):
    """A score output of the tiny pipeline: a tiny ranker trained as test_ranker's does, then `score`."""
    root = tmp_path_factory.mktemp("scored")
    ranker_cfg = tiny_config(f"train_ranker.output={root / 'train_ranker'}").train_ranker
    ranker_cfg.input, ranker_cfg.images = str(pairs_workdir / "pairs"), str(pairs_workdir / "ingest")
    ranker = train_ranker.run(ranker_cfg)
    score_cfg = tiny_config().score
    score_cfg.input, score_cfg.model, score_cfg.output = (str(pairs_workdir / "ingest"), ranker["saved_model"],
                                                          str(root / "score"))
    score.run(score_cfg)
    return root / "score"


def _dmit_cfg(input_dir, output, *sets):
    cfg = tiny_config(*TINY_DMIT, *sets).train_translator
    cfg.input, cfg.output = str(input_dir), str(output)
    return cfg


@pytest.fixture(scope="module")
def dmit_run(scored_dir, tmp_path_factory):
    cfg = _dmit_cfg(scored_dir, tmp_path_factory.mktemp("dmit") / "train_translator")
    return cfg, train_translator.run(cfg)


def _scored_posts(scored_dir):
    """{image or edge bytes: (popularity domain, modality)} of every scored training post."""
    found = {}
    for serialized in records.iter_serialized(str(scored_dir / "train-*.tfrecord.gz")):
        post = records.decode_scored_post(serialized)
        for key, modality in (("image_png", "color"), ("edge_png", "edge")):
            pixels = np.array(Image.open(io.BytesIO(post[key])).convert("RGB"))
            found[pixels.tobytes()] = (post["domain"], modality)
    return found


def test_domain_pairs_carry_the_posts_domain_and_modality_and_are_seeded(scored_dir):
    pattern = str(scored_dir / "train-*.tfrecord.gz")
    posts = _scored_posts(scored_dir)
    batches = list(data.domain_pair_dataset(pattern, S, S, 4, seed=1, flip=False).take(6))
    seen = set()
    for batch in batches:
        assert batch["image_a"].shape == (4, S, S, 3) and batch["label_b"].shape == (4, 4)
        for side in "ab":
            for image, label in zip(batch[f"image_{side}"].numpy(), batch[f"label_{side}"].numpy()):
                pixels = np.round((image + 1.0) * 127.5).astype(np.uint8)
                domain, modality = posts[pixels.tobytes()]  # every example is one post's image or edge map
                assert domain in ("popular", "unpopular")  # the undecided middle is dropped
                popularity, kind = data.POPULARITIES[int(label[:2].argmax())], data.MODALITIES[int(label[2:].argmax())]
                assert (popularity, kind) == (domain, modality) and label.sum() == 2.0
                seen.add((popularity, kind))
    assert len(seen) == 4  # both popularities, both modalities
    again = list(data.domain_pair_dataset(pattern, S, S, 4, seed=1, flip=False).take(6))
    other = next(iter(data.domain_pair_dataset(pattern, S, S, 4, seed=2, flip=False)))
    for first, second in zip(batches, again):
        for key in first:
            np.testing.assert_array_equal(first[key].numpy(), second[key].numpy())
    assert not np.array_equal(other["image_a"].numpy(), batches[0]["image_a"].numpy())
    assert not np.array_equal(batches[0]["image_a"].numpy(), batches[0]["image_b"].numpy())  # independent streams


def test_domain_pairs_always_target_another_domain(scored_dir):
    """DMIT draws the target from D − {E_d(x)}: no row may pair two examples of one domain."""
    pattern = str(scored_dir / "train-*.tfrecord.gz")
    combinations = set()
    for batch in data.domain_pair_dataset(pattern, S, S, 8, seed=3, flip=False).take(12):
        for label_a, label_b in zip(batch["label_a"].numpy(), batch["label_b"].numpy()):
            assert not np.array_equal(label_a, label_b)
            combinations.add((label_a.tobytes(), label_b.tobytes()))
    assert len(combinations) == 4 * 3  # every ordered pair of different domains occurs


def test_domain_pairs_refuse_unscored_records(pairs_workdir):
    with pytest.raises(data.DataError, match="popularity domain"):
        data.domain_pair_dataset(str(pairs_workdir / "ingest" / "train-*.tfrecord.gz"), S, S, 2)


def test_dmit_trains_on_scored_posts_and_writes_its_outputs(dmit_run):
    cfg, paths = dmit_run
    metrics = json.loads(open(paths["metrics"]).read())
    assert metrics["model"] == "dmit" and metrics["steps"] == 2
    assert metrics["diversity_pairs"] == 4 * 3  # 4 inputs × C(3, 2) pairs
    assert 0.0 < metrics["diversity_l1"] <= 2.0 and 0.0 <= metrics["reconstruction_l1"] <= 2.0
    stats = json.loads((Path(cfg.input) / "stats.json").read_text())
    assert metrics["train_posts"] == stats["counts"]["train"]["popular"] + stats["counts"]["train"]["unpopular"]
    losses = metrics["losses"]
    assert {"d_content_loss", "d_prior_loss", "d_encoded_loss", "g_loss", "reconstruction_loss", "kl_loss",
            "cycle_loss", "latent_regression_loss", "diversity_loss", "content_reconstruction_loss"} <= set(losses)
    assert all(np.isfinite(v) for v in losses.values())
    with Image.open(paths["samples"]) as grid:
        assert grid.size == (4 * S, 3 * S)  # real | rec | fake_enc | fake_rand, one row per held-out post
    assert {f"ckpt-{n}.index" for n in (1, 2)} <= set(os.listdir(paths["checkpoints"]))
    card = serving.read_model_card(paths["saved_model"], "translator")
    assert card["domains"] == DOMAINS and card["image_size"] == S and card["data_fingerprint"]
    assert card["config"]["model"] == "dmit" and card["metrics"]["steps"] == 2
    events = [f for _, _, files in os.walk(paths["logs"]) for f in files if "tfevents" in f]
    assert len(events) >= 2  # Keras' loss scalars and the sample grids
    assert Path(paths["logs"]).name == Path(cfg.output).name  # one TensorBoard run per output folder
    plugins = {value.metadata.plugin_data.plugin_name
               for f in glob.glob(os.path.join(paths["logs"], "train", "*tfevents*"))
               for event in tf.compat.v1.train.summary_iterator(f) for value in event.summary.value}
    assert "hparams" in plugins  # the ablation options, for the HParams tab


def test_dmit_rerun_resumes_and_continues_the_step_count(dmit_run, tmp_path, caplog):
    cfg, paths = dmit_run
    resumed = _dmit_cfg(cfg.input, tmp_path / "train_translator", "train_translator.epochs=2")
    shutil.copytree(cfg.output, resumed.output)
    caplog.clear()
    paths = train_translator.run(resumed)
    assert "resuming from" in caplog.text
    assert json.loads(open(paths["metrics"]).read())["steps"] == 4
    assert "ckpt-4.index" in os.listdir(paths["checkpoints"])


def test_dmit_with_cluster_diversity_conditions_on_the_posts_clusters(scored_dir, cluster_dir, tmp_path):
    cfg = _dmit_cfg(scored_dir, tmp_path / "o", "train_translator.diversity=clusters")
    cfg.clusters = cluster_dir
    paths = train_translator.run(cfg)
    metrics = json.loads(open(paths["metrics"]).read())
    assert metrics["steps"] == 2 and metrics["num_clusters"] == 3
    losses = metrics["losses"]
    assert {"mode_seeking_loss", "cluster_mean_loss", "mahalanobis_loss"} <= set(losses)
    assert "diversity_loss" not in losses  # MSGAN's term replaces DMIT's
    assert all(np.isfinite(v) for v in losses.values())
    assert serving.read_model_card(paths["saved_model"], "translator")["config"]["diversity"] == "clusters"


def test_dmit_needs_scored_posts_and_sizes_that_fit(pairs_workdir, scored_dir, tmp_path):
    with pytest.raises(train_translator.TranslatorError, match="score stage's output"):
        train_translator.run(_dmit_cfg(pairs_workdir / "ingest", tmp_path / "o"))
    with pytest.raises(config_lib.ConfigError, match="train_translator.image_size"):
        train_translator.run(_dmit_cfg(scored_dir, tmp_path / "o", "train_translator.image_size=30"))
    with pytest.raises(config_lib.ConfigError, match="content_d_blocks"):
        train_translator.run(_dmit_cfg(scored_dir, tmp_path / "o", "train_translator.content_d_blocks=5"))
    assert not (tmp_path / "o").exists()


def test_dmit_diversity_none_is_dmit_as_published():
    cfg = config_lib.TranslatorConfig()
    assert train_translator.dmit_diversity(cfg) == "dmit"
    cfg.lambda_diversity = 0.0
    assert train_translator.dmit_diversity(cfg) == "none"
    cfg.diversity = "ms"
    assert train_translator.dmit_diversity(cfg) == "ms"


_FRESH_TRANSLATOR = textwrap.dedent("""
    import json, sys
    import numpy as np, tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    images = np.load(sys.argv[2])
    content, reference = images[:2], images[2:4]
    target = tf.constant(["popular/color", "unpopular/edge"])
    seed = lambda s: tf.constant(s, tf.int64)
    translated = model.translate(content, reference, target)["images"]
    signature = model.signatures["translate"](content=content, reference=reference, target_domain=target)["images"]
    sampled = model.sample(content, target, seed(3), tf.constant(3))["images"]
    out = {"pop_tf_loaded": "pop_tf" in sys.modules, "signatures": sorted(model.signatures),
           "domains": [n.decode() for n in model.domains()["names"].numpy()],
           "domains_signature": [n.decode() for n in model.signatures["domains"]()["names"].numpy()],
           "translate": translated.numpy().tolist(), "translate_dtype": translated.dtype.name,
           "signature_equal": bool(np.array_equal(signature, translated)),
           "sample": sampled.numpy().tolist(), "sample_dtype": sampled.dtype.name,
           "same_seed": bool(np.array_equal(sampled, model.sample(content, target, seed(3), tf.constant(3))["images"])),
           "other_seed": bool(np.array_equal(sampled, model.sample(content, target, seed(4), tf.constant(3))["images"])),
           "sample_signature": bool(np.array_equal(sampled, model.signatures["sample"](
               content=content, target_domain=target, seed=seed(3), num_samples=tf.constant(3))["images"]))}
    errors = {}
    calls = {"unknown": lambda: model.translate(content, reference, tf.constant(["popular/colour", "popular/edge"])),
             "mismatched": lambda: model.translate(content, reference, tf.constant(["popular/color"])),
             "mismatched_reference": lambda: model.translate(content, reference[:1], target),
             "empty": lambda: model.translate(content[:0], reference[:0], tf.constant([], tf.string)),
             "sample_unknown": lambda: model.sample(content, tf.constant(["x", "y"]), seed(0), tf.constant(1)),
             "no_samples": lambda: model.sample(content, target, seed(0), tf.constant(0))}
    for name, call in calls.items():
        try:
            call()
        except tf.errors.InvalidArgumentError as e:
            errors[name] = e.message
    out["errors"] = errors
    print(json.dumps(out))
""")


def test_translator_saved_model_in_a_fresh_process_matches_the_networks(dmit_run, tmp_path):
    cfg, paths = dmit_run
    images = np.random.default_rng(0).integers(0, 256, (4, S, S, 3)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    script = tmp_path / "client.py"
    script.write_text(_FRESH_TRANSLATOR)
    result = subprocess.run([sys.executable, str(script), paths["saved_model"], str(tmp_path / "images.npy")],
                            capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
                            env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert not out["pop_tf_loaded"]
    assert {"translate", "sample", "domains"} <= set(out["signatures"])
    assert out["domains"] == out["domains_signature"] == DOMAINS
    translated, sampled = np.array(out["translate"]), np.array(out["sample"])
    assert translated.shape == (2, S, S, 3) and out["translate_dtype"] == "uint8" and out["signature_equal"]
    assert sampled.shape == (2, 3, S, S, 3) and out["sample_dtype"] == "uint8" and out["sample_signature"]
    assert out["same_seed"] and not out["other_seed"]
    errors = out["errors"]
    assert set(errors) == {"unknown", "mismatched", "mismatched_reference", "empty", "sample_unknown", "no_samples"}
    for name in ("unknown", "sample_unknown"):
        assert "must name one of " + ", ".join(DOMAINS) in errors[name], errors[name]
    assert "popular/colour" in errors["unknown"]
    assert "same number N" in errors["mismatched"] and "same number N" in errors["mismatched_reference"]
    assert "got an empty batch" in errors["empty"] and "num_samples must be >= 1" in errors["no_samples"]

    # The served graph computes what the trained networks compute (up to rounding to uint8).
    trainer = train_translator.build_dmit(cfg)
    trainer.load_weights(paths["weights"])
    signed = images.astype(np.float32) / 127.5 - 1.0
    labels = np.stack([data.domain_label("popular", "color"), data.domain_label("unpopular", "edge")])
    expected = np.clip(np.round((trainer.translate(signed[:2], signed[2:4], labels).numpy() + 1.0) * 127.5), 0, 255)
    assert np.abs(translated - expected).max() <= 1
    expected = np.clip(np.round((trainer.sample(signed[:2], labels, seed=3, num_samples=3).numpy() + 1.0) * 127.5),
                       0, 255)
    assert np.abs(sampled - expected).max() <= 1
