"""Attribute readings of generated garments, on the embedded synthetic dataset (`*_synth` figures).

pop_tf's synthetic dataset records every garment's shape, sleeve, colour and pattern in
`truth.jsonl`. An attribute classifier trained once on the real training images
(`pop_tf.models.attribute_classifier`) then reads what a generated garment shows, and its
penultimate features give FID / KID / precision / recall / NDB / diversity a space in which a
garment is near a garment and pixel noise is far from both. This module holds:

- `AttributeReader`: the trained classifier with its settings, saved and loaded as a
  `.weights.h5` plus a `.json` card whose `key` names the training data and settings (a cache:
  the same key is never trained twice);
- the readings' figures: per-head accuracy on held-out real images, confident-colour share,
  distinct confident colours among the samples of one input, attribute agreement of
  translations;
- `true_popularity`: synth's hidden popularity function (`pop_tf.synth.intrinsic_popularity`)
  applied to attributes, for the *true* popularity uplift of a translation — a figure no
  generator can game by fooling pop_tf's own ranker;
- `feature_figures`: fid_synth, kid_synth, precision_synth and recall_synth of two feature sets;
- `verdict`: whether outputs are recognisable as garments at all.

Colour of two-colour prints. Stripes (55 % / 45 %) and checks (a symmetric two-colour weave) whose
second colour is a colour rather than off-white have no readable main colour at 32 px: fine
stripes and checks blend into a mixed tone, and the classifier reads one of the two colours, or
the colour they blend into, about as often as the main one. `colour_matches` therefore accepts
either of a garment's colours, and held-out accuracy is given three ways: `color` (the main
colour), `color_either` (either colour) and `color_one_colour_garments` (the main colour of solid
garments and prints on off-white, whose colour is well defined).

Confidence. A shape is read with confidence when its probability is at least the threshold (0.8);
a colouring when the two likeliest colours together reach it (`colour_confidence`), since a
two-colour print splits the belief between its colours while noise spreads it over all twelve.

The scale term. Synth's popularity has a small continuous term for how much of the frame the
garment fills (±0.17 over the whole range); the classifier does not read size and no translation
is asked to change it, so `true_popularity` uses the mid scale (term 0) unless a scale is given,
for inputs and outputs alike: a true uplift is then a change of shape, sleeve, colour or pattern.
"""

import dataclasses
import json
import logging
import os

import numpy as np

from pop_tf import synth

log = logging.getLogger(__name__)

# Confidence at which a reading counts as "confident" (the issue's ≥ 0.8).
CONFIDENCE = 0.8
# Below these, outputs are "not recognisable as garments": fewer than half read with a confident
# colour, fewer than half read as the expected shape, or hardly any inside the real manifold.
MIN_CONFIDENT_COLOUR_SHARE = 0.5
MIN_SHAPE_SHARE = 0.5
MIN_PRECISION = 0.1
# Bumped when the architecture or the training recipe changes, so old caches are not reused.
CLASSIFIER_VERSION = 1
ATTRIBUTES = ("shape", "sleeve", "color", "pattern")


def has_attributes(row: dict) -> bool:
    """Whether a truth.jsonl row carries the attributes (pop_tf's synth writes them; other truths may not)."""
    return all(key in row for key in ATTRIBUTES)


# ---------------------------------------------------------------------------------------------
# Synth's popularity on attributes
# ---------------------------------------------------------------------------------------------


def true_popularity(shape: str, sleeve: str, color: str, pattern: str, scale: float = None) -> float:
    """`synth.intrinsic_popularity` of a garment with these attributes (mid scale unless given)."""
    if scale is None:
        scale = sum(synth.SCALE_RANGE) / 2
    return float(synth.SHAPE_EFFECT[shape] + synth.SLEEVE_EFFECT[sleeve] + synth.COLOR_EFFECT[color]
                 + synth.PATTERN_EFFECT[pattern]
                 + synth.SCALE_EFFECT_PER_UNIT * (scale - sum(synth.SCALE_RANGE) / 2))


def popularities(attributes) -> np.ndarray:
    """`true_popularity` at mid scale of each {shape, sleeve, color, pattern} dict: float64 [N]."""
    return np.asarray([true_popularity(a["shape"], a["sleeve"], a["color"], a["pattern"]) for a in attributes],
                      np.float64)


def uplift_summary(before, after) -> dict:
    """Mean uplift (after − before) ± standard error, share improved (strictly), means before/after."""
    before, after = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if before.shape != after.shape or before.ndim != 1 or before.size == 0:
        raise ValueError(f"before and after must be 1-D of the same non-zero length, got {before.shape} and "
                         f"{after.shape}")
    uplift = after - before
    return {"count": int(len(uplift)), "mean_before": float(before.mean()), "mean_after": float(after.mean()),
            "mean_uplift": float(uplift.mean()),
            "stderr": float(uplift.std(ddof=1) / np.sqrt(len(uplift))) if len(uplift) > 1 else None,
            "share_improved": float(np.mean(uplift > 0))}


def perfect_style(a: dict, b: dict) -> dict:
    """What a perfect style transfer A→B shows: A's shape and sleeve, B's colour and pattern."""
    return {"shape": a["shape"], "sleeve": a["sleeve"], "color": b["color"], "pattern": b["pattern"]}


def perfect_content(a: dict, b: dict) -> dict:
    """What a perfect content translation (B's content, A's style) shows: B's shape and sleeve, A's colours."""
    return {"shape": b["shape"], "sleeve": b["sleeve"], "color": a["color"], "pattern": a["pattern"]}


# ---------------------------------------------------------------------------------------------
# Readings
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Readings:
    """What the classifier read from N images: per head softmax [N, C], and features [N, D]."""

    probs: dict
    features: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def labels(self, head: str) -> np.ndarray:
        return np.argmax(self.probs[head], axis=1)

    def names(self, head: str) -> list:
        from pop_tf.models.attribute_classifier import HEADS

        return [HEADS[head][i] for i in self.labels(head)]

    def confident(self, head: str, threshold: float = CONFIDENCE) -> np.ndarray:
        """bool [N]: read with confidence (for colour: see `colour_confidence`)."""
        if head == "color":
            return colour_confidence(self.probs[head]) >= threshold
        return np.max(self.probs[head], axis=1) >= threshold

    def attributes(self) -> list:
        """One {shape, sleeve, color, pattern} dict per image, by the most probable class of each head."""
        columns = {head: self.names(head) for head in ATTRIBUTES}
        return [{head: columns[head][i] for head in ATTRIBUTES} for i in range(len(self))]

    @staticmethod
    def concatenate(parts) -> "Readings":
        parts = list(parts)
        return Readings(probs={h: np.concatenate([p.probs[h] for p in parts]) for h in parts[0].probs},
                        features=np.concatenate([p.features for p in parts]))


def colour_confidence(color_probs) -> np.ndarray:
    """How sure the classifier is of a garment's colouring: the total probability of its two likeliest colours.

    A synthetic garment is one colour, or the two colours of a print; for a two-colour print the
    classifier rightly splits its belief between them (see the module docstring), so the top
    colour alone would call every such real garment unsure. Noise spreads belief over all twelve.
    """
    probs = np.asarray(color_probs)
    return np.sum(np.sort(probs, axis=-1)[..., -2:], axis=-1)


def colour_matches(read_colours, rows) -> np.ndarray:
    """bool [N]: the read colour names one of the garment's colours (its colour, or a print's second colour)."""
    return np.asarray([c == row["color"] or c == row.get("secondary_color") for c, row in zip(read_colours, rows)],
                      bool)


def share(mask) -> float:
    mask = np.asarray(mask, bool)
    return float(mask.mean()) if mask.size else None


def confident_colour_share(readings: Readings, threshold: float = CONFIDENCE) -> float:
    """Share of images whose colouring the classifier reads with confidence ≥ threshold (`colour_confidence`)."""
    return share(readings.confident("color", threshold))


def distinct_confident_colours(color_probs, threshold: float = CONFIDENCE) -> np.ndarray:
    """Per input, how many different colours are read with confidence among its M samples.

    Args:
        color_probs: [N, M, C] colour softmax of M samples of each of N inputs.

    Returns:
        int [N]: distinct most probable colours among the samples read with confidence
        (`colour_confidence` ≥ threshold); a sample read without confidence adds none.
    """
    probs = np.asarray(color_probs)
    if probs.ndim != 3:
        raise ValueError(f"color_probs must be [N, M, C], got shape {probs.shape}")
    confident = colour_confidence(probs) >= threshold
    labels = probs.argmax(axis=2)
    return np.asarray([len(set(labels[i][confident[i]].tolist())) for i in range(len(probs))], np.int64)


def held_out_accuracy(readings: Readings, rows) -> dict:
    """Per head accuracy on real held-out images with truth rows, plus `color_either` and confident shares."""
    from pop_tf.models.attribute_classifier import labels_of

    labels = labels_of(rows)
    result = {head: share(readings.labels(head) == labels[head]) for head in labels}
    result["color_either"] = share(colour_matches(readings.names("color"), rows))
    # Garments of one colour (solid, or a print on off-white) have a well-defined colour to read.
    single = np.asarray([row["pattern"] == "solid" or row.get("secondary_color") == "off_white" for row in rows], bool)
    result["color_one_colour_garments"] = share((readings.labels("color") == labels["color"])[single])
    result["confident_colour_share"] = confident_colour_share(readings)
    result["confident_shape_share"] = share(readings.confident("shape"))
    result["images"] = len(rows)
    return result


# ---------------------------------------------------------------------------------------------
# Feature-space figures
# ---------------------------------------------------------------------------------------------


def feature_figures(real, generated, seed: int = 0) -> dict:
    """fid_synth, kid_synth (± std over subsets), precision_synth and recall_synth (k = 3).

    Each figure is None when a set is too small for it (FID/KID: 2 rows, precision/recall: 4).
    """
    from pop_tf.metrics import fid, kid, precision_recall

    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    result = {"fid_synth": None, "kid_synth": None, "kid_synth_std": None, "precision_synth": None,
              "recall_synth": None, "real_images": int(len(real)), "generated_images": int(len(generated))}
    if min(len(real), len(generated)) >= 2:
        result["fid_synth"] = fid.fid_from_activations(real, generated)
        k = kid.kid(real, generated, seed=seed)
        result.update(kid_synth=k["mean"], kid_synth_std=k["std"])
    if min(len(real), len(generated)) > precision_recall.DEFAULT_K:
        pr = precision_recall.precision_recall(real, generated)
        result.update(precision_synth=pr["precision"], recall_synth=pr["recall"])
    return result


def verdict(confident_colour: float, shape_share: float = None, precision: float = None) -> dict:
    """Whether outputs are recognisable as garments, and if not, which reading says so.

    Returns:
        {"recognisable": bool, "reasons": [sentences]} — each reason names a figure and its floor.
    """
    reasons = []
    if confident_colour is not None and confident_colour < MIN_CONFIDENT_COLOUR_SHARE:
        reasons.append(f"confident colour {confident_colour:.0%} < {MIN_CONFIDENT_COLOUR_SHARE:.0%}")
    if shape_share is not None and shape_share < MIN_SHAPE_SHARE:
        reasons.append(f"expected shape read {shape_share:.0%} < {MIN_SHAPE_SHARE:.0%}")
    if precision is not None and precision < MIN_PRECISION:
        reasons.append(f"precision_synth {precision:.2f} < {MIN_PRECISION:.2f}")
    return {"recognisable": not reasons, "reasons": reasons}


# ---------------------------------------------------------------------------------------------
# The reader and its cache
# ---------------------------------------------------------------------------------------------


class AttributeReader:
    """A trained attribute classifier and the card that says what it was trained on.

    Attributes:
        model: the Keras model of `pop_tf.models.attribute_classifier.build`.
        image_size: its input side S; images of any size are resized to it.
        card: {"key", "settings", "data_fingerprint", "train_images", "held_out", ...}.
    """

    def __init__(self, model, image_size: int, card: dict):
        self.model = model
        self.image_size = int(image_size)
        self.card = card
        self._forward = None

    def read(self, images, batch_size: int = 64) -> Readings:
        """Readings of uint8 images [N, H, W, 3] (any H = W)."""
        import tensorflow as tf

        from pop_tf.models import attribute_classifier

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"images must be [N, H, W, 3], got shape {images.shape}")
        if self._forward is None:
            spec = tf.TensorSpec([None, self.image_size, self.image_size, 3], tf.float32)
            self._forward = tf.function(lambda x: self.model(x, training=False), input_signature=[spec])
        parts = []
        for start in range(0, len(images), batch_size):
            outputs = self._forward(attribute_classifier.preprocess(images[start:start + batch_size],
                                                                    self.image_size))
            parts.append(Readings(probs={h: np.asarray(outputs[h]) for h in attribute_classifier.HEADS},
                                  features=np.asarray(outputs[attribute_classifier.FEATURES_LAYER])))
        if not parts:
            return Readings(probs={h: np.zeros([0, len(c)], np.float32)
                                   for h, c in attribute_classifier.HEADS.items()},
                            features=np.zeros([0, self.model.get_layer("features").units], np.float32))
        return Readings.concatenate(parts)

    def save(self, folder: str, name: str) -> list:
        """Writes `<name>.weights.h5` and `<name>.json` into `folder`; returns their paths."""
        weights = os.path.join(folder, f"{name}.weights.h5")
        card = os.path.join(folder, f"{name}.json")
        self.model.save_weights(weights)
        with open(card, "w") as f:
            json.dump(self.card, f, indent=2, sort_keys=True)
        return [weights, card]

    @classmethod
    def load(cls, folder: str, name: str, key: str):
        """The reader saved under `name` in `folder` when its card's key is `key`, else None."""
        from pop_tf.models import attribute_classifier

        weights = os.path.join(folder, f"{name}.weights.h5")
        try:
            with open(os.path.join(folder, f"{name}.json")) as f:
                card = json.load(f)
        except (OSError, ValueError):
            return None
        if card.get("key") != key or not os.path.isfile(weights):
            return None
        settings = card["settings"]
        model = attribute_classifier.build(settings["image_size"], settings["width"], settings["feature_dim"])
        try:
            model.load_weights(weights)
        except Exception as e:  # Keras raises ValueError or h5py errors: a damaged cache is retrained
            log.warning("attribute classifier cache %s is unreadable (%s); training a new one", weights, e)
            return None
        return cls(model, settings["image_size"], card)


def cache_key(data_fingerprint: str, settings: dict) -> str:
    """sha256 of the training data's fingerprint, the settings and CLASSIFIER_VERSION."""
    import hashlib

    text = json.dumps({"data": data_fingerprint, "settings": settings, "version": CLASSIFIER_VERSION},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(post_ids, images: np.ndarray, labels: dict) -> str:
    """sha256 of what a classifier is trained on: post ids, the resized pixels and the labels."""
    import hashlib

    digest = hashlib.sha256()
    digest.update("\n".join(post_ids).encode())
    digest.update(np.ascontiguousarray(images, np.uint8).tobytes())
    for head in sorted(labels):
        digest.update(head.encode())
        digest.update(np.ascontiguousarray(labels[head], np.int32).tobytes())
    return digest.hexdigest()


def train_reader(post_ids, images: np.ndarray, rows, settings: dict, data_fingerprint: str = None) -> AttributeReader:
    """Trains a reader on real images (uint8 [N, S, S, 3] at settings["image_size"]) and their truth rows.

    Args:
        settings: {"image_size", "width", "feature_dim", "steps", "batch_size", "seed"}.
    """
    import time

    from pop_tf.models import attribute_classifier

    labels = attribute_classifier.labels_of(rows)
    data_fingerprint = data_fingerprint or fingerprint(post_ids, images, labels)
    started = time.monotonic()
    steps, batch = settings["steps"], settings["batch_size"]
    model = attribute_classifier.train(images, labels, image_size=settings["image_size"], width=settings["width"],
                                       feature_dim=settings["feature_dim"], steps=steps, batch_size=batch,
                                       seed=settings["seed"])
    seconds = time.monotonic() - started
    log.info("attribute classifier: trained on %d images at %d px in %.1f s", len(images), settings["image_size"],
             seconds)
    card = {"key": cache_key(data_fingerprint, settings), "settings": settings, "data_fingerprint": data_fingerprint,
            "train_images": int(len(images)), "train_seconds": round(seconds, 1), "version": CLASSIFIER_VERSION}
    return AttributeReader(model, settings["image_size"], card)
