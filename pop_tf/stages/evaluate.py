"""The `evaluate` stage (TFX Evaluator): popularity uplift, FID, LPIPS diversity, NDB/JSD, report.

Reads the score stage's records (`<input>/test-*`, `train-*.tfrecord.gz`, each post with its
popularity domain), the ranker SavedModel, and, when given, the translator SavedModel (docs/savedmodels.md,
used through its `translate`, `sample` and `domains` endpoints only, exactly as other apps use
it) and train_translator's pix2pix output folders (generator rebuilt from `config.json`,
weights from `generator.weights.h5`). Every protocol is in docs/metrics.md, which also lists the
shortcuts of the published evaluations it avoids (the Popularity-GAN thesis material,
baharehmn/thesis: FID and LPIPS between inputs and their own translations):

- **Popularity uplift**: the ranker's score of a translated image minus that of its unpopular
  input A, for style translation (`translate(A, B, "popular/color")`: A's content, B's style)
  and content translation (B's content, A's style), B the popular test images in turn. Content
  translation is measured under two protocols (`MODES`): with the popular label
  (`translate(B, A, "popular/color")`, key `content`, pop_tf's product direction) and with A's
  label as paper 1's "B → A" row and DMIT's `s2w_enc` (`translate(B, A, "unpopular/color")`, key
  `content_a_label`). All modes are measured against the same input A.
- **FID** of the outputs against *real test images of the target domain* (popular colour), never
  against the images they were translated from. The popular test images are split by position:
  the even ones are the references B, the odd ones the FID set, so content translation (which
  copies B's content) is not compared with its own references. With fewer than 4 popular test
  images both roles share all of them and `reference_overlap` says so.
- **LPIPS diversity**: N test inputs × M random styles (`sample`), mean distance over all pairs of
  outputs of the *same input* ± standard error (`pop_tf.metrics.lpips.diversity`). Random pairs
  of distinct real popular test images give the real-data reference value (DMIT's upper bound).
- **NDB/JSD** (pix2pix variants): k-means bins fitted on *training* images (raw pixels,
  downsampled), generated test-time samples assigned to them (`pop_tf.metrics.ndb.NDB`).
- **FID reference of the pix2pix table** (`evaluate.fid_reference`): all colour test images
  (`test`, the default) or the training split's colour images (`train`, as Suzuki et al. compare
  generated images with training images); metrics.json (`pix2pix.fid_reference`,
  `translator.fid.reference`) and the report say which real images each table used.
- **Attribute judge** (only with a truth.jsonl that has garment attributes, i.e. pop_tf's synth;
  otherwise skipped with one logged sentence): a small classifier trained on the real training
  garments reads shape, colour, pattern and sleeve of every output and gives fid_synth, kid_synth,
  precision/recall_synth, NDB/JSD and diversity_synth in its feature space, the attribute checks
  of style and content translation, and the true popularity uplift (synth's own popularity
  function on what it reads), each beside what real images score (`pop_tf.stages.evaluate_attributes`).
The paper-1 Table 2 layout gives LPIPS and FID for edge → colour and colour → colour (edge maps
resp. colour images of unpopular test posts sampled into popular colour); the paper-2 Table 1
layout gives FID, NDB, JSD and LPIPS for each pix2pix variant (none / ms / clusters).

Images are streamed through tf.data in batches; only features, scores, NDB pixels (downsampled)
and the N×M diversity outputs are held in memory.

Outputs in the output folder: `metrics.json` (every figure and the settings that produced it,
including which extractors: fid vs fid_like, lpips vs lpips_like), `report.html` (self-contained:
images as data URIs, tables as HTML), the PNG grids and plots, `config.json`, and with the
attribute judge its classifier (`attribute_classifier_<S>px.weights.h5` and `.json`, reused by the
next run when the training data and settings are the same); TensorBoard scalars, histograms and
images in `<workdir>/logs/evaluate`.
"""

import argparse
import dataclasses
import json
import logging
import os
import re
import sys
import time
import typing

import numpy as np

from pop_tf import config as config_lib
from pop_tf import contracts, layout, preprocessing
from pop_tf.errors import PopTfError, report, reportable
from pop_tf.paths import check_stage
from pop_tf.stages.staging import install, make_staging

log = logging.getLogger(__name__)

STAGE = "evaluate"
METRICS = "metrics.json"
REPORT = "report.html"
CONFIG = "config.json"
# Translation direction of the product: unpopular garments towards the popular domain.
SOURCE_DOMAIN = "unpopular/color"
TARGET_DOMAIN = "popular/color"
# Below this many popular test images, references and FID set cannot be split meaningfully.
MIN_POPULAR_FOR_SPLIT = 4
# Inputs shown in the random-style and pix2pix sample grids.
GRID_INPUTS = 4
# The translation modes of the uplift and FID, by their key in metrics.json: (title, protocol).
# `content` keeps its key (downstream users read it); `content_a_label` is paper 1's protocol.
MODES = {
    "style": ("style A→B", "translate(A, B, popular/color): A's content, B's style, the popular label"),
    "content": ("content, popular label", "translate(B, A, popular/color): B's content, A's style, the popular "
                "label (pop_tf's protocol: the output is meant to be popular)"),
    "content_a_label": ("content B→A, A's label (paper 1)", "translate(B, A, unpopular/color): B's content, A's "
                        "style, A's domain label, as paper 1's B → A row and DMIT's s2w_enc"),
}
OWNED_PREFIXES = ("translator_", "pix2pix_", "attribute_classifier_")
OWNED_NAMES = (METRICS, REPORT, CONFIG)
# evaluate.fid_reference: the real images the pix2pix table compares with, in words.
FID_REFERENCES = {"test": "real colour test images", "train": "real colour training images"}
VARIANT_TITLES = {"none": "none (pix2pix-like)", "ms": "ms (MSGAN)", "clusters": "clusters (Suzuki et al.)"}


class EvaluateError(PopTfError):
    """Inputs the evaluation cannot use: missing folders, wrong model kinds, too few images."""


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------


def _check_config(cfg: config_lib.EvaluateConfig) -> None:
    if not cfg.input or not cfg.ranker or not cfg.output:
        raise config_lib.ConfigError("evaluate needs 'evaluate.input' (a score output folder), 'evaluate.ranker' (a "
                                     "ranker SavedModel) and 'evaluate.output'")
    if not cfg.translator and not cfg.pix2pix_variants:
        raise config_lib.ConfigError("evaluate has nothing to evaluate: set 'evaluate.translator' (a translator "
                                     "SavedModel) and/or 'evaluate.pix2pix_variants' (pix2pix output folders)")
    allowed = typing.get_args(config_lib.FidReference)
    if cfg.fid_reference not in allowed:  # a config built in code skips resolve's check
        raise config_lib.ConfigError(f"config key 'evaluate.fid_reference': {cfg.fid_reference!r} is not allowed; "
                                     f"use one of {', '.join(repr(a) for a in allowed)}")
    if cfg.truth and not os.path.isfile(cfg.truth):
        raise EvaluateError(f"evaluate.truth: {cfg.truth} does not exist (leave it empty when the dataset has no "
                            "truth file)")


def _score_stats(input_dir: str) -> dict:
    try:
        with open(os.path.join(input_dir, layout.STATS)) as f:
            stats = json.load(f)
    except (OSError, ValueError):
        raise EvaluateError(f"evaluate.input {input_dir} is not a score output folder (no readable stats.json); run "
                            "`pop-tf score` first") from None
    if "counts" not in stats or "image_size" not in stats:
        raise EvaluateError(f"evaluate.input {input_dir} holds no popularity domains (an ingest output?); pass the "
                            "score stage's output folder")
    return stats


def _posts(cfg, stored_size: int, split: str, image_size: int = None):
    """Unbatched scored posts of one split, in file order (dicts of `records.parse_post` tensors)."""
    from pop_tf import data

    pattern = layout.shard_pattern(cfg.input, split)
    return data.post_dataset(pattern, stored_size, cfg.batch_size, image_size=image_size, scored=True).unbatch()


def _test_posts_in_domain(cfg, stored_size: int, popularity: str, parity=None):
    """Test posts of one popularity domain; `parity` 0 / 1 keeps the even / odd ones among them."""
    import tensorflow as tf

    def in_domain(post):
        return tf.equal(post["domain"], popularity)

    def at_parity(index, post):
        return tf.equal(index % 2, parity)

    def post_only(index, post):
        return post

    posts = _posts(cfg, stored_size, "test").filter(in_domain)
    if parity is not None:
        posts = posts.enumerate().filter(at_parity).map(post_only)
    return posts


def _limited(dataset, limit: int):
    return dataset.take(limit) if limit else dataset


def _stack(dataset, key: str, count: int) -> np.ndarray:
    """The first `count` elements' `key` as one numpy array (for the few images a grid needs)."""
    items = [p[key].numpy() for p in dataset.take(count)]
    return np.stack(items) if items else np.zeros([0, 1, 1, 3], np.uint8)


def _fit(images, size: int) -> np.ndarray:
    """uint8 [N, H, W, 3] resized to size×size (antialiased) as uint8, for grids and NDB pixels."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if images.shape[1] == size and images.shape[2] == size:
        return np.asarray(images, np.uint8)
    resized = tf.image.resize(tf.cast(images, tf.float32), (size, size), antialias=True)
    return np.asarray(tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8))


def _gather(chunks, what: str, where: str) -> np.ndarray:
    """The batches' arrays joined, or an EvaluateError when the stream held none."""
    if not chunks:
        raise EvaluateError(f"{where} holds no {what}; the score output is incomplete or the split is empty")
    return np.concatenate(chunks)


# ---------------------------------------------------------------------------------------------
# pix2pix variants
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Pix2PixVariant:
    """A trained pix2pix generator of train_translator, ready to sample at test time.

    Attributes:
        folder: the train_translator output folder it came from.
        diversity: none | ms | clusters (from its config.json).
        image_size: the generator's side S.
        generator: the `pop_tf.models.pix2pix.UNetGenerator` with the trained weights.
        shares: [K] cluster shares of the training set (uniform [1.0] without clusters).
    """

    folder: str
    diversity: str
    image_size: int
    generator: object
    shares: np.ndarray

    def sample(self, edges, seed: int, num_samples: int):
        """`num_samples` images per edge map, the test-time rule of `ClusterPix2Pix.sample`.

        The cluster ids are drawn with probability equal to the cluster shares and z from N(0, I),
        both stateless from `seed` with the same seeds as `ClusterPix2Pix.sample`, so a variant
        samples exactly what its trainer would.

        Args:
            edges: float [N, S, S, 3] in [−1, 1].
            seed: integer seed ≥ 0.
            num_samples: images per edge map.

        Returns:
            (images float32 [N, num_samples, S, S, 3] in [−1, 1], cluster ids int32 [N, num_samples]).
        """
        import tensorflow as tf

        from pop_tf.models import cluster_conditioning

        edges = tf.convert_to_tensor(edges, tf.float32)
        count = int(edges.shape[0])
        ids = tf.reshape(cluster_conditioning.draw_clusters(self.shares, count * num_samples, seed),
                         [count, num_samples])
        noise = tf.random.stateless_normal([count * num_samples, self.generator.noise_dim],
                                           seed=tf.constant([seed, 1], tf.int64))
        images = self.generator({
            "edge": tf.repeat(edges, num_samples, axis=0),
            "noise": noise,
            "cluster_onehot": tf.one_hot(tf.reshape(ids, [-1]), self.generator.num_clusters),
        }, training=False)
        return tf.reshape(images, [count, num_samples] + images.shape[1:].as_list()), ids


def load_pix2pix_variant(folder: str, clusters: str = "") -> Pix2PixVariant:
    """Rebuilds a pix2pix generator from a train_translator output folder and loads its weights.

    Args:
        folder: holds `config.json` (a TranslatorConfig with model=pix2pix) and
            `generator.weights.h5`.
        clusters: the cluster output folder to use when the variant was trained with
            diversity=clusters and the folder named in its config.json no longer exists.

    Raises:
        EvaluateError: when the folder is not a pix2pix output or its weights do not fit.
    """
    from pop_tf.models import clusterer, pix2pix

    try:
        with open(os.path.join(folder, CONFIG)) as f:
            trained = json.load(f)
    except (OSError, ValueError):
        raise EvaluateError(f"evaluate.pix2pix_variants: {folder} has no readable {CONFIG}; pass train_translator "
                            "output folders trained with model=pix2pix") from None
    if trained.get("model") != "pix2pix":
        raise EvaluateError(f"evaluate.pix2pix_variants: {folder} holds a {trained.get('model')!r} translator, not "
                            "a pix2pix one (a DMIT translator goes in evaluate.translator as its saved_model folder)")
    weights = os.path.join(folder, "generator.weights.h5")
    if not os.path.isfile(weights):
        raise EvaluateError(f"evaluate.pix2pix_variants: {folder} has no generator.weights.h5; its training has not "
                            "finished")
    diversity = trained.get("diversity", "none")
    shares = np.ones([1])
    if diversity == "clusters":
        own = trained.get("clusters") or ""
        cluster_dir = own if own and os.path.isdir(own) else clusters
        path = os.path.join(cluster_dir, "clusters.npz")
        if not cluster_dir or not os.path.isfile(path):
            raise EvaluateError(f"evaluate.pix2pix_variants: {folder} was trained with diversity=clusters but its "
                                f"cluster folder {own or '(none)'} is gone; set evaluate.clusters to the cluster "
                                "output folder it was trained with")
        shares = np.asarray(clusterer.ClusterStats.load(path).shares, np.float64)
    shares = shares / shares.sum()
    generator = pix2pix.UNetGenerator(int(trained["image_size"]), base_filters=int(trained["base_filters"]),
                                      num_clusters=len(shares), noise_dim=int(trained["noise_dim"]),
                                      up_type=trained.get("up_type", "transpose"),
                                      spectral_normalization=trained.get("generator_spectral_norm", "keras"))
    try:
        generator.load_weights(weights)
    except Exception as e:  # Keras raises ValueError or h5py errors: both mean "not these weights"
        raise EvaluateError(f"evaluate.pix2pix_variants: {weights} does not fit the generator described by "
                            f"{os.path.join(folder, CONFIG)} ({e})") from None
    return Pix2PixVariant(folder=folder, diversity=diversity, image_size=int(trained["image_size"]),
                          generator=generator, shares=shares)


# ---------------------------------------------------------------------------------------------
# The evaluation
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Context:
    cfg: config_lib.EvaluateConfig
    stored_size: int
    counts: dict
    extractor: object
    distance: object
    ranker: object
    staging: str
    report: object
    scalars: dict = dataclasses.field(default_factory=dict)
    images: dict = dataclasses.field(default_factory=dict)
    histograms: dict = dataclasses.field(default_factory=dict)
    # The attribute evaluation (pop_tf.stages.evaluate_attributes), when the truth has attributes:
    # its judge, and the report sections it adds at the end of the report.
    judge: object = None
    attribute_report: object = None

    def features(self, images) -> np.ndarray:
        return self.extractor(np.asarray(images), batch_size=self.cfg.batch_size)

    def figure(self, name: str, png: bytes) -> str:
        with open(os.path.join(self.staging, name), "wb") as f:
            f.write(png)
        return name

    @property
    def fid_label(self) -> str:
        return "FID" if self.extractor.metric_name == "fid" else "FID-like"

    @property
    def lpips_label(self) -> str:
        return "LPIPS" if self.distance.metric_name == "lpips" else "LPIPS-like"


def _fid(real: np.ndarray, generated: np.ndarray):
    """The Fréchet distance of two feature sets, or None when either has fewer than 2 rows."""
    from pop_tf.metrics import fid

    if len(real) < 2 or len(generated) < 2:
        return None
    return fid.fid_from_activations(real, generated)


def _score(ranker, images) -> np.ndarray:
    return np.asarray(ranker.score(images)["score"], np.float64).reshape(-1)


def _sample_translator(model, inputs: np.ndarray, seed: int, num_samples: int, batch_size: int) -> np.ndarray:
    """uint8 [N, M, S, S, 3]: M prior styles per input into the target domain, in batches."""
    import tensorflow as tf

    outputs = []
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start:start + batch_size]
        result = model.sample(content=tf.constant(batch, tf.uint8),
                              target_domain=tf.constant([TARGET_DOMAIN] * len(batch)),
                              seed=tf.constant(seed, tf.int64), num_samples=tf.constant(num_samples, tf.int32))
        outputs.append(np.asarray(result["images"]))
    return np.concatenate(outputs)


def _rows_grid(inputs: np.ndarray, outputs: np.ndarray, extra=None) -> np.ndarray:
    """uint8 grid: per row the input (and `extra`, e.g. the real image) then its M outputs."""
    from pop_tf.report import stack_rows

    size = outputs.shape[2]
    inputs = _fit(inputs, size)
    extra = _fit(extra, size) if extra is not None else None
    rows = []
    for i in range(len(outputs)):
        tiles = [inputs[i]] + ([extra[i]] if extra is not None else []) + list(outputs[i])
        rows.append(np.concatenate(tiles, axis=1))
    return stack_rows(rows)


def _evaluate_ranker(ctx: _Context) -> dict:
    """Kendall τ / Spearman ρ of the stored test scores against the hidden intrinsic popularity."""
    from scipy import stats

    from pop_tf.truth import read_truth

    truth = read_truth(ctx.cfg.truth)
    scores, intrinsic = [], []
    for post in _posts(ctx.cfg, ctx.stored_size, "test"):
        post_id = post["post_id"].numpy().decode("utf-8")
        if post_id in truth:
            scores.append(float(post["score"].numpy()))
            intrinsic.append(truth[post_id])
    result = {"truth_images": len(scores), "truth": os.path.abspath(ctx.cfg.truth)}
    if len(scores) >= 3:
        result.update(kendall_tau=float(stats.kendalltau(scores, intrinsic).statistic),
                      spearman=float(stats.spearmanr(scores, intrinsic).statistic))
        ctx.scalars.update({"ranker/kendall_tau": result["kendall_tau"], "ranker/spearman": result["spearman"]})
    report = ctx.report
    report.heading("Ranker against the hidden truth")
    report.table(["test images with truth", "Kendall τ", "Spearman ρ"],
                 [[len(scores), result.get("kendall_tau"), result.get("spearman")]])
    report.bullets(["Rank correlations between the score stage's test-split scores and the dataset's hidden "
                    "intrinsic popularity (truth.jsonl); figures need at least 3 test images with truth."])
    return result


def _evaluate_translator(ctx: _Context) -> dict:
    import tensorflow as tf

    from pop_tf import serving, translate
    from pop_tf.metrics import lpips, uplift
    from pop_tf.report import histogram_png, stack_rows

    cfg, report = ctx.cfg, ctx.report
    serving.read_model_card(cfg.translator, expected_kind="translator")
    model = tf.saved_model.load(cfg.translator)
    names = [n.decode("utf-8") for n in model.domains()["names"].numpy()]
    missing = [d for d in (SOURCE_DOMAIN, TARGET_DOMAIN) if d not in names]
    if missing:
        raise EvaluateError(f"evaluate.translator {cfg.translator} lacks the domain(s) {', '.join(missing)}; its "
                            f"domains are {', '.join(names)}")
    test = ctx.counts.get("test", {})
    num_popular, num_unpopular = int(test.get("popular", 0)), int(test.get("unpopular", 0))
    if num_popular < 1 or num_unpopular < 1:
        raise EvaluateError(f"the test split of {cfg.input} has {num_unpopular} unpopular and {num_popular} popular "
                            "images; the translator evaluation needs both (more test posts, or other "
                            "score.unpopular_quantile/popular_quantile)")
    overlap = num_popular < MIN_POPULAR_FOR_SPLIT
    ref_parity, real_parity = (None, None) if overlap else (0, 1)
    reader = None
    if ctx.judge is not None:
        # The judge reads images at the translator's output size; one white image tells it.
        probe = tf.constant(np.full([1, ctx.stored_size, ctx.stored_size, 3], 255, np.uint8))
        size = int(model.translate(content=probe, reference=probe,
                                   target_domain=tf.constant([TARGET_DOMAIN]))["images"].shape[1])
        reader = ctx.judge.reader(ctx.judge.size_for(size))

    # The FID set: real popular colour test images (never inputs; references only when overlapping).
    real = _test_posts_in_domain(cfg, ctx.stored_size, "popular", real_parity).map(lambda p: p["image"])
    real_features, real_synth = [], []
    for batch in real.batch(cfg.batch_size):
        real_features.append(ctx.features(batch.numpy()))
        if reader is not None:
            real_synth.append(reader.read(batch.numpy()).features)
    real_features = _gather(real_features, "popular test images", cfg.input)

    # Uplift and FID of both translation modes, streamed: A cycles once, B repeats as needed.
    inputs = _limited(_test_posts_in_domain(cfg, ctx.stored_size, "unpopular"), cfg.max_images)
    references = _test_posts_in_domain(cfg, ctx.stored_size, "popular", ref_parity).repeat()
    before, after, features = [], {mode: [] for mode in MODES}, {mode: [] for mode in MODES}
    a_ids, b_ids, readings = [], [], {**{mode: [] for mode in MODES}, "inputs": []}
    for a_posts, b_posts in tf.data.Dataset.zip(inputs, references).batch(cfg.batch_size):
        a, b = a_posts["image"], b_posts["image"]
        target = tf.constant([TARGET_DOMAIN] * int(a.shape[0]))
        source = tf.constant([SOURCE_DOMAIN] * int(a.shape[0]))
        outputs = {"style": model.translate(content=a, reference=b, target_domain=target)["images"],
                   "content": model.translate(content=b, reference=a, target_domain=target)["images"],
                   "content_a_label": model.translate(content=b, reference=a, target_domain=source)["images"]}
        before.append(_score(ctx.ranker, a))
        for mode, images in outputs.items():
            after[mode].append(_score(ctx.ranker, images))
            features[mode].append(ctx.features(np.asarray(images)))
            if reader is not None:
                readings[mode].append(reader.read(np.asarray(images)))
        if reader is not None:
            readings["inputs"].append(reader.read(a.numpy()))
        a_ids += list(a_posts["post_id"].numpy())
        b_ids += list(b_posts["post_id"].numpy())
    before = _gather(before, "unpopular test images", cfg.input)
    after = {mode: np.concatenate(v) for mode, v in after.items()}
    features = {mode: np.concatenate(v) for mode, v in features.items()}
    uplifts = {mode: uplift.popularity_uplift(before, after[mode], threshold=cfg.uplift_threshold) for mode in after}
    table = uplift.compare_modes(uplifts)

    # Diversity and the Table 2 layout: N inputs × M prior styles, colour and edge inputs.
    first = _test_posts_in_domain(cfg, ctx.stored_size, "unpopular").take(cfg.num_inputs)
    first_inputs = {"colour → colour": _stack(first, "image", cfg.num_inputs),
                    "edge → colour": _stack(first, "edge", cfg.num_inputs)}
    tasks, sample_grids, samples = {}, {}, {}
    for task, task_inputs in first_inputs.items():
        outputs = _sample_translator(model, task_inputs, cfg.seed, cfg.samples_per_input, cfg.batch_size)
        result = lpips.diversity(ctx.distance, outputs, batch_size=cfg.batch_size)
        result["fid"] = _fid(real_features, ctx.features(outputs.reshape((-1,) + outputs.shape[2:])))
        result["generated_images"] = int(outputs.shape[0] * outputs.shape[1])
        tasks[task] = result
        sample_grids[task] = (_rows_grid(task_inputs[:GRID_INPUTS], outputs[:GRID_INPUTS]), outputs.shape[2])
        if reader is not None:
            if cfg.attribute_samples != cfg.samples_per_input:
                outputs = _sample_translator(model, task_inputs, cfg.seed, cfg.attribute_samples, cfg.batch_size)
            samples[task] = (reader.read(outputs.reshape((-1,) + outputs.shape[2:]), batch_size=cfg.batch_size),
                             outputs.shape[0], outputs.shape[1], list(_stack(first, "post_id", cfg.num_inputs)))
    # DMIT's reference value: LPIPS between distinct real popular test images (pairs 2k, 2k+1).
    reals = _stack(_test_posts_in_domain(cfg, ctx.stored_size, "popular", real_parity), "image", 2 * cfg.num_inputs)
    pairs = len(reals) // 2
    real_lpips = None
    if pairs:
        distances = ctx.distance(reals[0:2 * pairs:2], reals[1:2 * pairs:2], batch_size=cfg.batch_size)
        real_lpips = {"mean": float(np.mean(distances)), "num_pairs": pairs,
                      "stderr": float(np.std(distances) / np.sqrt(pairs)) if pairs > 1 else None}

    fid = {"metric": ctx.extractor.metric_name, "real_images": int(len(real_features)),
           "reference_overlap": overlap,
           # Always the test split, whatever evaluate.fid_reference (the pix2pix table's option).
           "reference": {"split": "test", "images": f"real {TARGET_DOMAIN} test images" + (
               "" if overlap else " at odd positions (the even ones are the references B)")},
           **{mode: _fid(real_features, features[mode]) for mode in MODES},
           "colour_to_colour": tasks["colour → colour"]["fid"], "edge_to_colour": tasks["edge → colour"]["fid"]}
    result = {
        "model": os.path.abspath(cfg.translator), "domains": names, "source_domain": SOURCE_DOMAIN,
        "target_domain": TARGET_DOMAIN, "inputs": int(len(before)),
        "modes": {mode: {"title": title, "protocol": protocol} for mode, (title, protocol) in MODES.items()},
        "uplift": {**uplifts, "table": table}, "fid": fid,
        "lpips_diversity": {"metric": ctx.distance.metric_name, "colour_to_colour": tasks["colour → colour"],
                            "edge_to_colour": tasks["edge → colour"], "real_pairs": real_lpips},
        "table2": [{"task": task, "lpips": r["mean"], "lpips_stderr": r["stderr"], "fid": r["fid"]}
                   for task, r in tasks.items()],
    }
    for mode in uplifts:
        for key in ("mean_uplift", "share_improved", "share_above_1", "mean_after"):
            ctx.scalars[f"translator/uplift_{mode}/{key}"] = uplifts[mode][key]
        ctx.histograms[f"translator/score_after_{mode}"] = after[mode]
    ctx.histograms["translator/score_before"] = before
    for key in (*MODES, "colour_to_colour", "edge_to_colour"):
        if fid[key] is not None:
            ctx.scalars[f"translator/{fid['metric']}/{key}"] = fid[key]
    for task, key in (("colour → colour", "colour_to_colour"), ("edge → colour", "edge_to_colour")):
        ctx.scalars[f"translator/{ctx.distance.metric_name}_diversity/{key}"] = tasks[task]["mean"]
    if reader is not None:
        from pop_tf.metrics.attributes import Readings
        from pop_tf.stages import evaluate_attributes

        other_real = np.zeros([0, reader.model.get_layer("features").units])
        if not overlap:
            references_only = _test_posts_in_domain(cfg, ctx.stored_size, "popular", ref_parity).map(lambda p: p["image"])
            other_real = np.concatenate([other_real] + [reader.read(b.numpy()).features
                                                        for b in references_only.batch(cfg.batch_size)])
        attributes = evaluate_attributes.translator_figures(
            ctx.judge, reader.image_size, a_ids, b_ids, {m: Readings.concatenate(r) for m, r in readings.items()},
            uplifts, samples, np.concatenate(real_synth), other_real)
        result["attributes"] = attributes
        _attribute_scalars(ctx, "translator/synth", attributes)
        evaluate_attributes.report_translator(
            ctx.attribute_report, attributes,
            f"{len(real_features)} real popular colour test images of the FID set")

    # The report section.
    report.heading("Popularity translator (DMIT)")
    report.paragraph(f"{result['inputs']} unpopular colour test images translated towards {TARGET_DOMAIN}; "
                     f"{fid['real_images']} real popular colour test images form the FID set.")
    if overlap:
        report.paragraph(f"Only {num_popular} popular test images: they serve both as references and as the FID "
                         "set, so the content-translation FID is optimistic.", css_class="note")
    report.table(["mode", "images", "mean score before", "mean score after", "mean uplift", "± s.e.",
                  "median uplift", "share improved", f"share above {cfg.uplift_threshold:g}",
                  f"{ctx.fid_label} vs real popular"],
                 [[MODES[row["mode"]][0], row["count"], row["mean_before"], row["mean_after"], row["mean_uplift"],
                   row["stderr"], row["median_uplift"], row["share_improved"],
                   uplifts[row["mode"]]["share_above_threshold"], fid[row["mode"]]] for row in table],
                 caption="Popularity uplift: style vs content translation")
    hist = histogram_png({"inputs (unpopular)": before,
                          **{MODES[mode][0]: after[mode] for mode in MODES}},
                         "Ranker scores before and after translation", "ranker score")
    ctx.figure("translator_scores.png", hist)
    report.image(hist, "score histograms",
                 "Ranker score histograms of the inputs and of the three translations (vertical lines: means).")
    report.table(["task", f"{ctx.lpips_label} diversity ↑", "± s.e.", "pairs", f"{ctx.fid_label} ↓"],
                 [[row["task"], row["lpips"], row["lpips_stderr"], tasks[row["task"]]["num_pairs"], row["fid"]]
                  for row in result["table2"]]
                 + ([["real popular images (distinct pairs)", real_lpips["mean"], real_lpips["stderr"],
                      real_lpips["num_pairs"], None]] if real_lpips else []),
                 caption="Table 2 layout (paper 1): diversity and quality of random-style translations; "
                 f"{ctx.fid_label} reference: real popular colour test images")
    for task, (grid, tile) in sample_grids.items():
        slug = "edge" if task.startswith("edge") else "colour"
        ctx.figure(f"translator_samples_{slug}.png", _png(grid))
        ctx.images[f"translator/samples_{slug}"] = grid
        report.image(grid, f"random styles {task}", f"{task}: per row the input, then its "
                     f"{cfg.samples_per_input} outputs with random styles (seed {cfg.seed}).",
                     width=_display_width(grid, tile))
    if cfg.num_grid_pairs:
        pair_a = _stack(_test_posts_in_domain(cfg, ctx.stored_size, "unpopular"), "image", cfg.num_grid_pairs)
        pair_b = _stack(_test_posts_in_domain(cfg, ctx.stored_size, "popular", ref_parity), "image", cfg.num_grid_pairs)
        count = min(len(pair_a), len(pair_b))
        grid = stack_rows([translate.translation_grid(model, pair_a[i], pair_b[i], SOURCE_DOMAIN, TARGET_DOMAIN,
                                                      seed=cfg.seed) for i in range(count)])
        ctx.figure("translator_grid.png", _png(grid))
        ctx.images["translator/grid"] = grid
        report.image(grid, "translation grid", "One row per pair (A unpopular, B popular test image): A, B, then "
                     "the paper's 10-image row (A→B: A's content with B's style under popular/color; B→A: B's "
                     "content with A's style under A's label unpopular/color; four random styles of A, four of B). "
                     "Columns: " + " | ".join(translate.GRID_COLUMNS) + ".",
                     width=_display_width(grid, grid.shape[1] // len(translate.GRID_COLUMNS)))
        result["grid_pairs"] = count
    report.bullets([
        "Popularity uplift: ranker score of each translated image minus the score of its unpopular input A (the "
        "same A for every mode), B the popular test references in turn; s.e. = sample std (ddof 1) / √n; the "
        "share above counts translated scores. Modes: "
        + "; ".join(f"{title} (key {mode}) = {protocol}" for mode, (title, protocol) in MODES.items()) + ".",
        f"{ctx.fid_label}: InceptionV3 2048-d average-pool features at 299×299 (weights: "
        f"{ctx.extractor.weights}), Fréchet distance in float64 between the outputs and real popular colour test "
        "images" + (" (the references double as the FID set)." if overlap else
                    " at odd positions, never used as inputs or references (the even ones are the references)."),
        f"{ctx.lpips_label} diversity: for each of N = {len(first_inputs['colour → colour'])} unpopular test inputs, "
        f"M = {cfg.samples_per_input} outputs with prior styles (`sample`, seed {cfg.seed}); mean distance over all "
        "M(M−1)/2 pairs of outputs of the same input ± standard error; the real-image row pairs distinct real "
        "popular test images.",
        "Table 2 layout: colour → colour samples the colour images of the unpopular test posts into popular/color, "
        "edge → colour their edge maps; the FID of each row uses all N×M samples.",
    ])
    return result


def _attribute_scalars(ctx: _Context, prefix: str, figures: dict) -> None:
    """TensorBoard scalars of every number in an attribute result (nested dicts, no lists)."""
    for key, value in figures.items():
        if isinstance(value, dict):
            _attribute_scalars(ctx, f"{prefix}/{key}", value)
        elif isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool):
            ctx.scalars[f"{prefix}/{key}"] = float(value)


def _display_width(grid: np.ndarray, tile: int) -> int:
    from pop_tf.report import display_width

    return display_width(grid.shape[1], tile)


def _png(array) -> bytes:
    from pop_tf.report import png_bytes

    return png_bytes(array)


def _variant_names(variants) -> list:
    """Table labels: the diversity method, with the folder name when two variants share one."""
    titles = [VARIANT_TITLES.get(v.diversity, v.diversity) for v in variants]
    return [f"{t} [{os.path.basename(os.path.normpath(v.folder))}]" if titles.count(t) > 1 else t
            for t, v in zip(titles, variants)]


def _evaluate_pix2pix(ctx: _Context) -> dict:
    from pop_tf import data
    from pop_tf.metrics import lpips, ndb
    from pop_tf.report import bin_proportions_png

    cfg, report = ctx.cfg, ctx.report
    variants = [load_pix2pix_variant(folder, cfg.clusters) for folder in cfg.pix2pix_variants]
    names = _variant_names(variants)

    # The FID reference, streamed: real colour images of every post (pix2pix translates any edge
    # map) of the test split, or of the training split as Suzuki et al. (evaluate.fid_reference).
    reference = FID_REFERENCES[cfg.fid_reference]
    real_images = _posts(cfg, ctx.stored_size, cfg.fid_reference).map(lambda p: p["image"])
    real_features = _gather([ctx.features(b.numpy()) for b in real_images.batch(cfg.batch_size)],
                            f"{cfg.fid_reference} images", cfg.input)
    # NDB bins: k-means on training colour images, downsampled raw pixels.
    train_images = _posts(cfg, ctx.stored_size, "train").map(lambda p: p["image"]).take(cfg.ndb_max_train)
    train_pixels = _gather([_fit(b, cfg.ndb_image_size) for b in train_images.batch(cfg.batch_size)],
                           "training images", cfg.input)
    if len(train_pixels) < cfg.ndb_bins:
        raise EvaluateError(f"evaluate.ndb_bins={cfg.ndb_bins} needs at least that many training images, but "
                            f"{cfg.input} has {len(train_pixels)}; lower evaluate.ndb_bins")
    bins = ndb.NDB(train_pixels, num_bins=cfg.ndb_bins, whiten=cfg.ndb_whiten, seed=cfg.seed)
    synth_real = {}  # judge image size -> (real test features, NDB bins on training features, real NDB)

    rows, figures = [], []
    report.heading("Diversity ablation (pix2pix variants)")
    for index, (variant, name) in enumerate(zip(variants, names)):
        posts = _limited(_posts(cfg, ctx.stored_size, "test", image_size=variant.image_size), cfg.max_images)
        reader = ctx.judge.reader(ctx.judge.size_for(variant.image_size)) if ctx.judge is not None else None
        features, pixels, readings, post_ids = [], [], [], []
        for k, batch in enumerate(posts.batch(cfg.batch_size)):
            # One test-time sample per test edge map; a fresh seed per batch keeps the draws independent.
            images, _ = variant.sample(data.to_signed_unit(batch["edge"]), seed=cfg.seed + 1 + k, num_samples=1)
            images = np.asarray(preprocessing.to_uint8(images[:, 0]))
            features.append(ctx.features(images))
            pixels.append(_fit(images, cfg.ndb_image_size))
            if reader is not None:
                readings.append(reader.read(images))
                post_ids += list(batch["post_id"].numpy())
        features = _gather(features, "test edge maps", cfg.input)
        pixels = np.concatenate(pixels)
        bin_result = bins.evaluate(pixels, alpha=cfg.ndb_alpha)

        first = posts.take(cfg.num_inputs)
        edges, reals = _stack(first, "edge", cfg.num_inputs), _stack(first, "image", cfg.num_inputs)
        outputs = np.concatenate([
            np.asarray(preprocessing.to_uint8(
                variant.sample(data.to_signed_unit(edges[s:s + cfg.batch_size]), seed=cfg.seed,
                               num_samples=cfg.samples_per_input)[0]))
            for s in range(0, len(edges), cfg.batch_size)])
        diversity = lpips.diversity(ctx.distance, outputs, batch_size=cfg.batch_size)
        row = {"variant": name, "folder": os.path.abspath(variant.folder), "diversity": variant.diversity,
               "num_clusters": int(len(variant.shares)), "fid": _fid(real_features, features),
               "ndb": bin_result["ndb"], "ndb_ratio": bin_result["ndb_ratio"], "jsd": bin_result["jsd"],
               "lpips": diversity["mean"], "lpips_stderr": diversity["stderr"], "lpips_pairs": diversity["num_pairs"],
               "generated_images": int(len(features)), "ndb_details": bin_result}
        if reader is not None:
            row["attributes"] = _pix2pix_attributes(ctx, reader, variant, synth_real, readings, post_ids, edges,
                                                    _stack(first, "post_id", cfg.num_inputs))
        rows.append(row)
        slug = f"pix2pix_{index}_{re.sub(r'[^a-z0-9]+', '_', variant.diversity.lower())}"
        grid = _rows_grid(edges[:GRID_INPUTS], outputs[:GRID_INPUTS], extra=reals[:GRID_INPUTS])
        ctx.figure(f"{slug}_grid.png", _png(grid))
        plot = bin_proportions_png(bin_result["train_proportions"], bin_result["generated_proportions"],
                                   bin_result["significant_bins"], f"NDB bins: {name}")
        ctx.figure(f"{slug}_ndb.png", plot)
        figures.append((grid, plot))
        ctx.images[f"pix2pix/{slug}_grid"] = grid
        for key in ("fid", "ndb", "jsd", "lpips"):
            if row[key] is not None:
                metric = {"fid": ctx.extractor.metric_name, "lpips": ctx.distance.metric_name}.get(key, key)
                ctx.scalars[f"pix2pix/{slug}/{metric}"] = row[key]
        if row.get("attributes"):
            _attribute_scalars(ctx, f"pix2pix/{slug}/synth", row["attributes"])

    report.table(["method", f"{ctx.fid_label} ↓", "NDB ↓", "JSD ↓", f"{ctx.lpips_label} ↑", "± s.e."],
                 [[r["variant"], r["fid"], r["ndb"], r["jsd"], r["lpips"], r["lpips_stderr"]] for r in rows],
                 caption=f"Table 1 layout (paper 2): edges → colour garments, NDB with K = {cfg.ndb_bins} bins; "
                 f"{ctx.fid_label} reference: {reference} (evaluate.fid_reference={cfg.fid_reference}), NDB "
                 "reference: training images")
    for row, variant, (grid, plot) in zip(rows, variants, figures):
        report.image(grid, f"samples {row['variant']}", f"{row['variant']}: per row the test edge map, the real "
                     f"garment, then {cfg.samples_per_input} samples (clusters drawn by their training shares).",
                     width=_display_width(grid, variant.image_size))
        report.image(plot, f"NDB bins {row['variant']}", f"{row['variant']}: share of training (blue) and generated "
                     f"(orange) images per bin; red marks: the {row['ndb']} significantly different bins.")
    report.bullets([
        f"{ctx.fid_label}: one sample per test edge map ({rows[0]['generated_images'] if rows else 0} images) against "
        f"{len(real_features)} {reference} (evaluate.fid_reference={cfg.fid_reference}), InceptionV3 pool "
        "features at 299×299, float64.",
        f"NDB / JSD: {cfg.ndb_bins} k-means bins (seed {cfg.seed}) fitted on {len(train_pixels)} training images as "
        f"{cfg.ndb_image_size}×{cfg.ndb_image_size} raw pixels{' (whitened)' if cfg.ndb_whiten else ''}; each "
        f"sample goes to its nearest centre; NDB counts bins whose two-proportion pooled z-test gives p < "
        f"{cfg.ndb_alpha:g}; JSD (nats) between the two bin histograms.",
        f"{ctx.lpips_label} diversity: N = {cfg.num_inputs} test edge maps × M = {cfg.samples_per_input} samples, "
        "mean over all pairs of samples of the same edge map ± standard error.",
        "Samples follow the test-time rule of Suzuki et al.: the cluster id is drawn with probability equal to its "
        "share of the training set (one cluster for none / ms).",
    ])
    if ctx.judge is not None:
        from pop_tf.stages import evaluate_attributes

        evaluate_attributes.report_pix2pix(ctx.attribute_report, rows)
    return {"variants": rows, "fid_real_images": int(len(real_features)),
            "fid_reference": {"split": cfg.fid_reference, "images": reference, "count": int(len(real_features))},
            "ndb_reference": {"split": "train", "images": "training colour images (k-means bins fitted on them)"},
            "ndb_train_images": int(len(train_pixels)),
            "table": [{k: r[k] for k in ("variant", "fid", "ndb", "jsd", "lpips", "lpips_stderr")} for r in rows]}


def _pix2pix_attributes(ctx: _Context, reader, variant: Pix2PixVariant, synth_real: dict, readings, post_ids,
                        edges: np.ndarray, edge_ids) -> dict:
    """The attribute figures of one pix2pix variant (see `evaluate_attributes.pix2pix_figures`)."""
    from pop_tf import data
    from pop_tf.metrics import ndb
    from pop_tf.metrics.attributes import Readings
    from pop_tf.stages import evaluate_attributes

    cfg = ctx.cfg
    size = reader.image_size
    if size not in synth_real:
        images = _posts(cfg, ctx.stored_size, "test").map(lambda p: p["image"]).batch(cfg.batch_size)
        test = np.concatenate([reader.read(b.numpy()).features for b in images])
        train = ctx.judge.train_features(size)
        bins = ndb.NDB(train, num_bins=min(cfg.ndb_bins, len(train)), seed=cfg.seed)
        # The training images (those with attributes, as the classifier saw them) or the test images;
        # real NDB stays the test images' (training images against their own bins would say nothing).
        real = train if cfg.fid_reference == "train" else test
        synth_real[size] = (real, bins, bins.evaluate(test, alpha=cfg.ndb_alpha))
    real, bins, real_ndb = synth_real[size]
    samples = np.concatenate([
        np.asarray(preprocessing.to_uint8(
            variant.sample(data.to_signed_unit(edges[s:s + cfg.batch_size]), seed=cfg.seed,
                           num_samples=cfg.attribute_samples)[0]))
        for s in range(0, len(edges), cfg.batch_size)])
    sample_readings = reader.read(samples.reshape((-1,) + samples.shape[2:]), batch_size=cfg.batch_size)
    return evaluate_attributes.pix2pix_figures(
        ctx.judge, size, post_ids, Readings.concatenate(readings),
        (sample_readings, samples.shape[0], samples.shape[1], list(edge_ids)), real, bins, real_ndb,
        reference=cfg.fid_reference)


_INCEPTION_NETWORKS = {"fid": "the 2015-12-05 FID Inception graph", "keras": "Keras InceptionV3"}


def _settings(cfg, extractor, distance) -> dict:
    return {
        "input": os.path.abspath(cfg.input), "ranker": os.path.abspath(cfg.ranker),
        "translator": os.path.abspath(cfg.translator) if cfg.translator else "",
        "pix2pix_variants": [os.path.abspath(v) for v in cfg.pix2pix_variants],
        "fid": {"metric": extractor.metric_name, "network": extractor.network, "weights": extractor.weights,
                "standard": extractor.standard, "input_size": 299, "features": 2048},
        "lpips": distance.settings,
        "diversity": {"num_inputs": cfg.num_inputs, "samples_per_input": cfg.samples_per_input,
                      "pairs": "all M(M-1)/2 pairs of outputs of the same input"},
        "ndb": {"bins": cfg.ndb_bins, "alpha": cfg.ndb_alpha, "whiten": cfg.ndb_whiten,
                "image_size": cfg.ndb_image_size, "max_train": cfg.ndb_max_train, "space": "raw pixels"},
        "fid_reference": {"translator": "test", "pix2pix": cfg.fid_reference},
        "uplift_threshold": cfg.uplift_threshold, "max_images": cfg.max_images, "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "attributes": {"truth": os.path.abspath(cfg.truth) if cfg.truth else "",
                       "image_size": cfg.attribute_image_size or "the generator's output size",
                       "steps": cfg.attribute_steps, "batch_size": cfg.attribute_batch_size,
                       "width": cfg.attribute_width, "max_train": cfg.attribute_max_train,
                       "samples_per_input": cfg.attribute_samples, "confidence": cfg.attribute_confidence,
                       "precision_recall_k": 3, "kid_kernel": "(x·y/d + 1)^3",
                       "diversity": "mean L2 distance of L2-normalised features, pairs of samples of one input",
                       "popularity": "pop_tf.synth.intrinsic_popularity on the read attributes, at the mid scale"},
    }


def _log_summary(metrics: dict, report_path: str) -> None:
    """One progress line with the headline figures, then the attribute judge's lines (synthetic data)."""
    from pop_tf.stages import evaluate_attributes

    parts = []
    translator = metrics.get("translator")
    if translator:
        for mode in MODES:
            if mode in translator["uplift"]:
                parts.append(f"{MODES[mode][0]} uplift {translator['uplift'][mode]['mean_uplift']:+.3f}")
        style_fid = translator["fid"]["style"]
        if style_fid is not None:
            parts.append(f"style {translator['fid']['metric']} {style_fid:.4g}")
        parts.append(f"{translator['lpips_diversity']['metric']} diversity "
                     f"{translator['lpips_diversity']['colour_to_colour']['mean']:.3f}")
    for row in (metrics.get("pix2pix") or {}).get("variants", []):
        parts.append(f"{row['diversity']}: NDB {row['ndb']}, JSD {row['jsd']:.3f}")
    log.info(f"{STAGE}: {'; '.join(parts)}; report in {report_path}")
    for line in evaluate_attributes.summary_lines(metrics):
        log.info(f"{STAGE}: {line}")


def _write_tensorboard(ctx: _Context, logdir: str) -> None:
    import tensorflow as tf

    writer = tf.summary.create_file_writer(logdir)
    with writer.as_default(step=0):
        for name, value in ctx.scalars.items():
            tf.summary.scalar(name, float(value))
        for name, values in ctx.histograms.items():
            tf.summary.histogram(name, np.asarray(values, np.float64))
        for name, image in ctx.images.items():
            tf.summary.image(name, np.asarray(image, np.uint8)[None])
    writer.close()


def run(cfg: config_lib.EvaluateConfig) -> dict:
    """Evaluates the translator and/or the pix2pix variants; returns the artifact paths."""
    from pop_tf import precision

    _check_config(cfg)
    check_stage(STAGE, cfg)
    cfg = dataclasses.replace(cfg, mixed_precision=precision.resolve(cfg.mixed_precision))
    stats = _score_stats(cfg.input)
    started = time.monotonic()
    import keras
    import tensorflow as tf

    from pop_tf import serving
    from pop_tf.metrics import fid, lpips
    from pop_tf.report import Report

    serving.read_model_card(cfg.ranker, expected_kind="ranker")
    # Random (weights=none) extractors then draw the same weights on every run: figures reproduce.
    keras.utils.set_random_seed(cfg.seed)
    with precision.policy(cfg.mixed_precision):
        extractor = fid.InceptionFeatures(cfg.inception_weights, standard=cfg.inception_standard,
                                          network=cfg.inception_network)
        distance = lpips.LPIPS(weights=cfg.lpips_weights, linear_weights=cfg.lpips_linear_weights or None,
                               standard=cfg.lpips_standard, net=cfg.lpips_net)
    staging = make_staging(cfg.output)
    report = Report("pop_tf evaluation")
    ctx = _Context(cfg=cfg, stored_size=int(stats["image_size"]), counts=stats["counts"], extractor=extractor,
                   distance=distance, ranker=tf.saved_model.load(cfg.ranker), staging=staging, report=report)
    settings = _settings(cfg, extractor, distance)
    from pop_tf.stages import evaluate_attributes

    truth_rows = evaluate_attributes.load_truth(cfg.truth)
    if truth_rows is not None:
        ctx.judge = evaluate_attributes.Judge(ctx, truth_rows)
        ctx.attribute_report = Report("")
        report.paragraph("This dataset has true garment attributes: the section 'Attribute judge (synthetic data)' at "
                         "the end reads every output's shape, colour, pattern and sleeve with a classifier trained on "
                         "real garments, and gives fid_synth, precision/recall_synth, diversity_synth and the true "
                         "popularity uplift. Those figures mean something without downloaded weights.",
                         css_class="note")
    report.paragraph(f"Score output {settings['input']}; ranker {settings['ranker']}. Extractors: "
                     f"{extractor.metric_name} ({_INCEPTION_NETWORKS[extractor.network]}, weights {extractor.weights}), "
                     f"{distance.metric_name} ({distance.settings['backbone']}, weights {distance.weights}).")
    if extractor.metric_name != "fid" or distance.metric_name != "lpips":
        random = "none" in (extractor.weights, distance.weights)
        report.paragraph(
            "FID-like / LPIPS-like figures come from other weights than the published ones: they rank pop_tf models "
            "against each other but are not comparable with papers."
            + (" Random (weights=none) extractors are used here, as in the demo and the tests: the figures check "
               "the plumbing and say nothing about image quality." if random else ""), css_class="note")
    metrics = {"settings": settings}
    if cfg.truth:
        metrics["ranker"] = _evaluate_ranker(ctx)
    if cfg.translator:
        metrics["translator"] = _evaluate_translator(ctx)
    if cfg.pix2pix_variants:
        metrics["pix2pix"] = _evaluate_pix2pix(ctx)
    if ctx.judge is not None and ctx.judge.classifiers:
        metrics["attribute_classifier"] = ctx.judge.classifiers
        evaluate_attributes.report_classifier(report, ctx.judge.classifiers)
        report.extend(ctx.attribute_report)
    metrics["seconds"] = round(time.monotonic() - started, 1)

    with open(os.path.join(staging, METRICS), "w") as f:
        json.dump(_plain(metrics), f, indent=2, sort_keys=True, allow_nan=False)
    with open(os.path.join(staging, REPORT), "w", encoding="utf-8") as f:
        f.write(report.render())
    config_lib.write_resolved(cfg, staging, CONFIG)
    install(staging, cfg.output, owned_prefixes=OWNED_PREFIXES, owned_names=OWNED_NAMES)
    logdir = cfg.logdir or os.path.join(os.path.dirname(os.path.abspath(cfg.output)), "logs", STAGE)
    _write_tensorboard(ctx, logdir)
    figures = sorted(n for n in os.listdir(cfg.output) if n.startswith(OWNED_PREFIXES) and n.endswith(".png"))
    _log_summary(metrics, os.path.join(cfg.output, REPORT))
    return {"metrics": os.path.join(cfg.output, METRICS), "report": os.path.join(cfg.output, REPORT),
            "config": os.path.join(cfg.output, CONFIG), "logs": logdir,
            "figures": [os.path.join(cfg.output, n) for n in figures]}


def _plain(value):
    """metrics as plain JSON: numpy values to Python, NaN/inf (e.g. the s.e. of one image) to null."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def main(argv=None) -> int:
    """`pop-tf evaluate [--workdir W] [--preset P] [--set key=value ...] [--dry-run]`."""
    parser = argparse.ArgumentParser(prog="pop-tf evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", help="pipeline work folder: inputs default to its score, train_ranker, "
                        "train_translator, cluster and synth folders, the output to WORKDIR/evaluate")
    parser.add_argument("--preset", help="demo, paper, or a JSON file of overrides")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. evaluate.num_inputs=20 (a key without a section "
                             "belongs to evaluate; repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    args = parser.parse_args(argv)
    try:
        # Inside a work folder: `contracts` says where (the translator SavedModel or the pix2pix
        # folder only when train_translator left it, the truth file only when synth wrote one).
        overrides = {STAGE: contracts.paths(STAGE, os.path.abspath(args.workdir))} if args.workdir else None
        cfg = config_lib.resolve(args.preset, args.sets, default_section=STAGE, overrides=overrides).evaluate
        if args.dry_run:
            print(json.dumps(config_lib.to_dict(cfg), indent=2, sort_keys=True))
            return 0
        paths = run(cfg)
    except Exception as e:  # a full disk may come wrapped by TensorFlow or Beam
        if not reportable(e):
            raise
        return report("pop-tf evaluate", e)
    print(json.dumps(paths, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    from pop_tf.cli import configure_logging
    configure_logging()
    sys.exit(main())
