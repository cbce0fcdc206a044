"""The clusterer: features, k-means statistics (n−1 rule, regularised Σ), the stage and its SavedModel.

Everything runs with weights="none" (no download) and small feature sizes: at 64² the feature
is (64/32)² = 4-d; the paper's 49-d shape is checked once at 224² on a batch of two.
"""

import csv
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import cli
from pop_tf import config as config_lib
from pop_tf import records, serving, synth
from pop_tf import train as train_entry
from pop_tf.models import backbones
from pop_tf.models.clusterer import (ClusterError, ClusterFeatures, ClusterStats, assign, feature_dims,
                                     fit_clusters, mahalanobis)
from pop_tf.stages import cluster as stage
from pop_tf.stages import ingest, staging

SIZE = 64  # feature size of every test but the 49-d one


# ----------------------------------------------------------------------------------- features


def test_feature_is_49_dims_at_224_for_any_image_size():
    model = ClusterFeatures(weights="none", feature_size=224)
    images = np.random.default_rng(0).integers(0, 256, (2, 50, 80, 3), dtype=np.uint8)
    features = model(images).numpy()
    assert model.dims == feature_dims(224) == 49
    assert features.shape == (2, 49) and features.dtype == np.float32
    assert np.all(np.isfinite(features)) and not np.allclose(features[0], features[1])


def test_feature_is_the_channel_mean_of_the_feature_map(tmp_path):
    """A local TF-Hub module (hub: weights): the feature is the channel mean, flattened row-major."""

    class Pool(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):  # [N, S, S, 3] in [0, 1] → [N, S/32, S/32, 3]
            return tf.nn.avg_pool2d(images, 32, 32, "VALID") * tf.constant([1.0, 2.0, 3.0])

    tf.saved_model.save(Pool(), str(tmp_path / "pool"))
    model = ClusterFeatures(weights=f"hub:{tmp_path / 'pool'}", feature_size=SIZE)
    images = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    pooled = images.reshape(3, 2, 32, 2, 32, 3).mean(axis=(2, 4)) / 255.0 * [1.0, 2.0, 3.0]
    expected = pooled.mean(axis=-1).reshape(3, 4)
    np.testing.assert_allclose(model(images).numpy(), expected, rtol=1e-5)

    class Vector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, images):
            return tf.reduce_mean(images, axis=[1, 2])

    tf.saved_model.save(Vector(), str(tmp_path / "vector"))
    with pytest.raises(backbones.WeightsError, match=r"feature map \[N, h, w, C\]"):
        ClusterFeatures(weights=f"hub:{tmp_path / 'vector'}", feature_size=SIZE)


# --------------------------------------------------------------------------------- statistics


def _blobs(seed=0, tiny=None, d=6):
    """Three clusters of 40 around far-apart centres, plus `tiny` (an array of points) if given."""
    rng = np.random.default_rng(seed)
    scales = np.array([1.0, 3.0, 0.5, 2.0, 1.5, 0.2][:d])
    parts = [rng.normal(0, 1, (40, d)) * scales + centre
             for centre in (np.zeros(d), np.full(d, 30.0), np.r_[np.full(d // 2, -30.0), np.full(d - d // 2, 30.0)])]
    if tiny is not None:
        parts.append(tiny)
    return np.concatenate(parts).astype(np.float32)


def test_kmeans_is_reproducible_for_a_seed_and_depends_on_it():
    features = _blobs()
    a, b = fit_clusters(features, 3, seed=7), fit_clusters(features, 3, seed=7)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(assign(features, a), assign(features, b))
    assert a.sizes.tolist() == [40, 40, 40]
    # Uniform noise has many k-means optima: another seed finds another one.
    noise = np.random.default_rng(3).uniform(size=(300, 4))
    base = fit_clusters(noise, 8, seed=0)
    others = [fit_clusters(noise, 8, seed=s) for s in (1, 2, 3)]
    assert any(not np.allclose(base.centers, other.centers) for other in others)
    assert all(np.array_equal(fit_clusters(noise, 8, seed=0).centers, base.centers) for _ in range(2))


def test_clusters_are_numbered_largest_first():
    features = np.concatenate([_blobs()[:40], _blobs()[40:70], _blobs()[80:90]])  # 40, 30, 10
    stats = fit_clusters(features, 3, seed=0)
    assert stats.sizes.tolist() == [40, 30, 10]
    np.testing.assert_allclose(stats.shares, [40 / 80, 30 / 80, 10 / 80])
    assert stats.shares.sum() == pytest.approx(1.0)


def test_every_cluster_keeps_the_n_minus_1_features_of_largest_variance_in_the_smallest_cluster():
    d = 6
    tiny = np.random.default_rng(5).normal(0, 1, (4, d)) * [0.1, 2.0, 0.5, 3.0, 1.0, 0.2] + 200.0  # n = 4 ≤ d
    features = _blobs(tiny=tiny, d=d)
    stats = fit_clusters(features, 4, seed=0, covariance_epsilon=1e-3)
    assert stats.sizes.tolist() == [40, 40, 40, 4]
    small = 3
    # The paper's rule: n − 1 = 3 features, ranked by the SMALLEST cluster's own variances, for all.
    top = np.sort(np.argsort(-tiny.var(axis=0))[:3])
    assert top.tolist() == [1, 3, 4]  # not the training set's top 3, [0, 1, 2] here
    assert np.sort(np.argsort(-features.astype(np.float64).var(axis=0))[:3]).tolist() == [0, 1, 2]
    assert all(np.flatnonzero(mask).tolist() == top.tolist() for mask in stats.masks)
    assert stats.selected_from == small and stats.reduced.tolist() == [0, 1, 2, 3]
    assert stats.summary()["kept_features"] == [3, 3, 3, 3]
    assert stats.summary()["selected_features"] == [1, 3, 4] and stats.summary()["selected_from"] == small
    for i in range(4):
        mask = stats.masks[i]
        inverse, sigma = stats.inverse_covariances[i], stats.covariances[i]
        assert np.all(np.isfinite(inverse))
        assert not inverse[~mask].any() and not inverse[:, ~mask].any()  # zero outside the mask
        assert not sigma[~mask].any()
        np.testing.assert_allclose(inverse[np.ix_(mask, mask)] @ sigma[np.ix_(mask, mask)], np.eye(mask.sum()),
                                   atol=1e-8)
    # the ridge bounds the condition number: λmax(Σ)/ridge at most
    bound = np.array([np.linalg.eigvalsh(s).max() for s in stats.covariances]) / stats.ridge
    assert np.all(stats.condition_numbers <= bound * (1 + 1e-9)) and np.all(stats.condition_numbers < 1e7)
    assert stats.ridge == pytest.approx(1e-3 * features.astype(np.float64).var(axis=0).mean())
    # Each cluster's member covariance on the shared features, plus the ridge.
    labels = assign(features, stats)
    for i in range(4):
        members = features[labels == i].astype(np.float64)
        expected = np.cov(members[:, top], rowvar=False) + stats.ridge * np.eye(3)
        np.testing.assert_allclose(stats.covariances[i][np.ix_(top, top)], expected, rtol=1e-9)
        np.testing.assert_allclose(stats.means[i], members.mean(axis=0), rtol=1e-9)


def test_clusters_larger_than_the_dimension_keep_every_feature():
    stats = fit_clusters(_blobs(), 3, seed=0)
    assert stats.masks.all() and stats.selected_from == -1 and stats.reduced.size == 0


def test_degenerate_clusters_stay_invertible():
    d = 6
    # three identical points (zero spread) and one single point (n = 1)
    features = _blobs(tiny=np.concatenate([np.full((3, d), 200.0), np.full((1, d), -300.0)]), d=d)
    stats = fit_clusters(features, 5, seed=0)
    assert stats.sizes.tolist() == [40, 40, 40, 3, 1]
    identical, single = 3, 4
    # n comes from the smallest cluster with n ≥ 2 (the singleton would leave 0 features): 3 − 1 = 2.
    # Its variances are all 0, so the training-set variance breaks the tie.
    top = np.sort(np.argsort(-features.astype(np.float64).var(axis=0), kind="stable")[:2])
    assert stats.selected_from == identical
    assert all(np.flatnonzero(mask).tolist() == top.tolist() for mask in stats.masks)
    np.testing.assert_allclose(stats.covariances[identical][np.ix_(top, top)], stats.ridge * np.eye(2))
    assert stats.condition_numbers[identical] == pytest.approx(1.0)
    # n = 1: the shared features, with the training-set variance as the covariance
    assert stats.fallback.tolist() == [single] and stats.summary()["fallback_clusters"] == [single]
    variance = features.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(stats.covariances[single][np.ix_(top, top)],
                               np.diag(variance[top]) + stats.ridge * np.eye(2))
    assert np.all(np.isfinite(stats.inverse_covariances)) and np.all(np.isfinite(stats.condition_numbers))


def test_masked_mahalanobis_is_one_einsum_over_the_mask():
    features = _blobs(tiny=np.random.default_rng(2).normal(0, 1, (4, 6)) + 200.0)
    stats = fit_clusters(features, 4, seed=0)
    points = features[[0, 50, 121]].astype(np.float64)
    clusters = np.array([0, 1, 3])
    expected = []
    for x, i in zip(points, clusters):
        keep = np.flatnonzero(stats.masks[i])
        diff = x[keep] - stats.means[i][keep]
        sigma = stats.covariances[i][np.ix_(keep, keep)]
        expected.append(diff @ np.linalg.solve(sigma, diff))
    np.testing.assert_allclose(mahalanobis(points, stats, clusters), expected, rtol=1e-8)


def test_assign_is_the_nearest_centre():
    rng = np.random.default_rng(4)
    stats = fit_clusters(rng.normal(size=(100, 5)), 6, seed=0)
    queries = rng.normal(size=(200, 5))
    brute = np.argmin(((queries[:, None, :] - stats.centers[None]) ** 2).sum(axis=-1), axis=1)
    labels = assign(queries, stats)
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, brute)
    with pytest.raises(ClusterError, match="3 dims but the clusters were fitted on 5"):
        assign(queries[:, :3], stats)


def test_statistics_round_trip_through_npz_without_pickle(tmp_path):
    features = _blobs(tiny=np.full((1, 6), 99.0))
    stats = fit_clusters(features, 4, seed=3)
    path = stats.save(str(tmp_path / "clusters.npz"))
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
    loaded = ClusterStats.load(path)
    for name in ("centers", "means", "covariances", "inverse_covariances", "masks", "sizes", "shares",
                 "feature_variance", "condition_numbers"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(stats, name))
    assert loaded.masks.dtype == bool and loaded.seed == 3 and loaded.ridge == stats.ridge
    assert loaded.selected_from == stats.selected_from
    assert loaded.summary() == stats.summary()
    json.dumps(loaded.summary())  # JSON-able
    # an object array (which would need pickle) is refused with a sentence
    np.savez(tmp_path / "bad.npz", centers=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ClusterError, match="cannot read cluster statistics"):
        ClusterStats.load(str(tmp_path / "bad.npz"))
    # A format-1 file (per-cluster n−1 masks) is refused with the way out.
    with np.load(path, allow_pickle=False) as data:
        old = {name: data[name] for name in data.files if name != "selected_from"}
    old["format_version"] = np.asarray(1)
    np.savez(tmp_path / "old.npz", **old)
    with pytest.raises(ClusterError, match=r"format 1.*per cluster.*pop_tf\.train clusterer"):
        ClusterStats.load(str(tmp_path / "old.npz"))


def test_more_clusters_than_images_names_the_option():
    with pytest.raises(ClusterError, match=r"cluster\.num_clusters=6 is more than the 5 training images"):
        fit_clusters(np.random.default_rng(0).normal(size=(5, 4)), 6)
    with pytest.raises(ClusterError, match=r"2 distinct feature vectors.*cluster\.num_clusters=3"):
        fit_clusters(np.repeat(np.eye(2, 4), 5, axis=0), 3)
    with pytest.raises(ClusterError, match="NaN"):
        fit_clusters(np.full((5, 4), np.nan), 2)


# ---------------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def run_stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    synth.run(config_lib.SynthConfig(output=str(root / "dataset"), num_posts=60, image_size=32))
    ingest.run(config_lib.IngestConfig(input=str(root / "dataset"), output=str(root / "ingest"), image_size=32,
                                       test_ratio=0.2))
    posts = {}
    for split in ("train", "test"):
        for serialized in records.iter_serialized(str(root / "ingest" / f"{split}-*.tfrecord.gz")):
            post = records.decode_post(serialized)
            posts[post["post_id"]] = post
    cfg = config_lib.ClusterConfig(input=str(root / "ingest"), output=str(root / "out"), weights="none",
                                   feature_size=SIZE, num_clusters=3, batch_size=8, examples_per_cluster=4)
    return cfg, stage.run(cfg), posts


def _assignments(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stage_writes_every_output_once(run_stage):
    cfg, paths, posts = run_stage
    for key in ("features", "assignments", "clusters", "clusters_json", "contact_sheet", "saved_model", "config"):
        assert os.path.exists(paths[key]), key
    # no staging left; the record of what the stage installed is all
    assert [n for n in os.listdir(paths["output"]) if n.startswith(".")] == [staging.RECORD]
    assert set(staging.recorded_outputs(paths["output"])) == set(stage.OWNED_FILES)
    rows = _assignments(paths["assignments"])
    assert sorted(r["post_id"] for r in rows) == sorted(posts)  # every post exactly once
    assert all(r["split"] == posts[r["post_id"]]["split"] for r in rows)
    assert {r["split"] for r in rows} == {"train", "test"}
    assert all(0 <= int(r["cluster"]) < 3 for r in rows)

    with open(paths["clusters_json"]) as f:
        summary = json.load(f)
    stats = ClusterStats.load(paths["clusters"])
    train_labels = [int(r["cluster"]) for r in rows if r["split"] == "train"]
    assert np.bincount(train_labels, minlength=3).tolist() == summary["summary"]["sizes"] == stats.sizes.tolist()
    assert sum(summary["summary"]["shares"]) == pytest.approx(1.0)
    assert summary["config"]["num_clusters"] == 3 and summary["summary"]["feature_dims"] == 4

    with np.load(paths["features"], allow_pickle=False) as data:
        assert data["features"].shape == (len(rows), 4) and data["features"].dtype == np.float32
        assert data["post_id"].tolist() == [r["post_id"] for r in rows]
        np.testing.assert_array_equal(assign(data["features"], stats), [int(r["cluster"]) for r in rows])

    with Image.open(paths["contact_sheet"]) as sheet:
        # one row per cluster: 32-px tiles (the ingested size) plus the gap
        assert sheet.height == 3 * (32 + stage.SHEET_GAP)
        assert sheet.width == (cfg.examples_per_cluster + 1) * (32 + stage.SHEET_GAP)
    with open(paths["config"]) as f:
        assert json.load(f)["num_clusters"] == 3
    card = serving.read_model_card(paths["saved_model"], expected_kind="clusterer")
    assert card["data_fingerprint"] == summary["data_fingerprint"] and card["feature_dims"] == 4


def test_cli_defaults_to_the_workdir_and_reports_errors(tmp_path, capsys):
    assert train_entry.main(["clusterer", "--workdir", str(tmp_path), "--dry-run", "--set", "num_clusters=4"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["input"] == str(tmp_path / "ingest") and printed["output"] == str(tmp_path / "cluster")
    assert printed["num_clusters"] == 4
    assert cli.main(["cluster", "--input", str(tmp_path / "x"), "--output", str(tmp_path / "o"), "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["input"] == str(tmp_path / "x")

    assert stage.main(["clusterer", "--workdir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("python -m pop_tf.train clusterer: error: no training records") and "Traceback" not in err
    assert stage.main(["clusterer", "--workdir", str(tmp_path), "--set", "num_clusterz=3"]) == 2
    assert "cluster.num_clusterz" in capsys.readouterr().err


# ------------------------------------------------------------------------------ the SavedModel

_LOADER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf

    stage_dir, export_dir, inputs, out = sys.argv[1:5]
    result, errors = {}, {}
    stage_model = tf.saved_model.load(stage_dir)
    result["stage_features"] = stage_model.embed(np.load(inputs)["ingested"])["features"].numpy()
    result["stage_clusters"] = stage_model.assign(np.load(inputs)["ingested"])["cluster"].numpy()
    model = tf.saved_model.load(export_dir)
    for name in ("wide", "large"):
        images = np.load(inputs)[name]
        result[name + "_features"] = model.embed(images)["features"].numpy()
        result[name + "_clusters"] = model.assign(images)["cluster"].numpy()
        result[name + "_signature"] = model.signatures["embed"](images=tf.constant(images))["features"].numpy()
    cases = {"float32": tf.zeros([1, 8, 8, 3], tf.float32), "empty": tf.zeros([0, 8, 8, 3], tf.uint8),
             "two_channels": tf.zeros([1, 8, 8, 2], tf.uint8), "rank3": tf.zeros([8, 8, 3], tf.uint8)}
    for case, images in cases.items():
        for way, call in (("method", lambda x: model.assign(x)),
                          ("signature", lambda x: model.signatures["assign"](images=x))):
            try:
                call(images)
                errors[case + "/" + way] = None
            except Exception as e:
                errors[case + "/" + way] = type(e).__name__ + ": " + str(e)
    try:
        import tensorflow_hub as hub
        hub_model = hub.load(export_dir)  # kept referenced: its functions use its variables
        result["hub_features"] = hub_model.embed(np.load(inputs)["wide"])["features"].numpy()
    except ImportError:
        pass
    np.savez(out, **result)
    print(json.dumps({"signatures": sorted(model.signatures), "errors": errors,
                      "pop_tf_imported": "pop_tf" in sys.modules}))
""")


def test_saved_model_loads_without_pop_tf_and_matches(run_stage, tmp_path):
    _, paths, posts = run_stage
    rng = np.random.default_rng(9)
    model = ClusterFeatures(weights="none", feature_size=SIZE)
    train_images = rng.integers(0, 256, (20, 48, 40, 3), dtype=np.uint8)
    stats = fit_clusters(model(train_images).numpy(), 3, seed=0)
    export_dir = serving.export_clusterer(model, stats, str(tmp_path / "export"), {"num_clusters": 3}, "fp")

    ingested_ids = sorted(posts)[:6]
    ingested = np.stack([np.asarray(Image.open(io.BytesIO(posts[p]["image_png"])).convert("RGB"))
                         for p in ingested_ids])
    inputs = {"ingested": ingested, "wide": rng.integers(0, 256, (3, 24, 70, 3), dtype=np.uint8),
              "large": rng.integers(0, 256, (2, 150, 100, 3), dtype=np.uint8)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, "-c", _LOADER, paths["saved_model"], export_dir,
                           str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert not report["pop_tf_imported"]
    assert {"embed", "assign"} <= set(report["signatures"])
    out = np.load(tmp_path / "out.npz")

    def close(actual, expected):
        # Untrained EfficientNet features are tiny (~1e-7), so the 1e-4 tolerance is relative.
        np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # The stage's SavedModel reproduces the stage's own features and assignments.
    with np.load(paths["features"], allow_pickle=False) as data:
        index = {p: i for i, p in enumerate(data["post_id"].tolist())}
        close(out["stage_features"], data["features"][[index[p] for p in ingested_ids]])
    rows = {r["post_id"]: int(r["cluster"]) for r in _assignments(paths["assignments"])}
    assert out["stage_clusters"].tolist() == [rows[p] for p in ingested_ids]
    # Images of other sizes: fitted inside the graph exactly as in process.
    for name in ("wide", "large"):
        expected = model(inputs[name]).numpy()
        assert out[name + "_features"].shape == (len(inputs[name]), 4)
        close(out[name + "_features"], expected)
        close(out[name + "_signature"], expected)
        assert out[name + "_clusters"].dtype == np.int32
        np.testing.assert_array_equal(out[name + "_clusters"], assign(expected, stats))
    if "hub_features" in out.files:
        close(out["hub_features"], model(inputs["wide"]).numpy())

    errors = report["errors"]
    assert errors["empty/method"].startswith("InvalidArgumentError") and "got an empty batch" in errors["empty/method"]
    assert "N >= 1" in errors["empty/signature"]
    assert "got a different channel count" in errors["two_channels/method"]
    assert "[N, H, W, 3]" in errors["two_channels/signature"]
    assert "got a different rank" in errors["rank3/method"]
    # A wrong dtype never reaches the graph: the error names the expected uint8.
    assert "uint8" in errors["float32/method"] and "uint8" in errors["float32/signature"]
