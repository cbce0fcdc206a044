"""The attribute judge on pop_tf's synthetic data (pop_tf.metrics.attributes, pop_tf.stages.evaluate_attributes).

One small synthetic dataset (32 px) and one classifier trained on 80 % of it serve every test:
the classifier must learn, real held-out garments must be rated well and noise badly, the true
popularity must be synth's own function, the translation checks must match hand-worked cases,
and an evaluate run on real synthetic garments must write every figure into metrics.json.
"""

import json
import os
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import config as config_lib
from pop_tf import records, serving, synth
from pop_tf.beam import images as image_lib
from pop_tf.metrics import attributes as attr
from pop_tf.models import attribute_classifier
from pop_tf.stages import evaluate, evaluate_attributes
from pop_tf.truth import read_truth_rows

S = 32
NUM_POSTS = 400
# Below ~500 batches of 32 the outlier exposure has not taken hold (noise reads as a confident grey).
WIDTH, STEPS, BATCH = 16, 500, 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(root, post ids, uint8 images [N, 32, 32, 3], truth rows) of a small synthetic dataset."""
    root = tmp_path_factory.mktemp("attributes")
    paths = synth.run(config_lib.SynthConfig(output=str(root / "synth"), num_posts=NUM_POSTS, image_size=S,
                                             num_users=8, broken_share=0.0, num_corrupt=0))
    rows = read_truth_rows(paths["truth"])
    ids, images = [], []
    with open(paths["metadata"]) as f:
        for line in f:
            post = json.loads(line)
            with Image.open(os.path.join(paths["dataset"], post["image"])) as image:
                images.append(np.asarray(image.convert("RGB")))
            ids.append(post["post_id"])
    return root, ids, np.stack(images), rows


def _held_out(index: int) -> bool:
    return index % 5 == 0


@pytest.fixture(scope="module")
def evaluated(dataset, tmp_path_factory):
    """An evaluate run on the synthetic posts (see `_evaluate`): (work folder, metrics, artifact paths)."""
    root, ids, images, rows = dataset
    return _evaluate(root, ids, images, rows, tmp_path_factory)


@pytest.fixture(scope="module")
def trained(dataset, evaluated):
    """The reader the evaluate run trained on the 80 % of posts not held out, and both splits."""
    _, ids, images, rows = dataset
    work, metrics, _ = evaluated
    card = metrics["attribute_classifier"]["32px"]
    reader = attr.AttributeReader.load(str(work / "evaluate"), "attribute_classifier_32px", card["key"])
    train = [i for i in range(len(ids)) if not _held_out(i)]
    test = [i for i in range(len(ids)) if _held_out(i)]
    return reader, images[train], images[test], [rows[ids[i]] for i in test]


def test_classifier_learns_the_attributes_of_held_out_garments(trained):
    reader, _, test_images, test_rows = trained
    accuracy = attr.held_out_accuracy(reader.read(test_images), test_rows)
    # Chance: 1/8 shapes, 1/12 colours, 1/3 sleeves. 500 batches of 32 of 320 training images; with
    # the demo's 3,600 images and 845 batches of 64, shape reaches 0.98 and either colour 0.92.
    assert accuracy["shape"] > 0.55 and accuracy["color_either"] > 0.7 and accuracy["sleeve"] > 0.8
    assert accuracy["color_one_colour_garments"] > 0.8
    assert accuracy["color_either"] >= accuracy["color"] and accuracy["images"] == len(test_rows)
    assert accuracy["confident_colour_share"] > 0.7


def test_noise_is_rated_badly_and_real_garments_well(trained):
    reader, train_images, test_images, _ = trained
    rng = np.random.default_rng(0)
    real_train = reader.read(train_images).features
    real = reader.read(test_images)
    uniform = reader.read(rng.integers(0, 256, test_images.shape, dtype=np.uint8))
    speckled = reader.read(np.clip(test_images + rng.normal(0, 0.3 * 255, test_images.shape), 0, 255).astype(np.uint8))
    # Noise the classifier never saw in training (it saw Gaussian speckle): uniform ±0.45 per pixel.
    shaken = reader.read(np.clip(test_images + rng.uniform(-115, 115, test_images.shape), 0, 255).astype(np.uint8))
    good = attr.feature_figures(real_train, real.features)
    assert attr.confident_colour_share(real) > 0.7 and good["precision_synth"] > 0.6 and good["recall_synth"] > 0.6
    assert attr.verdict(attr.confident_colour_share(real), None, good["precision_synth"])["recognisable"]
    for readings in (uniform, speckled, shaken):
        bad = attr.feature_figures(real_train, readings.features)
        assert attr.confident_colour_share(readings) < 0.1
        assert bad["fid_synth"] > 10 * good["fid_synth"] and bad["kid_synth"] > 10 * max(good["kid_synth"], 0.01)
        assert bad["precision_synth"] < 0.1
        verdict = attr.verdict(attr.confident_colour_share(readings), None, bad["precision_synth"])
        assert not verdict["recognisable"] and "confident colour" in verdict["reasons"][0]


def test_true_popularity_is_synths_hidden_popularity(dataset):
    *_, rows = dataset
    for row in list(rows.values())[:50]:
        value = attr.true_popularity(row["shape"], row["sleeve"], row["color"], row["pattern"], scale=row["scale"])
        assert value == pytest.approx(row["intrinsic"], abs=1e-4)
    # By hand, at the mid scale: 1.3 + 0.3 + 0.2 + 0.1 and −1.3 + 0 − 0.25 − 0.1.
    assert attr.true_popularity("long_dress", "long", "red", "stripes") == pytest.approx(1.9)
    assert attr.true_popularity("shorts", "none", "yellow", "checks") == pytest.approx(-1.65)


def _one_hot(head, names):
    classes = attribute_classifier.HEADS[head]
    return np.eye(len(classes))[[classes.index(n) for n in names]]


def _readings(shapes, sleeves, colours, patterns, confidence=1.0):
    probs = {"shape": _one_hot("shape", shapes), "sleeve": _one_hot("sleeve", sleeves),
             "color": _one_hot("color", colours) * confidence, "pattern": _one_hot("pattern", patterns)}
    probs["color"] += (1 - confidence) / probs["color"].shape[1]
    return attr.Readings(probs=probs, features=np.random.default_rng(len(shapes)).normal(size=(len(shapes), 8)))


def test_translation_checks_and_true_uplift_by_hand():
    a = [{"shape": "shorts", "sleeve": "none", "color": "yellow", "secondary_color": "yellow", "pattern": "solid"},
         {"shape": "tshirt", "sleeve": "short", "color": "yellow", "secondary_color": "off_white", "pattern": "dots"}]
    b = [{"shape": "long_dress", "sleeve": "long", "color": "black", "secondary_color": "black", "pattern": "solid"},
         {"shape": "jacket", "sleeve": "long", "color": "grey", "secondary_color": "blue", "pattern": "checks"}]
    truth = {f"a{i}": r for i, r in enumerate(a)} | {f"b{i}": r for i, r in enumerate(b)}
    cfg = config_lib.EvaluateConfig(attribute_confidence=0.8)
    judge = types.SimpleNamespace(ctx=types.SimpleNamespace(cfg=cfg), truth_of=lambda ids: [truth.get(i) for i in ids],
                                  classifiers={"32px": {"held_out": {"confident_colour_share": 0.9,
                                                                     "confident_shape_share": 0.95,
                                                                     "color_either": 0.95, "shape": 0.97}}})
    # Style: the first keeps A's shape and takes B's colour; the second keeps the shape, reads B's
    # *second* colour (blue, accepted) but a wrong pattern. Content: takes B's shape, keeps A's colour
    # for the first; the second reads a wrong shape and an unconfident colour.
    style = _readings(["shorts", "tshirt"], ["none", "short"], ["black", "blue"], ["solid", "solid"])
    content = _readings(["long_dress", "skirt"], ["long", "none"], ["yellow", "green"], ["solid", "dots"],
                        confidence=0.5)
    ranker = {"style": {"mean_uplift": 0.5, "share_improved": 1.0},
              "content": {"mean_uplift": 0.1, "share_improved": 0.5}}
    real = np.random.default_rng(1).normal(size=(6, 8))
    inputs = _readings([r["shape"] for r in a], [r["sleeve"] for r in a], [r["color"] for r in a],
                       [r["pattern"] for r in a])
    result = evaluate_attributes.translator_figures(judge, S, ["a0", "a1"], ["b0", "b1"],
                                                    {"style": style, "content": content, "inputs": inputs}, ranker,
                                                    {}, real, real)
    s, c = result["style"], result["content"]
    assert (s["keeps_shape"], s["keeps_sleeve"], s["takes_colour"], s["takes_pattern"]) == (1.0, 1.0, 1.0, 0.5)
    assert (c["takes_shape"], c["keeps_colour"], c["keeps_pattern"]) == (0.5, 0.5, 1.0)
    assert s["confident_colour_share"] == 1.0 and c["confident_colour_share"] == 0.0
    # True popularity at the mid scale. A: shorts/none/yellow/solid −1.55; tshirt/short/yellow/dots 0.05.
    before = np.array([-1.3 - 0.25, 0.1 + 0.15 - 0.25 + 0.05])
    style_after = np.array([-1.3 + 0.15, 0.1 + 0.15 + 0.0 + 0.0])  # shorts black solid; tshirt blue solid
    perfect_style = np.array([-1.3 + 0.15, 0.1 + 0.15 - 0.1 - 0.1])  # A's shape/sleeve, B's colour/pattern
    assert s["true_uplift"]["mean_uplift"] == pytest.approx((style_after - before).mean())  # (0.4 + 0.2) / 2
    assert s["true_uplift"]["share_improved"] == 1.0
    assert s["perfect_uplift"]["mean_uplift"] == pytest.approx((perfect_style - before).mean())  # (0.4 + 0) / 2
    # Reading B's second colour (blue, better than its grey) beats the perfect transfer: 0.3 / 0.2.
    assert s["share_of_perfect"] == pytest.approx(1.5)
    # |after − perfect after|: tshirt blue solid 0.25 vs tshirt grey checks 0.05; the shorts match.
    assert s["gap_to_perfect"] == pytest.approx((0.0 + 0.2) / 2)
    content_after = np.array([1.3 + 0.3 - 0.25, -0.2 - 0.05 + 0.05])  # long dress yellow; skirt green dots
    assert c["true_uplift"]["mean_uplift"] == pytest.approx((content_after - before).mean())
    assert c["ranker_uplift"] == ranker["content"]
    # The content outputs are read without a confident colour: not recognisable, and said so.
    assert s["verdict"]["recognisable"] and not c["verdict"]["recognisable"]
    assert not result["verdict"]["recognisable"] and result["verdict"]["reasons"][0].startswith("content: ")
    # Content translation under A's label (paper 1's B → A) is judged by the same expectations.
    paper_ranker = {**ranker, "content_a_label": {"mean_uplift": -0.2, "share_improved": 0.0}}
    both = evaluate_attributes.translator_figures(
        judge, S, ["a0", "a1"], ["b0", "b1"],
        {"style": style, "content": content, "content_a_label": style, "inputs": inputs}, paper_ranker, {}, real, real)
    paper = both["content_a_label"]
    # The style outputs keep A's shapes: as B → A they take none of B's shapes and keep A's colour in neither.
    assert (paper["takes_shape"], paper["keeps_colour"]) == (0.0, 0.0)
    assert paper["ranker_uplift"] == paper_ranker["content_a_label"]
    assert both["content"]["true_uplift"] == c["true_uplift"] and both["content"]["takes_shape"] == c["takes_shape"]
    assert [r.split(":")[0] for r in both["verdict"]["reasons"]] == ["content", "content_a_label"]


def test_distinct_confident_colours_by_hand():
    colours = np.stack([_readings(["tshirt"] * 4, ["short"] * 4, names, ["solid"] * 4).probs["color"]
                        for names in (["red", "red", "blue", "green"], ["black"] * 4)])
    assert attr.distinct_confident_colours(colours).tolist() == [3, 1]
    unsure = _readings(["tshirt"] * 4, ["short"] * 4, ["red", "blue", "green", "pink"], ["solid"] * 4, confidence=0.5)
    assert attr.distinct_confident_colours(unsure.probs["color"][None]).tolist() == [0]


def test_reader_cache_is_keyed_by_data_and_settings(trained, tmp_path):
    reader, _, test_images, _ = trained
    reader.save(str(tmp_path), "attribute_classifier_32px")
    loaded = attr.AttributeReader.load(str(tmp_path), "attribute_classifier_32px", reader.card["key"])
    np.testing.assert_allclose(loaded.read(test_images[:8]).features, reader.read(test_images[:8]).features, atol=1e-5)
    assert attr.AttributeReader.load(str(tmp_path), "attribute_classifier_32px", "another key") is None
    assert attr.cache_key("data", reader.card["settings"]) != attr.cache_key("data", {**reader.card["settings"],
                                                                                     "steps": STEPS + 1})


# --- the evaluate stage on real synthetic garments ----------------------------------------------


class _FakeRanker(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    def score(self, images):
        return {"score": tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3]) / 255.0}


class _CopyTranslator(tf.Module):
    """Returns its content input: style translation keeps A whole, content translation gives B."""

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8), tf.TensorSpec(None, tf.uint8),
                                  tf.TensorSpec([None], tf.string)])
    def translate(self, content, reference, target_domain):
        return {"images": tf.image.resize(tf.ensure_shape(content, [None, None, None, 3]), (S, S), method="nearest")}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8), tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32)])
    def sample(self, content, target_domain, seed, num_samples):
        content = tf.image.resize(tf.ensure_shape(content, [None, None, None, 3]), (S, S), method="nearest")
        return {"images": tf.tile(content[:, None], tf.stack([1, num_samples, 1, 1, 1]))}

    @tf.function(input_signature=[])
    def domains(self):
        return {"names": tf.constant(["unpopular/edge", "unpopular/color", "popular/edge", "popular/color"])}


class _MeanColourFeatures:
    """Stands in for the random-weight InceptionV3 (slow at 299 px, and meaningless here)."""

    metric_name, weights, standard, network = "fid_like", "none", False, "keras"

    def __call__(self, images, batch_size=32):
        x = np.asarray(images, np.float64)
        return np.concatenate([x.mean(axis=(1, 2)), x.std(axis=(1, 2))], axis=1)


def _score_output(folder, ids, images, rows):
    """A score output of the synthetic posts: score = true popularity, domains by tercile, 1 in 5 held out."""
    os.makedirs(folder)
    intrinsic = np.array([rows[i]["intrinsic"] for i in ids])
    low, high = np.quantile(intrinsic, [1 / 3, 2 / 3])
    counts = {split: {"popular": 0, "unpopular": 0, "undecided": 0} for split in ("train", "test")}
    writers = {split: tf.io.TFRecordWriter(os.path.join(folder, f"{split}-00000-of-00001.tfrecord.gz"), options="GZIP")
               for split in counts}
    for index, (post_id, image) in enumerate(zip(ids, images)):
        split = "test" if _held_out(index) else "train"
        domain = "popular" if intrinsic[index] >= high else "unpopular" if intrinsic[index] <= low else ""
        counts[split][domain or "undecided"] += 1
        edge = image_lib.edge_map(image)
        post = {"post_id": post_id, "user_id": "u", "image_png": image_lib.encode_png(image),
                "edge_png": image_lib.encode_png(edge), "image_size": S, "image": f"images/{post_id}.png",
                "likes": 1, "followers": 10, "split": split, "phash": index, "pixel_digest": f"{index:064x}",
                "source_index": index, "caption": "#x", "content_type": "photo"}
        writers[split].write(records.add_score(records.encode_post(post), float(intrinsic[index]), domain))
    for writer in writers.values():
        writer.close()
    with open(os.path.join(folder, "stats.json"), "w") as f:
        json.dump({"image_size": S, "counts": counts, "thresholds": {}}, f)


def _pix2pix_folder(folder):
    """A train_translator pix2pix output (random weights): generator.weights.h5 and config.json."""
    import inspect

    import keras

    from pop_tf.models import pix2pix

    os.makedirs(folder)
    cfg = config_lib.TranslatorConfig(model="pix2pix", diversity="none", image_size=S, base_filters=8, noise_dim=8,
                                      output=folder)
    config_lib.write_resolved(cfg, folder)
    # The generator's options as the evaluator rebuilds it from config.json (whichever it takes).
    options = {"up_type": getattr(cfg, "up_type", None),
               "spectral_normalization": getattr(cfg, "generator_spectral_norm", None)}
    accepted = inspect.signature(pix2pix.UNetGenerator).parameters
    keras.utils.set_random_seed(0)
    generator = pix2pix.UNetGenerator(S, base_filters=8, num_clusters=1, noise_dim=8,
                                      **{k: v for k, v in options.items() if k in accepted and v is not None})
    generator.save_weights(os.path.join(folder, "generator.weights.h5"))


def _evaluate(root, ids, images, rows, tmp_path_factory):
    """evaluate.run with a copying translator, a random pix2pix generator and a cheap stand-in for Inception."""
    from pop_tf.metrics import fid

    work = root / "work"
    _score_output(str(work / "score"), ids, images, rows)
    for name, module, endpoints in (("ranker", _FakeRanker(), ["score"]),
                                    ("translator", _CopyTranslator(), ["translate", "sample", "domains"])):
        tf.saved_model.save(module, str(work / name), signatures={e: getattr(module, e) for e in endpoints})
        serving.write_model_card(str(work / name), name, {"image_size": S}, "")
    _pix2pix_folder(str(work / "p2p_none"))
    cfg = config_lib.resolve(None, [
        "evaluate.lpips_weights=none", "evaluate.num_inputs=4", "evaluate.samples_per_input=2",
        "evaluate.attribute_samples=3", "evaluate.ndb_bins=5", "evaluate.ndb_image_size=8", "evaluate.num_grid_pairs=1",
        "evaluate.batch_size=32", "evaluate.max_images=24", f"evaluate.attribute_width={WIDTH}",
        f"evaluate.attribute_steps={STEPS}", f"evaluate.attribute_batch_size={BATCH}"]).evaluate
    cfg.input, cfg.ranker, cfg.translator = str(work / "score"), str(work / "ranker"), str(work / "translator")
    cfg.pix2pix_variants, cfg.truth = [str(work / "p2p_none")], str(root / "synth" / "truth.jsonl")
    cfg.output = str(work / "evaluate")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fid, "InceptionFeatures", lambda *a, **k: _MeanColourFeatures())
        paths = evaluate.run(cfg)
    with open(paths["metrics"]) as f:
        return work, json.load(f), paths


def test_evaluate_writes_the_attribute_figures(evaluated):
    work, metrics, paths = evaluated
    held_out = metrics["attribute_classifier"]["32px"]["held_out"]
    assert {"shape", "color", "color_either", "pattern", "sleeve", "confident_colour_share"} <= set(held_out)
    assert os.path.isfile(work / "evaluate" / "attribute_classifier_32px.weights.h5")
    translator = metrics["translator"]["attributes"]
    style, content = translator["style"], translator["content"]
    for figures in (style, content, translator["content_a_label"]):
        assert {"fid_synth", "kid_synth", "precision_synth", "recall_synth", "confident_colour_share", "true_uplift",
                "perfect_uplift", "share_of_perfect", "gap_to_perfect", "ranker_uplift", "verdict"} <= set(figures)
    # The copying translator: style outputs are A itself (A's shape kept as often as the classifier
    # reads shapes right), content outputs are B (B's shape taken); real garments are recognisable.
    assert style["keeps_shape"] > 0.5 and content["takes_shape"] > 0.4  # chance: 1/8
    # It ignores the label: content translation under A's label gives the same images, read the same.
    assert translator["content_a_label"]["takes_shape"] == content["takes_shape"]
    assert translator["content_a_label"]["ranker_uplift"] == content["ranker_uplift"]
    assert style["confident_colour_share"] > 0.7 and style["precision_synth"] > 0.5
    # Copying A changes nothing: a true uplift of exactly 0, while a perfect style transfer would gain.
    assert style["true_uplift"]["mean_uplift"] == 0.0 and style["true_uplift"]["share_improved"] == 0.0
    assert style["share_of_perfect"] in (0.0, None)
    # Copied edge maps are no colour garments: the edge → colour task is flagged, by its shape reading.
    assert not translator["verdict"]["recognisable"]
    assert any(r.startswith("random styles edge → colour: ") and "expected shape read" in r
               for r in translator["verdict"]["reasons"])
    for task in ("colour → colour", "edge → colour"):
        samples = translator["random_styles"][task]
        assert samples["samples_per_input"] == 3 and samples["inputs"] == 4
        assert samples["diversity_synth"] == pytest.approx(0.0, abs=1e-6)  # identical samples
        assert samples["distinct_confident_colours"] <= 1
    assert {"fid_synth", "precision_synth", "diversity_synth"} <= set(translator["real_reference"])
    # A pix2pix generator with random weights draws no garment, and the judge says so.
    p2p = metrics["pix2pix"]["variants"][0]["attributes"]
    assert {"confident_colour_share", "keeps_shape", "distinct_confident_colours", "fid_synth", "kid_synth",
            "precision_synth", "recall_synth", "ndb_synth", "jsd_synth", "diversity_synth",
            "real_reference"} <= set(p2p)
    assert not p2p["verdict"]["recognisable"]
    report = open(paths["report"], encoding="utf-8").read()
    assert "Attribute judge (synthetic data)" in report and "outputs are not recognisable as garments" in report
    lines = evaluate_attributes.summary_lines(metrics)
    assert any(line.startswith("style translation, true popularity") for line in lines)
    assert any(line.startswith("content translation (popular label), true popularity") for line in lines)
    assert any(line.startswith("content translation B→A (A's label, paper 1), true popularity") for line in lines)
    assert "content B→A, A&#x27;s label (paper 1)" in report
    assert any("pix2pix none (pix2pix-like): outputs are not recognisable as garments (" in line for line in lines)
    assert metrics["settings"]["attributes"]["confidence"] == 0.8
    # The run summary of `pop-tf run` carries the same lines, next to the ranker's uplift.
    from pop_tf import pipeline

    closing = pipeline.summary({"evaluate": {"metrics": paths["metrics"], "report": paths["report"]}})
    assert "pop_tf's ranker: mean score uplift" in closing and "style translation, true popularity" in closing
    assert "pix2pix none (pix2pix-like): outputs are not recognisable as garments (" in closing


def test_without_attributes_the_judge_is_skipped_with_a_sentence(caplog, tmp_path):
    import logging

    truth = tmp_path / "truth.jsonl"  # another dataset's truth: popularity only
    truth.write_text('{"post_id": "a", "intrinsic": 0.5}\n')
    with caplog.at_level(logging.INFO):
        assert evaluate_attributes.load_truth("") is None
        assert evaluate_attributes.load_truth(str(truth)) is None
    assert caplog.text.count("attribute evaluation") == 2 and caplog.text.count("skipped") == 2


def test_pix2pix_attribute_figures_against_training_images(evaluated, tmp_path):
    """evaluate.fid_reference=train: the *_synth figures of the pix2pix table compare with training garments."""
    import shutil

    from pop_tf.metrics import fid

    work, metrics, _ = evaluated
    output = tmp_path / "evaluate"
    shutil.copytree(work / "evaluate", output)  # with the trained classifier, reused by its key
    with open(work / "evaluate" / "config.json") as f:
        cfg = config_lib.EvaluateConfig(**json.load(f))
    cfg.translator, cfg.fid_reference, cfg.output, cfg.logdir = "", "train", str(output), str(tmp_path / "logs")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fid, "InceptionFeatures", lambda *a, **k: _MeanColourFeatures())
        paths = evaluate.run(cfg)
    with open(paths["metrics"]) as f:
        trained = json.load(f)
    assert trained["attribute_classifier"]["32px"]["key"] == metrics["attribute_classifier"]["32px"]["key"]
    on_test = metrics["pix2pix"]["variants"][0]["attributes"]
    on_train = trained["pix2pix"]["variants"][0]["attributes"]
    assert on_test["reference"] == "test" and on_train["reference"] == "train"
    # The same samples read the same (NDB against the training bins too), compared with other real garments.
    assert on_train["confident_colour_share"] == on_test["confident_colour_share"]
    assert on_train["ndb_synth"] == on_test["ndb_synth"] and on_train["ndb_synth_real"] == on_test["ndb_synth_real"]
    assert on_train["fid_synth"] != on_test["fid_synth"]
    assert on_train["real_reference"]["fid_synth"] != on_test["real_reference"]["fid_synth"]
    report = open(paths["report"], encoding="utf-8").read()
    assert "real train garments (reference)" in report and "(evaluate.fid_reference=train)" in report
