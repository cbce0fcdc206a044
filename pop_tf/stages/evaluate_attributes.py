"""The evaluate stage's attribute evaluation: a judge that knows what a synthetic garment should show.

Runs only when `evaluate.truth` is a truth.jsonl with garment attributes (pop_tf's synth writes
shape, sleeve, colour and pattern per post); otherwise the stage logs one sentence and skips it.
The ImageNet-based FID / LPIPS stay what they are; these figures are added beside them.

The judge (`Judge`) trains the attribute classifier of `pop_tf.models.attribute_classifier` on the
training split's colour images at the judged generator's output size (or
`evaluate.attribute_image_size`), or loads it from the previous run's output folder when its key
(data fingerprint + settings) matches, and measures it on the held-out test split. Then:

- **DMIT translator** (`translator_figures`): style A→B keeps A's shape and sleeve and takes B's
  colour and pattern; content translation (B's content, A's style) takes B's shape and keeps A's
  colour and pattern, judged under both of evaluate's protocols (the popular label, `content`,
  and A's label as paper 1's B → A, `content_a_label`); the *true* popularity uplift, synth's
  popularity function on the attributes the classifier reads, beside a perfect transfer's (A's
  true shape and sleeve with B's true colour and pattern for style, the converse for content),
  so the style figure reads as a share of what is achievable (not every popular B has a better
  colour than A; the uplift starts from the classifier's reading of A, the perfect one from A's
  true attributes); random styles
  (`sample`): the share confidently coloured and the distinct confident colours among
  `attribute_samples` samples of one input; fid/kid/precision/recall_synth against the real
  popular test images of the FID set, and diversity_synth.
- **pix2pix variants** (`pix2pix_figures`): the same readers on edge map → colour samples, plus
  NDB/JSD with k-means bins on the classifier features of the training images.
- **Real references** beside every figure: the classifier's own accuracy and confident shares on
  real held-out images, real-vs-real fid/kid/precision/recall (two disjoint real sets), NDB of
  real test images, and the distance between distinct real garments for diversity.
- **Verdict**: outputs are "not recognisable as garments" when fewer than half are read with a
  confident colour, fewer than half show the expected shape, or precision_synth is below 0.1;
  the summary says so in plain words.
"""

import logging

import numpy as np

from pop_tf.metrics import attributes as attr
from pop_tf.truth import read_truth_rows

log = logging.getLogger(__name__)

CLASSIFIER_PREFIX = "attribute_classifier_"
FEATURE_DIM = 128
# attribute_steps=0: this many passes over the training images, within these bounds. Below about
# 400 batches of 64 the outlier exposure has not taken hold and uniform noise still reads as a
# confident grey (measured on 320 images); the demo's ~3,600 images get about 15 passes.
AUTO_PASSES, AUTO_MIN_STEPS, AUTO_MAX_STEPS = 15, 400, 900
# Below this mean true uplift of the perfect transfer, `share_of_perfect` is not given.
MIN_PERFECT_UPLIFT = 0.05
# The translation modes judged, in table order (keys of evaluate.MODES); the content ones expect B's shape.
TRANSLATION_MODES = ("style", "content", "content_a_label")


def load_truth(path: str):
    """{post_id: truth row} of the posts with attributes, or None (with a logged sentence) to skip."""
    if not path:
        log.info("evaluate: no truth file (evaluate.truth is empty), so the attribute evaluation (fid_synth, "
                 "attribute checks, true popularity uplift) is skipped; it needs pop_tf's synthetic dataset")
        return None
    rows = {k: r for k, r in read_truth_rows(path).items() if attr.has_attributes(r)}
    if not rows:
        log.info("evaluate: %s has no garment attributes (shape, sleeve, color, pattern), so the attribute "
                 "evaluation is skipped; it needs a truth.jsonl written by pop_tf's synth", path)
        return None
    return rows


class Judge:
    """The attribute readers of one evaluation, one per image size, and the real images' readings."""

    def __init__(self, ctx, rows: dict):
        self.ctx = ctx
        self.rows = rows
        self._readers = {}
        self._train = {}
        self.classifiers = {}  # "<S>px" -> card and held-out figures, for metrics.json

    def settings(self, size: int, num_images: int) -> dict:
        cfg = self.ctx.cfg
        steps = cfg.attribute_steps or int(np.clip(np.ceil(AUTO_PASSES * num_images / cfg.attribute_batch_size),
                                                   AUTO_MIN_STEPS, AUTO_MAX_STEPS))
        return {"image_size": int(size), "width": cfg.attribute_width, "feature_dim": FEATURE_DIM,
                "steps": steps, "batch_size": cfg.attribute_batch_size, "seed": cfg.seed,
                "max_train": cfg.attribute_max_train}

    def size_for(self, generator_size: int) -> int:
        return int(self.ctx.cfg.attribute_image_size or generator_size)

    def truth_of(self, post_ids) -> list:
        """Truth rows of the posts (None for a post without attributes)."""
        return [self.rows.get(p.decode("utf-8") if isinstance(p, bytes) else str(p)) for p in post_ids]

    def _split(self, split: str, size: int, limit: int = 0):
        """(post ids, uint8 [N, size, size, 3]) of a split's colour images that have truth rows."""
        import tensorflow as tf

        from pop_tf.models import attribute_classifier
        from pop_tf.stages import evaluate

        ids, images = [], []
        for batch in evaluate._posts(self.ctx.cfg, self.ctx.stored_size, split).batch(256):
            keep = [i for i, p in enumerate(batch["post_id"].numpy()) if p.decode("utf-8") in self.rows]
            if not keep:
                continue
            ids += [batch["post_id"][i].numpy().decode("utf-8") for i in keep]
            small = attribute_classifier.preprocess(tf.gather(batch["image"], keep), size) * 255.0
            images.append(np.asarray(tf.cast(tf.round(small), tf.uint8)))
            if limit and len(ids) >= limit:
                break
        if not images:
            return [], np.zeros([0, size, size, 3], np.uint8)
        images = np.concatenate(images)
        return (ids[:limit], images[:limit]) if limit else (ids, images)

    def reader(self, size: int) -> attr.AttributeReader:
        """The classifier at `size` px: loaded from the previous run when its key matches, else trained."""
        from pop_tf.models import attribute_classifier
        from pop_tf.stages import evaluate

        if size in self._readers:
            return self._readers[size]
        cfg = self.ctx.cfg
        ids, images = self._split("train", size, cfg.attribute_max_train)
        settings = self.settings(size, len(ids))
        if len(ids) < 2 * len(attribute_classifier.HEADS["color"]):
            raise evaluate.EvaluateError(
                f"only {len(ids)} training images of {cfg.input} have attributes in {cfg.truth}; the attribute "
                "classifier needs more (is evaluate.truth the truth.jsonl of this dataset?)")
        rows = self.truth_of(ids)
        fingerprint = attr.fingerprint(ids, images, attribute_classifier.labels_of(rows))
        key = attr.cache_key(fingerprint, settings)
        name = f"{CLASSIFIER_PREFIX}{size}px"
        reader = attr.AttributeReader.load(cfg.output, name, key)
        if reader is not None:
            log.info("evaluate: attribute classifier at %d px loaded from %s (same data and settings)", size,
                     cfg.output)
        else:
            log.info("evaluate: training the attribute classifier at %d px on %d training images", size, len(ids))
            reader = attr.train_reader(ids, images, rows, settings, data_fingerprint=fingerprint)
        test_ids, test_images = self._split("test", size)
        held_out = attr.held_out_accuracy(reader.read(test_images), self.truth_of(test_ids))
        reader.card["held_out"] = held_out
        reader.save(self.ctx.staging, name)
        self.classifiers[f"{size}px"] = {**reader.card, "files": [name + ".weights.h5", name + ".json"]}
        log.info("evaluate: attribute classifier at %d px, held-out accuracy: %s", size,
                 ", ".join(f"{h} {held_out[h]:.3f}" for h in ("shape", "color", "color_either", "pattern", "sleeve")))
        self._readers[size] = reader
        self._train[size] = images
        return reader

    def train_features(self, size: int) -> np.ndarray:
        """Classifier features of the training images (the NDB bins are fitted on them)."""
        reader = self.reader(size)
        return reader.read(self._train[size], batch_size=self.ctx.cfg.attribute_batch_size).features


def _shares(read: list, rows: list, head: str) -> float:
    return attr.share([r == row[head] for r, row in zip(read, rows)])


def _sample_figures(readings: attr.Readings, count: int, per_input: int, input_rows: list, real: np.ndarray,
                    threshold: float, seed: int) -> dict:
    """Random styles of `count` inputs × `per_input` samples: colour confidence, distinct colours, diversity."""
    from pop_tf.metrics import feature_diversity

    colours = readings.probs["color"].reshape(count, per_input, -1)
    distinct = attr.distinct_confident_colours(colours, threshold)
    shapes = np.asarray(readings.names("shape")).reshape(count, per_input)
    expected = [[row["shape"]] * per_input for row in input_rows]
    diversity = feature_diversity.diversity(readings.features.reshape(count, per_input, -1))
    result = {"inputs": int(count), "samples_per_input": int(per_input),
              "confident_colour_share": attr.share(readings.confident("color", threshold)),
              "confident_shape_share": attr.share(readings.confident("shape", threshold)),
              "keeps_shape": attr.share(shapes == np.asarray(expected)),
              "distinct_confident_colours": float(distinct.mean()), "distinct_per_input": distinct.tolist(),
              "diversity_synth": diversity["mean"], "diversity_synth_stderr": diversity["stderr"],
              **attr.feature_figures(real, readings.features, seed)}
    result["verdict"] = attr.verdict(result["confident_colour_share"], result["keeps_shape"],
                                     result["precision_synth"])
    return result


def real_reference(held_out: dict, fid_set: np.ndarray, other_real: np.ndarray, seed: int) -> dict:
    """What real images score: the classifier's held-out shares, real-vs-real feature figures, real pair distance."""
    from pop_tf.metrics import feature_diversity

    result = {"confident_colour_share": held_out["confident_colour_share"],
              "confident_shape_share": held_out["confident_shape_share"],
              "colour_read": held_out["color_either"], "shape_read": held_out["shape"],
              "diversity_synth": None, **(attr.feature_figures(fid_set, other_real, seed) if len(other_real) else {})}
    if len(fid_set) >= 2:
        result["diversity_synth"] = feature_diversity.real_pairs_distance(fid_set)["mean"]
    return result


def translator_figures(judge: Judge, size: int, a_ids, b_ids, outputs: dict, ranker_uplift: dict, samples: dict,
                       fid_set: np.ndarray, other_real: np.ndarray) -> dict:
    """The attribute checks of DMIT (see the module docstring).

    Args:
        a_ids, b_ids: post ids of the unpopular inputs A and their popular references B, in order.
        outputs: {"style": Readings, "content": Readings} of translate(A, B) and translate(B, A), optionally
            "content_a_label" (translate(B, A) under A's label), and {"inputs": Readings} of the A images
            themselves (the true uplift's starting point).
        ranker_uplift: {mode: popularity_uplift dict}: the ranker's figures of each mode, kept beside.
        samples: {task: (Readings of N×M samples, N, M, input post ids)}.
        fid_set: features of the real popular test images of the FID set; other_real: of other real
            popular test images (the references), for the real-vs-real reference; may be empty.
    """
    cfg = judge.ctx.cfg
    threshold = cfg.attribute_confidence
    a_rows, b_rows = judge.truth_of(a_ids), judge.truth_of(b_ids)
    known = [i for i, (a, b) in enumerate(zip(a_rows, b_rows)) if a is not None and b is not None]
    a_rows, b_rows = [a_rows[i] for i in known], [b_rows[i] for i in known]
    true_before = attr.popularities(a_rows)
    # The uplift starts from what the judge reads in A itself: a translator that changes nothing
    # scores exactly 0, and reading errors shared by A and an output that keeps A's shape cancel
    # (with A's true attributes instead, every misread of an unpopular A would look like a gain).
    read_inputs = outputs["inputs"].attributes()
    before = attr.popularities([read_inputs[i] for i in known])
    result = {"image_size": int(size), "confidence": threshold, "pairs": len(known)}
    modes = [mode for mode in TRANSLATION_MODES if mode in outputs]
    for mode in modes:
        readings = outputs[mode]
        readings = attr.Readings({h: p[known] for h, p in readings.probs.items()}, readings.features[known])
        read = readings.attributes()
        shape_from, colour_from = (a_rows, b_rows) if mode == "style" else (b_rows, a_rows)
        perfect = [attr.perfect_style(a, b) if mode == "style" else attr.perfect_content(a, b)
                   for a, b in zip(a_rows, b_rows)]
        colour_key = "takes_colour" if mode == "style" else "keeps_colour"
        pattern_key = "takes_pattern" if mode == "style" else "keeps_pattern"
        shape_key = "keeps_shape" if mode == "style" else "takes_shape"
        sleeve_key = "keeps_sleeve" if mode == "style" else "takes_sleeve"
        figures = {
            shape_key: _shares([r["shape"] for r in read], shape_from, "shape"),
            sleeve_key: _shares([r["sleeve"] for r in read], shape_from, "sleeve"),
            colour_key: attr.share(attr.colour_matches([r["color"] for r in read], colour_from)),
            pattern_key: _shares([r["pattern"] for r in read], colour_from, "pattern"),
            "confident_colour_share": attr.share(readings.confident("color", threshold)),
            "confident_shape_share": attr.share(readings.confident("shape", threshold)),
            **attr.feature_figures(fid_set, readings.features, cfg.seed),
        }
        if known:
            after, ideal = attr.popularities(read), attr.popularities(perfect)
            true = attr.uplift_summary(before, after)
            best = attr.uplift_summary(true_before, ideal)
            figures["true_uplift"] = true
            figures["perfect_uplift"] = best
            # A ratio of two small means is noise: when a perfect transfer gains almost nothing (popular
            # references whose colours are hardly better than the inputs'), no ratio is given.
            figures["share_of_perfect"] = (true["mean_uplift"] / best["mean_uplift"]
                                           if best["mean_uplift"] >= MIN_PERFECT_UPLIFT else None)
            # Well defined whatever the perfect gain: how far each output's true popularity is from
            # what the perfect translation of its pair would have (0 for a perfect translator).
            figures["gap_to_perfect"] = float(np.mean(np.abs(after - ideal)))
        figures["ranker_uplift"] = {k: ranker_uplift[mode][k] for k in ("mean_uplift", "share_improved")}
        figures["verdict"] = attr.verdict(figures["confident_colour_share"], figures[shape_key],
                                          figures["precision_synth"])
        result[mode] = figures
    result["random_styles"] = {}
    for task, (readings, count, per_input, input_ids) in samples.items():
        rows = judge.truth_of(input_ids)
        if any(r is None for r in rows):
            continue
        result["random_styles"][task] = _sample_figures(readings, count, per_input, rows, fid_set, threshold,
                                                        cfg.seed)
    held_out = judge.classifiers[f"{size}px"]["held_out"]
    result["real_reference"] = real_reference(held_out, fid_set, other_real, cfg.seed)
    parts = [(mode, result[mode]["verdict"]) for mode in modes]
    parts += [(f"random styles {task}", r["verdict"]) for task, r in result["random_styles"].items()]
    result["verdict"] = _combined(parts)
    return result


def pix2pix_figures(judge: Judge, size: int, post_ids, readings: attr.Readings, samples, real: np.ndarray,
                    bins, real_ndb: dict, reference: str = "test") -> dict:
    """The attribute readers for one pix2pix variant: one sample per test edge map, plus N×M samples.

    Args:
        post_ids: the test posts whose edge maps produced `readings` (in order).
        samples: (Readings of N×M samples, N, M, input post ids).
        real: features of the real colour images of the `reference` split (evaluate.fid_reference);
            bins: an `ndb.NDB` on training features.
    """
    cfg = judge.ctx.cfg
    threshold = cfg.attribute_confidence
    rows = judge.truth_of(post_ids)
    known = [i for i, r in enumerate(rows) if r is not None]
    shapes = readings.names("shape")
    ndb_result = bins.evaluate(readings.features, alpha=cfg.ndb_alpha)
    result = {"image_size": int(size), "confidence": threshold, "reference": reference,
              "confident_colour_share": attr.share(readings.confident("color", threshold)),
              "confident_shape_share": attr.share(readings.confident("shape", threshold)),
              "keeps_shape": attr.share([shapes[i] == rows[i]["shape"] for i in known]) if known else None,
              **attr.feature_figures(real, readings.features, cfg.seed),
              "ndb_synth": ndb_result["ndb"], "jsd_synth": ndb_result["jsd"],
              "ndb_synth_ratio": ndb_result["ndb_ratio"],
              "ndb_synth_real": real_ndb["ndb"], "jsd_synth_real": real_ndb["jsd"]}
    sample_readings, count, per_input, input_ids = samples
    input_rows = judge.truth_of(input_ids)
    if all(r is not None for r in input_rows):
        sampled = _sample_figures(sample_readings, count, per_input, input_rows, real, threshold, cfg.seed)
        result.update({k: sampled[k] for k in ("distinct_confident_colours", "distinct_per_input", "diversity_synth",
                                               "diversity_synth_stderr", "samples_per_input", "inputs")})
        result["samples_confident_colour_share"] = sampled["confident_colour_share"]
    held_out = judge.classifiers[f"{size}px"]["held_out"]
    result["real_reference"] = real_reference(held_out, real[0::2], real[1::2], cfg.seed)
    result["verdict"] = attr.verdict(result["confident_colour_share"], result["keeps_shape"],
                                     result["precision_synth"])
    return result


def _combined(parts) -> dict:
    reasons = [f"{name}: {'; '.join(v['reasons'])}" for name, v in parts if not v["recognisable"]]
    return {"recognisable": not reasons, "reasons": reasons}


# ---------------------------------------------------------------------------------------------
# Report and summary
# ---------------------------------------------------------------------------------------------


def _pct(value) -> str:
    return "–" if value is None else f"{value:.0%}"


def not_recognisable_sentence(who: str, verdict: dict) -> str:
    return f"{who}: outputs are not recognisable as garments ({'; '.join(verdict['reasons'])})"


def report_classifier(report, classifiers: dict) -> None:
    report.heading("Attribute judge (synthetic data)")
    report.paragraph("A small CNN trained on the training split's real garments and their true attributes "
                     "(truth.jsonl) reads shape, colour, pattern and sleeve of generated images; its penultimate "
                     "features give the *_synth figures below. They need no download and compare pop_tf models on "
                     "pop_tf's synthetic data only; they are not comparable with published FID/KID values.")
    report.table(["classifier", "training images", "held-out images", "shape", "colour (either)", "colour (main)",
                  "pattern", "sleeve", "confident colour", "confident shape"],
                 [[size, c["train_images"], c["held_out"]["images"], c["held_out"]["shape"],
                   c["held_out"]["color_either"], c["held_out"]["color"], c["held_out"]["pattern"],
                   c["held_out"]["sleeve"], c["held_out"]["confident_colour_share"],
                   c["held_out"]["confident_shape_share"]] for size, c in classifiers.items()],
                 caption="Attribute classifier: accuracy on real held-out (test split) garments")
    report.bullets([
        "Colour (either): the read colour is the garment's colour or, for a two-colour print, its second colour; "
        "stripes and checks of two colours have no readable main colour at 32 px. Colour (main): the main colour "
        "only.",
        "Pattern is hard to read at 32 px (fine stripes and checks blur into a tone): pattern figures below are "
        "bounded by the classifier's held-out pattern accuracy.",
        "Confident shape: the most probable shape has at least the confidence threshold. Confident colour: the two "
        "most probable colours together have at least the threshold (a synthetic garment has one colour or the "
        "two of a print, and a two-colour print rightly splits the belief); noise spreads it over all twelve. "
        "Training used light augmentation (flips, shifts, blur, faint noise) and outlier exposure (uniform noise "
        "and strongly speckled garments with uniform targets), so pixel noise is read without confidence.",
    ])


def report_translator(report, result: dict, fid_label_real: str) -> None:
    threshold = result["confidence"]
    if not result["verdict"]["recognisable"]:
        report.paragraph(not_recognisable_sentence("DMIT translator", result["verdict"]), css_class="warning")
    from pop_tf.stages.evaluate import MODES

    judged = [(MODES[mode][0], result[mode]) for mode in TRANSLATION_MODES if mode in result]
    rows = []
    for mode, figures in judged:
        shape = figures.get("keeps_shape", figures.get("takes_shape"))
        colour = figures.get("takes_colour", figures.get("keeps_colour"))
        pattern = figures.get("takes_pattern", figures.get("keeps_pattern"))
        true, best = figures.get("true_uplift", {}), figures.get("perfect_uplift", {})
        rows.append([mode, shape, colour, pattern, figures["confident_colour_share"], true.get("mean_uplift"),
                     true.get("share_improved"), best.get("mean_uplift"), figures.get("share_of_perfect"),
                     figures.get("gap_to_perfect"), figures["ranker_uplift"]["mean_uplift"]])
    report.table(["mode", "shape as expected", "colour as expected", "pattern as expected",
                  f"confident colour (≥ {threshold:g})", "true uplift", "true share improved",
                  "perfect transfer's uplift", "share of perfect", "gap to perfect ↓", "ranker uplift"], rows,
                 caption=f"Attribute checks of {result['pairs']} unpopular → popular translations")
    feature_rows = [[name, f["fid_synth"], f["kid_synth"], f["precision_synth"], f["recall_synth"],
                     f["confident_colour_share"], f.get("distinct_confident_colours"), f.get("diversity_synth")]
                    for name, f in judged + [(f"random styles {t}", r) for t, r in result["random_styles"].items()]]
    ref = result["real_reference"]
    feature_rows.append(["real popular garments (reference)", ref.get("fid_synth"), ref.get("kid_synth"),
                         ref.get("precision_synth"), ref.get("recall_synth"), ref["confident_colour_share"], None,
                         ref["diversity_synth"]])
    per = next(iter(result["random_styles"].values()), {}).get("samples_per_input")
    report.table(["outputs", "fid_synth ↓", "kid_synth ↓", "precision_synth ↑", "recall_synth ↑",
                  "confident colour", f"distinct colours / {per or 'M'} samples", "diversity_synth"], feature_rows,
                 caption="Quality and diversity in the attribute classifier's feature space")
    report.bullets([
        "Style A→B = translate(A, B, popular/color): expected A's shape and sleeve with B's colour and pattern. "
        "Content = translate(B, A): expected B's shape and sleeve with A's colour and pattern, under the popular "
        "label (content, popular label) and under A's label unpopular/color (content B→A, A's label: paper 1's "
        "row, as DMIT's s2w_enc). Shares count the classifier's most probable reading.",
        "True uplift: synth's hidden popularity function (pop_tf.synth.intrinsic_popularity) applied to the "
        "attributes the classifier reads from the output, minus its value for the attributes it reads from A "
        "(so a translator that changes nothing scores 0); both at the mid scale (the classifier does not read "
        "size). Perfect transfer: the same function on A's true shape and sleeve with B's true colour and "
        "pattern (content: B's shape and sleeve with A's colour and pattern), minus A's true value; share of "
        f"perfect = true mean uplift / perfect mean uplift (not given when the perfect transfer gains under "
        f"{MIN_PERFECT_UPLIFT:g}); gap to perfect = mean |true popularity of the output − that of the perfect "
        "translation of its pair|. The ranker uplift is pop_tf's own ranker, which textures can fool.",
        f"fid_synth / kid_synth (cubic-kernel MMD², unbiased) / precision_synth and recall_synth (k = 3 nearest-"
        f"neighbour manifolds, Kynkäänniemi et al. 2019) against the {fid_label_real}; the reference row compares "
        "two disjoint sets of real popular test images, i.e. what a perfect generator would score at these sizes.",
        "Random styles: `sample` with prior styles; distinct colours counts the different colours read with "
        "confidence among the samples of one input (mean over inputs). diversity_synth: mean distance between "
        "L2-normalised features of samples of the same input (0..2); the reference is two distinct real garments.",
    ])


def report_pix2pix(report, rows: list) -> None:
    rows = [r for r in rows if r.get("attributes")]
    if not rows:
        return
    for r in rows:
        if not r["attributes"]["verdict"]["recognisable"]:
            report.paragraph(not_recognisable_sentence(f"pix2pix {r['variant']}", r["attributes"]["verdict"]),
                             css_class="warning")
    first = rows[0]["attributes"]
    split = first.get("reference", "test")
    report.table(["method", "confident colour", "shape as edge map", "distinct colours / "
                  f"{first.get('samples_per_input', 'M')} samples", "fid_synth ↓", "kid_synth ↓",
                  "precision_synth ↑", "recall_synth ↑", "NDB_synth ↓", "JSD_synth ↓", "diversity_synth"],
                 [[r["variant"], a["confident_colour_share"], a["keeps_shape"], a.get("distinct_confident_colours"),
                   a["fid_synth"], a["kid_synth"], a["precision_synth"], a["recall_synth"], a["ndb_synth"],
                   a["jsd_synth"], a.get("diversity_synth")] for r in rows for a in [r["attributes"]]]
                 + [[f"real {split} garments (reference)", first["real_reference"]["confident_colour_share"],
                     first["real_reference"]["shape_read"], None, first["real_reference"].get("fid_synth"),
                     first["real_reference"].get("kid_synth"), first["real_reference"].get("precision_synth"),
                     first["real_reference"].get("recall_synth"), first["ndb_synth_real"], first["jsd_synth_real"],
                     first["real_reference"]["diversity_synth"]]],
                 caption="pix2pix variants read by the attribute judge (edge maps → colour garments)")
    real = {"test": "all real colour test images",
            "train": "the real colour training images the classifier was trained on"}[split]
    report.bullets([
        f"One sample per test edge map against {real} (evaluate.fid_reference={split}); NDB/JSD with the same "
        "number of k-means bins fitted on the classifier features of the training images; the reference row "
        f"gives real {split} images (fid/kid/precision/recall: even vs odd {split} images; NDB/JSD: the real "
        "test images against the training bins).",
        "Shape as edge map: the read shape is the shape of the garment the edge map was drawn from.",
    ])


def summary_lines(metrics: dict) -> list:
    """Plain-language lines of the attribute evaluation for the run summary (empty when it did not run)."""
    lines = []
    for size, c in (metrics.get("attribute_classifier") or {}).items():
        h = c["held_out"]
        lines.append(f"attribute judge ({size}, real held-out): shape {h['shape']:.2f}, colour {h['color_either']:.2f} "
                     f"(main colour {h['color']:.2f}), pattern {h['pattern']:.2f}, sleeve {h['sleeve']:.2f}")
    a = (metrics.get("translator") or {}).get("attributes")
    if a:
        s = a["style"]
        if "true_uplift" in s:
            perfect = s["perfect_uplift"]["mean_uplift"]
            share_of = (f" = {s['share_of_perfect']:.0%} of a perfect style transfer's {perfect:+.3f}"
                        if s.get("share_of_perfect") is not None else
                        f" (a perfect style transfer gains only {perfect:+.3f} here: no ratio)")
            lines.append(f"style translation, true popularity: mean uplift {s['true_uplift']['mean_uplift']:+.3f}"
                         f"{share_of}, {s['true_uplift']['share_improved']:.0%} improved, mean gap to the perfect "
                         f"transfer {s['gap_to_perfect']:.3f}; keeps A's shape {_pct(s['keeps_shape'])}, takes B's "
                         f"colour {_pct(s['takes_colour'])}")
            for mode, who in (("content", "content translation (popular label)"),
                              ("content_a_label", "content translation B→A (A's label, paper 1)")):
                c = a.get(mode)
                if c and "true_uplift" in c:
                    lines.append(f"{who}, true popularity: mean uplift {c['true_uplift']['mean_uplift']:+.3f}, "
                                 f"{c['true_uplift']['share_improved']:.0%} improved; takes B's shape "
                                 f"{_pct(c['takes_shape'])}, keeps A's colour {_pct(c['keeps_colour'])}")
        for task, r in a["random_styles"].items():
            lines.append(f"random styles {task}: {_pct(r['confident_colour_share'])} confidently coloured, "
                         f"{r['distinct_confident_colours']:.1f} distinct colours per {r['samples_per_input']} "
                         "samples; "
                         f"fid_synth {_num(r['fid_synth'])}, precision_synth {_num(r['precision_synth'])}, "
                         f"recall_synth {_num(r['recall_synth'])}")
        if not a["verdict"]["recognisable"]:
            lines.append(not_recognisable_sentence("DMIT translator", a["verdict"]))
    for row in (metrics.get("pix2pix") or {}).get("variants", []):
        p = row.get("attributes")
        if not p:
            continue
        lines.append(f"pix2pix {row['variant']}: {_pct(p['confident_colour_share'])} confidently coloured, shape "
                     f"{_pct(p['keeps_shape'])}, {_num(p.get('distinct_confident_colours'), 1)} distinct colours; "
                     f"fid_synth {_num(p['fid_synth'])}, precision_synth {_num(p['precision_synth'])}, JSD_synth "
                     f"{_num(p['jsd_synth'])}, diversity_synth {_num(p.get('diversity_synth'))}")
        if not p["verdict"]["recognisable"]:
            lines.append(not_recognisable_sentence(f"pix2pix {row['variant']}", p["verdict"]))
    return lines


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}g}" if abs(value) >= 1000 else f"{value:.{digits}f}"
