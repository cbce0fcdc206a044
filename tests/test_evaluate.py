"""The evaluate stage end to end on hand-made inputs whose every figure can be worked out by hand.

Stand-ins with the exact signatures of docs/savedmodels.md replace the trained models:
- the ranker's `score` is the mean brightness / 255, so uplifts are plain arithmetic;
- the translator's `translate` returns the reference (so style translation gives the popular
  reference and content translation gives the input back), 10 grey levels darker under the
  unpopular/color label (so content translation with A's label is told from the popular-label one),
  and `sample` returns the content shifted by the seed, the same for every sample (so LPIPS
  diversity is exactly 0).
Test images are flat grey squares. The popular test images come in identical pairs, so the
even-position references and the odd-position FID set are the same images: style outputs equal
the FID set, and their FID is ~0. Two tiny pix2pix generators (none, clusters) fill the ablation.
"""

import json
import os
import re
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import config as config_lib
from pop_tf.beam import images as image_lib
from pop_tf import records, serving
from pop_tf.models import clusterer, pix2pix
from pop_tf.stages import evaluate

S = 32
DOMAINS = ["unpopular/edge", "unpopular/color", "popular/edge", "popular/color"]
UNPOPULAR = [40, 60, 80]  # grey levels of the unpopular test images
POPULAR = [180, 180, 200, 200, 220, 220]  # identical pairs: references (even) == FID set (odd)
UNDECIDED = [150]
TRAIN = [10 + 20 * i for i in range(12)]
N, M, BINS = 3, 3, 4
CHROMIUM = "/usr/bin/chromium"


class _FakeRanker(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def score(self, images):
        return {"score": tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3]) / 255.0}


class _FakeTranslator(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8), tf.TensorSpec(None, tf.uint8),
                                  tf.TensorSpec([None], tf.string)])
    def translate(self, content, reference, target_domain):
        reference = tf.ensure_shape(reference, [None, None, None, 3])
        images = tf.cast(tf.image.resize(reference, (S, S), method="nearest"), tf.int32)
        darker = 10 * tf.cast(tf.equal(target_domain, "unpopular/color"), tf.int32)
        return {"images": tf.cast(images - darker[:, None, None, None], tf.uint8)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8), tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32)])
    def sample(self, content, target_domain, seed, num_samples):
        content = tf.ensure_shape(content, [None, None, None, 3])
        base = tf.cast(tf.image.resize(content, (S, S), method="nearest"), tf.int32) + tf.cast(seed, tf.int32)
        images = tf.tile(base[:, None], tf.stack([1, num_samples, 1, 1, 1]))
        return {"images": tf.cast(tf.clip_by_value(images, 0, 255), tf.uint8)}

    @tf.function(input_signature=[])
    def domains(self):
        return {"names": tf.constant(DOMAINS)}


def _post(post_id, level, split, index):
    image = np.full((S, S, 3), level, np.uint8)
    edge = np.full((S, S), 255, np.uint8)
    edge[4:28, 4 + index % 8] = 0  # a vertical line whose position differs per post
    return {"post_id": post_id, "user_id": "u", "image_png": image_lib.encode_png(image),
            "edge_png": image_lib.encode_png(edge), "image_size": S, "image": f"images/{post_id}.png",
            "likes": 1, "followers": 10, "split": split, "phash": index, "pixel_digest": f"{index:064x}",
            "source_index": index, "caption": "#x", "content_type": "photo"}


def _write_score_output(folder):
    """A score stage output: scored records (score = brightness / 255) and stats.json."""
    os.makedirs(folder)
    test = [("unpopular", v) for v in UNPOPULAR] + [("popular", v) for v in POPULAR] + [("", v) for v in UNDECIDED]
    # Interleaved in the file, as a real shard would be; the stage must filter by domain.
    test = [test[i] for i in (0, 3, 4, 1, 5, 6, 2, 7, 8, 9)]
    train = [("popular" if v > 120 else "unpopular", v) for v in TRAIN]
    truth = []
    for split, posts in (("train", train), ("test", test)):
        path = os.path.join(folder, f"{split}-00000-of-00001.tfrecord.gz")
        with tf.io.TFRecordWriter(path, options="GZIP") as writer:
            for i, (domain, level) in enumerate(posts):
                post_id = f"{split}-{i}"
                serialized = records.encode_post(_post(post_id, level, split, i))
                writer.write(records.add_score(serialized, level / 255.0, domain))
                truth.append({"post_id": post_id, "intrinsic": level / 255.0})
    counts = {split: {"popular": sum(d == "popular" for d, _ in posts),
                      "unpopular": sum(d == "unpopular" for d, _ in posts),
                      "undecided": sum(d == "" for d, _ in posts)}
              for split, posts in (("train", train), ("test", test))}
    with open(os.path.join(folder, "stats.json"), "w") as f:
        json.dump({"image_size": S, "counts": counts, "thresholds": {}}, f)
    with open(os.path.join(os.path.dirname(folder), "truth.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in truth)


def _save_module(module, path, kind, signatures):
    tf.saved_model.save(module, path, signatures={name: getattr(module, name) for name in signatures})
    serving.write_model_card(path, kind, {"image_size": S}, "")


def _cluster_folder(folder, shares):
    """A cluster output folder holding only what the evaluator reads: clusters.npz (K = len(shares))."""
    os.makedirs(folder)
    k, d = len(shares), 3
    stats = clusterer.ClusterStats(
        centers=np.zeros([k, d]), means=np.zeros([k, d]), covariances=np.stack([np.eye(d)] * k),
        inverse_covariances=np.stack([np.eye(d)] * k), masks=np.ones([k, d], bool), sizes=np.asarray(shares) * 100,
        shares=np.asarray(shares, np.float64), feature_variance=np.ones([d]), condition_numbers=np.ones([k]),
        covariance_epsilon=1e-3, ridge=1e-3, seed=0, inertia=0.0)
    stats.save(os.path.join(folder, "clusters.npz"))


def _pix2pix_folder(folder, diversity, clusters="", num_clusters=1, seed=0):
    """A train_translator pix2pix output: generator.weights.h5 and config.json as the stage writes them."""
    os.makedirs(folder)
    keras.utils.set_random_seed(seed)
    cfg = config_lib.TranslatorConfig(model="pix2pix", diversity=diversity, image_size=S, base_filters=8,
                                      noise_dim=8, clusters=clusters, output=folder)
    generator = pix2pix.UNetGenerator(S, base_filters=8, num_clusters=num_clusters, noise_dim=8,
                                      up_type=cfg.up_type, spectral_normalization=cfg.generator_spectral_norm)
    generator.save_weights(os.path.join(folder, "generator.weights.h5"))
    config_lib.write_resolved(cfg, folder)
    return generator


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_inputs")
    _write_score_output(str(root / "score"))
    _save_module(_FakeRanker(), str(root / "ranker"), "ranker", ["score"])
    _save_module(_FakeTranslator(), str(root / "translator"), "translator", ["translate", "sample", "domains"])
    _cluster_folder(str(root / "cluster"), [0.25, 0.75])
    _pix2pix_folder(str(root / "p2p_none"), "none")
    _pix2pix_folder(str(root / "p2p_clusters"), "clusters", clusters=str(root / "cluster"), num_clusters=2, seed=1)
    return root


def _cfg(root, **changes):
    cfg = config_lib.resolve(None, [
        "evaluate.inception_weights=none", "evaluate.lpips_weights=none", f"evaluate.num_inputs={N}",
        f"evaluate.samples_per_input={M}", f"evaluate.ndb_bins={BINS}", "evaluate.ndb_image_size=8",
        "evaluate.num_grid_pairs=2", "evaluate.uplift_threshold=0.75", "evaluate.batch_size=4"]).evaluate
    cfg.input, cfg.ranker, cfg.translator = str(root / "score"), str(root / "ranker"), str(root / "translator")
    cfg.pix2pix_variants = [str(root / "p2p_none"), str(root / "p2p_clusters")]
    cfg.truth, cfg.output = str(root / "truth.jsonl"), str(root / "work" / "evaluate")
    for key, value in changes.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="module")
def evaluated(inputs):
    paths = evaluate.run(_cfg(inputs))
    with open(paths["metrics"]) as f:
        return paths, json.load(f)


def test_uplift_matches_the_hand_computation(evaluated):
    _, metrics = evaluated
    uplift = metrics["translator"]["uplift"]
    before = np.asarray(UNPOPULAR) / 255.0
    references = np.asarray(POPULAR[0::2]) / 255.0  # the even-position popular images, in file order
    style, content = uplift["style"], uplift["content"]
    assert style["count"] == content["count"] == len(UNPOPULAR)
    np.testing.assert_allclose(style["mean_before"], before.mean(), atol=1e-6)
    np.testing.assert_allclose(style["mean_uplift"], (references - before).mean(), atol=1e-6)
    np.testing.assert_allclose(style["stderr"], (references - before).std(ddof=1) / np.sqrt(3), atol=1e-6)
    assert style["share_improved"] == 1.0 and style["share_above_1"] == 0.0
    np.testing.assert_allclose(style["share_above_threshold"], 2 / 3)  # 200/255 and 220/255 > 0.75 > 180/255
    # Content translation of the fake returns A itself: no uplift at all.
    assert content["mean_uplift"] == 0.0 and content["share_improved"] == 0.0
    assert [row["mode"] for row in uplift["table"]] == ["style", "content", "content_a_label"]


def test_content_translation_is_also_measured_with_as_label_as_the_paper(evaluated):
    """Paper 1's B → A row (DMIT's s2w_enc) carries A's label: translate(B, A, "unpopular/color")."""
    paths, metrics = evaluated
    translator = metrics["translator"]
    paper = translator["uplift"]["content_a_label"]
    # The fake darkens by 10 grey levels only under A's label: A − 10 against A.
    assert paper["count"] == len(UNPOPULAR) and paper["share_improved"] == 0.0
    np.testing.assert_allclose(paper["mean_uplift"], -10 / 255, atol=1e-6)
    assert translator["uplift"]["content"]["mean_uplift"] == 0.0  # the popular-label figure keeps its key
    assert translator["fid"]["content_a_label"] > 0 and translator["fid"]["content"] > 0
    assert "unpopular/color" in translator["modes"]["content_a_label"]["protocol"]
    assert "popular/color" in translator["modes"]["content"]["protocol"]
    text = open(paths["report"], encoding="utf-8").read()
    assert "content B→A, A&#x27;s label (paper 1)" in text and "content, popular label" in text
    tags = set()
    for event_file in tf.io.gfile.glob(os.path.join(paths["logs"], "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(v.tag for v in event.summary.value)
    assert {"translator/uplift_content_a_label/mean_uplift", "translator/fid_like/content_a_label"} <= tags


def test_run_summaries_name_both_content_protocols(evaluated, caplog):
    from pop_tf import pipeline

    paths, metrics = evaluated
    caplog.clear()
    evaluate._log_summary(metrics, paths["report"])
    line = caplog.messages[0]
    assert "content, popular label uplift +0.000" in line
    assert f"content B→A, A's label (paper 1) uplift {-10 / 255:+.3f}" in line
    closing = pipeline.summary({"evaluate": {"metrics": paths["metrics"], "report": paths["report"]}})
    assert "content (popular label) translation unpopular → popular" in closing
    assert f"content B→A (A's label, paper 1) translation unpopular → popular, pop_tf's ranker: mean score uplift " \
        f"{-10 / 255:+.3f}" in closing


def test_fid_is_against_the_real_target_domain_and_zero_for_identical_sets(evaluated):
    _, metrics = evaluated
    fid = metrics["translator"]["fid"]
    assert fid["metric"] == "fid_like" and fid["real_images"] == 3 and fid["reference_overlap"] is False
    # Style outputs are the references, identical to the odd-position FID set; content outputs are
    # the unpopular inputs, far from the popular images.
    assert fid["style"] == pytest.approx(0.0, abs=1e-9)
    assert fid["content"] > 1e3 * max(fid["style"], 1e-12) and fid["colour_to_colour"] > 0


def test_lpips_diversity_is_zero_for_identical_samples_and_table2_has_both_tasks(evaluated):
    _, metrics = evaluated
    diversity = metrics["translator"]["lpips_diversity"]
    assert diversity["metric"] == "lpips_like"
    for task in ("colour_to_colour", "edge_to_colour"):
        assert diversity[task]["mean"] == 0.0 and diversity[task]["num_pairs"] == N * M * (M - 1) // 2
        assert diversity[task]["num_inputs"] == N and diversity[task]["outputs_per_input"] == M
    # One pair of distinct real popular images (180 vs 200; the FID set holds three): no standard error.
    real = diversity["real_pairs"]
    assert real["num_pairs"] == 1 and real["mean"] > 0 and real["stderr"] is None
    assert [row["task"] for row in metrics["translator"]["table2"]] == ["colour → colour", "edge → colour"]


def test_pix2pix_ablation_rows_and_settings(evaluated):
    _, metrics = evaluated
    table = metrics["pix2pix"]["table"]
    assert [row["variant"] for row in table] == ["none (pix2pix-like)", "clusters (Suzuki et al.)"]
    variants = metrics["pix2pix"]["variants"]
    assert [v["num_clusters"] for v in variants] == [1, 2]
    assert metrics["pix2pix"]["fid_real_images"] == 10 and metrics["pix2pix"]["ndb_train_images"] == len(TRAIN)
    for row in variants:
        assert row["generated_images"] == 10 and 0 <= row["ndb"] <= BINS
        assert 0.0 <= row["jsd"] <= np.log(2) and row["fid"] >= 0 and row["lpips"] >= 0
        assert row["lpips_pairs"] == N * M * (M - 1) // 2
        assert len(row["ndb_details"]["train_proportions"]) == BINS
    settings = metrics["settings"]
    assert settings["fid"]["metric"] == "fid_like" and settings["lpips"]["metric"] == "lpips_like"
    assert settings["ndb"]["bins"] == BINS and settings["diversity"]["samples_per_input"] == M
    assert metrics["ranker"]["truth_images"] == 10 and metrics["ranker"]["kendall_tau"] == pytest.approx(1.0)


def test_figures_config_and_tensorboard_logs(evaluated, inputs):
    paths, _ = evaluated
    names = sorted(os.path.basename(p) for p in paths["figures"])
    assert names == ["pix2pix_0_none_grid.png", "pix2pix_0_none_ndb.png", "pix2pix_1_clusters_grid.png",
                     "pix2pix_1_clusters_ndb.png", "translator_grid.png", "translator_samples_colour.png",
                     "translator_samples_edge.png", "translator_scores.png"]
    with Image.open(os.path.join(os.path.dirname(paths["metrics"]), "translator_grid.png")) as grid:
        assert grid.size == (12 * S, 2 * S + 2)  # two pairs: A, B and the paper's 10-image row, 2 px apart
    with Image.open(os.path.join(os.path.dirname(paths["metrics"]), "pix2pix_0_none_grid.png")) as grid:
        assert grid.size == ((2 + M) * S, N * S + (N - 1) * 2)  # edge | real | M samples
    assert json.load(open(paths["config"]))["ndb_bins"] == BINS
    assert paths["logs"] == str(inputs / "work" / "logs" / "evaluate")
    tags = set()
    for event_file in tf.io.gfile.glob(os.path.join(paths["logs"], "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            tags.update(v.tag for v in event.summary.value)
    assert {"translator/uplift_style/mean_uplift", "translator/fid_like/style", "translator/grid",
            "pix2pix/pix2pix_1_clusters/ndb"} <= tags


def test_report_is_self_contained_with_tables_and_images(evaluated):
    paths, _ = evaluated
    text = open(paths["report"], encoding="utf-8").read()
    # Nothing outside the file: every src/href is a data URI, no CSS url(), no scripts.
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text)
    assert references and all(r.startswith("data:image/png;base64,") for r in references)
    assert "url(" not in text and "<script" not in text and "<link" not in text
    assert text.count("<img ") == 8  # 4 translator figures + (grid, NDB plot) per pix2pix variant
    # Grids of 32-pixel tiles are shown enlarged (3x: 96-pixel tiles) but fit a page: the 12-tile
    # translation grid at 3x would be 1152 px wide, so it is shown at 2x.
    assert f'style="width: {(2 + M) * S * 3}px"' in text and f'style="width: {12 * S * 2}px"' in text
    for caption in ("Popularity uplift: style vs content translation", "Table 2 layout (paper 1)",
                    "Table 1 layout (paper 2)"):
        assert caption in text
    assert text.count("<table>") == 4  # ranker truth, uplift, Table 2, Table 1
    assert "FID-like" in text and "LPIPS-like" in text and "weights=none" in text


def test_report_renders_in_headless_chromium(evaluated, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("headless render check needs Chromium: apt-get install chromium")
    paths, _ = evaluated
    # A copy with a probe script that records, after load, how many images decoded and tables exist.
    probe = ("<script>window.addEventListener('load', () => { const ok = [...document.images].filter("
             "i => i.complete && i.naturalWidth > 0).length; document.body.setAttribute('data-loaded', ok); "
             "document.body.setAttribute('data-tables', document.querySelectorAll('table').length); });</script>")
    page = tmp_path / "report.html"
    page.write_text(open(paths["report"], encoding="utf-8").read().replace("</body>", probe + "</body>"),
                    encoding="utf-8")
    result = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", result.stdout).group(1)
    assert 'data-loaded="8"' in body and 'data-tables="4"' in body
    assert "Table 1 layout (paper 2)" in result.stdout
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def test_variant_samples_like_its_trainer(inputs):
    """The evaluator's test-time sampling equals ClusterPix2Pix.sample (cluster draws by share, z)."""
    variant = evaluate.load_pix2pix_variant(str(inputs / "p2p_clusters"))
    np.testing.assert_allclose(variant.shares, [0.25, 0.75])
    trainer = pix2pix.ClusterPix2Pix(
        variant.generator, pix2pix.MultiScaleDiscriminator(num_scales=1, base_filters=4, num_layers=2,
                                                           num_clusters=2),
        diversity="none", cluster_shares=[1.0, 3.0])
    edges = np.random.default_rng(0).uniform(-1, 1, (2, S, S, 3)).astype(np.float32)
    ours, our_ids = variant.sample(edges, seed=7, num_samples=3)
    theirs, their_ids = trainer.sample(edges, seed=7, num_samples=3)
    np.testing.assert_array_equal(our_ids.numpy(), their_ids.numpy())
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6)


def test_refusals_name_the_option(inputs, tmp_path):
    with pytest.raises(config_lib.ConfigError, match="evaluate.translator"):
        evaluate.run(_cfg(inputs, translator="", pix2pix_variants=[]))
    with pytest.raises(config_lib.ConfigError, match="evaluate.input"):
        evaluate.run(_cfg(inputs, input=""))
    with pytest.raises(evaluate.EvaluateError, match="not a score output"):
        evaluate.run(_cfg(inputs, input=str(tmp_path)))
    dmit = tmp_path / "dmit"
    dmit.mkdir()
    config_lib.write_resolved(config_lib.TranslatorConfig(model="dmit"), str(dmit))
    with pytest.raises(evaluate.EvaluateError, match="evaluate.translator as its saved_model"):
        evaluate.load_pix2pix_variant(str(dmit))
    moved = tmp_path / "moved"
    shutil.copytree(inputs / "p2p_clusters", moved)
    with open(moved / "config.json") as f:
        trained = json.load(f)
    trained["clusters"] = str(tmp_path / "gone")
    with open(moved / "config.json", "w") as f:
        json.dump(trained, f)
    with pytest.raises(evaluate.EvaluateError, match="set evaluate.clusters"):
        evaluate.load_pix2pix_variant(str(moved))
    assert len(evaluate.load_pix2pix_variant(str(moved), clusters=str(inputs / "cluster")).shares) == 2


def test_cli_resolves_workdir_defaults(tmp_path, capsys):
    workdir = tmp_path / "w"
    (workdir / "train_translator" / "saved_model").mkdir(parents=True)
    (workdir / "synth").mkdir()
    (workdir / "synth" / "truth.jsonl").write_text("")
    assert evaluate.main(["--workdir", str(workdir), "--set", "num_inputs=7", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["input"] == str(workdir / "score") and cfg["ranker"] == str(workdir / "train_ranker" / "saved_model")
    assert cfg["translator"] == str(workdir / "train_translator" / "saved_model") and cfg["pix2pix_variants"] == []
    assert cfg["truth"] == str(workdir / "synth" / "truth.jsonl") and cfg["num_inputs"] == 7
    assert cfg["output"] == str(workdir / "evaluate")
    # A missing score folder is one sentence on stderr, not a traceback.
    assert evaluate.main(["--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pop-tf evaluate: error:") and "not a score output folder" in err
    assert evaluate.main(["--workdir", str(workdir), "--set", "samples_per_input=1"]) == 2
    assert "evaluate.samples_per_input" in capsys.readouterr().err


class _RecordingFeatures:
    """Stands in for InceptionV3: mean and std per channel, and a record of every image it saw."""

    metric_name, weights, standard, network = "fid_like", "none", False, "keras"

    def __init__(self):
        self.seen = []

    def __call__(self, images, batch_size=32):
        x = np.asarray(images, np.float64)
        self.seen.append(x)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def test_fid_reference_train_compares_the_pix2pix_table_with_training_images(inputs, tmp_path, monkeypatch):
    from pop_tf.metrics import fid

    extractor = _RecordingFeatures()
    monkeypatch.setattr(fid, "InceptionFeatures", lambda *a, **k: extractor)
    cfg = _cfg(inputs, translator="", pix2pix_variants=[str(inputs / "p2p_none")], fid_reference="train",
               output=str(tmp_path / "evaluate"))
    paths = evaluate.run(cfg)
    metrics = json.load(open(paths["metrics"]))
    pix2pix_metrics = metrics["pix2pix"]
    assert pix2pix_metrics["fid_reference"] == {"split": "train", "images": "real colour training images",
                                                "count": len(TRAIN)}
    assert pix2pix_metrics["fid_real_images"] == len(TRAIN) and pix2pix_metrics["ndb_reference"]["split"] == "train"
    assert metrics["settings"]["fid_reference"] == {"translator": "test", "pix2pix": "train"}
    # The reference is exactly the flat grey training images, in file order; then the 10 samples.
    features = np.concatenate([np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)
                               for x in extractor.seen])
    reference, generated = features[:len(TRAIN)], features[len(TRAIN):]
    np.testing.assert_array_equal(reference[:, 0], TRAIN)
    np.testing.assert_array_equal(reference[:, 3:], 0)
    assert len(generated) == 10 and generated[:, 3:].min() > 0  # generated samples are not flat
    assert pix2pix_metrics["variants"][0]["fid"] == pytest.approx(fid.fid_from_activations(reference, generated))
    text = open(paths["report"], encoding="utf-8").read()
    assert "FID-like reference: real colour training images (evaluate.fid_reference=train)" in text


def test_fid_reference_defaults_to_test_and_each_table_names_its_reference(evaluated):
    paths, metrics = evaluated
    assert metrics["pix2pix"]["fid_reference"]["split"] == "test" and metrics["pix2pix"]["fid_reference"]["count"] == 10
    assert metrics["translator"]["fid"]["reference"]["split"] == "test"
    assert metrics["settings"]["fid_reference"] == {"translator": "test", "pix2pix": "test"}
    text = open(paths["report"], encoding="utf-8").read()
    assert "FID-like reference: real colour test images (evaluate.fid_reference=test)" in text
    assert "FID-like reference: real popular colour test images" in text


def test_an_unknown_fid_reference_is_an_error_naming_the_option(inputs):
    with pytest.raises(config_lib.ConfigError, match=r"evaluate\.fid_reference.*'train', 'test'"):
        config_lib.resolve(None, ["evaluate.fid_reference=validation"])
    # A config built in code skips resolve: the stage checks before reading anything.
    with pytest.raises(config_lib.ConfigError, match=r"evaluate\.fid_reference.*'validation'.*'train', 'test'"):
        evaluate.run(_cfg(inputs, fid_reference="validation"))
