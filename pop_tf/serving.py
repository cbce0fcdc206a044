"""SavedModel builders for other apps (SPEC §7): endpoints, input checks and the model card.

Every endpoint takes images of any size as uint8 [N, H, W, 3] and fits them into the model's
S×S square the way ingest did for training (scale the longer side to S, pad the shorter one with
white, centred), so a client never has to know S. Bad inputs fail inside the graph with an
`InvalidArgumentError` whose text says what was expected; the loaded model never needs pop_tf.
Models are exported with `keras.export.ExportArchive` (several endpoints, each also a signature)
into integer version folders as TF Serving expects, with `pop_tf.json` beside the graph.
"""

import json
import os
import re
import shutil
import tempfile

import pop_tf

MODEL_CARD = "pop_tf.json"
_IMAGES_HELP = "uint8 images of shape [N, H, W, 3] with N >= 1 and H, W >= 1"


def checked_images(images, name="images"):
    """`images` with a static rank of 4 and 3 channels, or an InvalidArgumentError naming `name`.

    The endpoint signature leaves the shape open (only the dtype is fixed), so wrong ranks,
    channel counts and empty batches reach these checks instead of failing deep in a kernel.
    """
    import tensorflow as tf

    expected = f"{name} must be {_IMAGES_HELP}"
    checks = [tf.debugging.assert_rank(images, 4, message=f"{expected}; got a different rank")]
    with tf.control_dependencies(checks):
        # Padded with ones: when a SavedModel function is called, grappler constant-folds these
        # slices with the caller's concrete shape before any assert runs, so an unpadded shape[3]
        # of a rank-3 input failed as "slice index 3 out of bounds" instead of the rank message.
        shape = tf.concat([tf.shape(images), tf.ones([4], tf.int32)], axis=0)
    checks = [
        tf.debugging.assert_equal(shape[3], 3, message=f"{expected}; got a different channel count"),
        tf.debugging.assert_positive(shape[0], message=f"{expected}; got an empty batch"),
        tf.debugging.assert_positive(tf.reduce_min(shape[1:3]), message=f"{expected}; got an empty image"),
    ]
    with tf.control_dependencies(checks):
        # A reshape to the checked shape (not tf.ensure_shape, which grappler let run before the
        # rank assert for a rank-5 input) gives the static [None, None, None, 3].
        return tf.reshape(images, tf.stack([shape[0], shape[1], shape[2], 3]))


def fit_to_square(images, size: int):
    """uint8 [N, H, W, 3] → float32 [N, size, size, 3] in [0, 255], as ingest fits images.

    The longer side becomes `size` (antialiased bilinear; ingest uses Lanczos, which differs by
    about one grey level), the shorter is padded with white and centred. An image already S×S
    passes through unchanged.
    """
    import tensorflow as tf

    images = tf.cast(images, tf.float32)
    shape = tf.shape(images)
    height, width = shape[1], shape[2]
    longer = tf.cast(tf.maximum(height, width), tf.float32)
    new_h = tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float32) * size / longer), tf.int32))
    new_w = tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float32) * size / longer), tf.int32))

    # Resizing to the same size is the identity (bilinear samples land on the pixel centres),
    # so no branch is needed for images that are already S×S.
    images = tf.image.resize(images, tf.stack([new_h, new_w]), method="bilinear", antialias=True)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    padded = tf.pad(images - 255.0, [[0, 0], [top, size - new_h - top], [left, size - new_w - left], [0, 0]])
    return tf.ensure_shape(padded + 255.0, [None, size, size, 3])


def decode_images(encoded, size: int, name="encoded"):
    """string [N] of JPEG/PNG bytes → float32 [N, size, size, 3] in [0, 255], each fitted."""
    import tensorflow as tf

    checks = [tf.debugging.assert_rank(encoded, 1, message=f"{name} must be a string vector [N] of JPEG or PNG bytes"),
              tf.debugging.assert_positive(tf.size(encoded), message=f"{name} must hold at least one image")]
    with tf.control_dependencies(checks):
        encoded = tf.identity(encoded)

    def one(data):
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return fit_to_square(image[tf.newaxis], size)[0]

    return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def next_version(base: str) -> int:
    """The next free integer version folder under `base` (1 when there is none)."""
    versions = [int(n) for n in os.listdir(base) if re.fullmatch(r"\d+", n)] if os.path.isdir(base) else []
    return max(versions, default=0) + 1


def write_model_card(directory: str, kind: str, config: dict, data_fingerprint: str, **extra) -> str:
    """Writes `pop_tf.json` (model kind, resolved config, data fingerprint, package version)."""
    card = {"kind": kind, "pop_tf_version": pop_tf.__version__, "data_fingerprint": data_fingerprint,
            "config": config, **extra}
    path = os.path.join(directory, MODEL_CARD)
    with open(path + ".tmp", "w") as f:
        json.dump(card, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
    return path


def read_model_card(directory: str, expected_kind: str = None) -> dict:
    """Reads `pop_tf.json`; with `expected_kind`, refuses a model of another kind by name."""
    from pop_tf.errors import PopTfError

    path = os.path.join(directory, MODEL_CARD)
    try:
        with open(path) as f:
            card = json.load(f)
    except (OSError, ValueError) as e:
        raise PopTfError(f"{directory} is not a pop_tf SavedModel: cannot read {MODEL_CARD} ({e})") from None
    if expected_kind and card.get("kind") != expected_kind:
        raise PopTfError(f"{directory} holds a {card.get('kind')!r} model, but a {expected_kind!r} model "
                         "is needed here")
    return card


def write_archive(archive, directory: str) -> str:
    """Writes an ExportArchive into `directory` atomically: a reader never sees half a model."""
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        archive.write_out(os.path.join(staging, "model"), verbose=False)
        return staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def install_staged(staging: str, directory: str) -> str:
    """Moves a staged export (from `write_archive`, plus its card) into place as `directory`."""
    model = os.path.join(staging, "model")
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.replace(model, directory)
    shutil.rmtree(staging, ignore_errors=True)
    return directory


def export_ranker(ranker, directory: str, config: dict, data_fingerprint: str, **card) -> str:
    """Exports a trained `PopularityRanker` as `directory` (SPEC §7 `saved_models/ranker/<v>`).

    Endpoints (each also a signature): `score(images: uint8 [N,H,W,3]) → {"score": float32 [N]}`
    and `score_jpeg(encoded: string [N]) → {"score": float32 [N]}` (JPEG or PNG bytes). Images
    are fitted into the ranker's S×S square and scaled to [0, 1], as in training.
    """
    import keras
    import tensorflow as tf

    size = ranker.image_size
    archive = keras.export.ExportArchive()
    archive.track(ranker)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8, name="images")])
    def score(images):
        images = fit_to_square(checked_images(images), size)
        return {"score": ranker(images / 255.0, training=False)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="encoded")])
    def score_jpeg(encoded):
        return {"score": ranker(decode_images(encoded, size) / 255.0, training=False)}

    archive.add_endpoint("score", score)
    archive.add_endpoint("score_jpeg", score_jpeg)
    staging = write_archive(archive, directory)
    write_model_card(os.path.join(staging, "model"), "ranker", config, data_fingerprint, image_size=size, **card)
    return install_staged(staging, directory)


def export_clusterer(features_model, stats, directory: str, config: dict, data_fingerprint: str) -> str:
    """Exports the clusterer (SPEC §7) into `directory` (replaced whole); returns `directory`.

    Endpoints, each also a signature:
    `embed(images: uint8 [N, H, W, 3]) → {"features": float32 [N, d]}` and
    `assign(images: uint8 [N, H, W, 3]) → {"cluster": int32 [N]}` (nearest k-means centre, the
    centres baked in as a constant). `features_model` is a built
    `pop_tf.models.clusterer.ClusterFeatures`; `stats` its `ClusterStats`.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    size = int(features_model.feature_size)
    centers = np.asarray(stats.centers, dtype=np.float32)
    if centers.shape[1] != features_model.dims:
        raise ValueError(f"the cluster centres have {centers.shape[1]} dims but the feature model gives "
                         f"{features_model.dims}")
    # Shape left open (dtype only), so wrong ranks, channel counts and empty batches reach
    # `checked_images` and fail with a message instead of a signature mismatch.
    spec = [tf.TensorSpec(None, tf.uint8, name="images")]

    def features(images):
        return features_model(fit_to_square(checked_images(images), size), training=False)

    def embed(images):
        return {"features": features(images)}

    def assign(images):
        x = features(images)
        c = tf.constant(centers)
        # ‖x − c‖² up to ‖x‖², which is the same for every centre; float32 like the features.
        distances = tf.reduce_sum(c * c, axis=1)[tf.newaxis, :] - 2.0 * tf.matmul(x, c, transpose_b=True)
        return {"cluster": tf.argmin(distances, axis=1, output_type=tf.int32)}

    archive = keras.export.ExportArchive()
    archive.track(features_model)
    archive.add_endpoint("embed", embed, input_signature=spec)
    archive.add_endpoint("assign", assign, input_signature=spec)
    staging = write_archive(archive, directory)
    try:
        write_model_card(os.path.join(staging, "model"), kind="clusterer", config=config,
                         data_fingerprint=data_fingerprint, feature_size=size, feature_dims=int(features_model.dims),
                         num_clusters=int(centers.shape[0]), shares=[float(s) for s in stats.shares],
                         endpoints=["embed", "assign"])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return install_staged(staging, directory)


def _to_uint8(images):
    """float [−1, 1] → uint8 pixels: round((x + 1)·127.5), clipped."""
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)


def export_translator(trainer_or_networks, directory: str, config: dict, data_fingerprint: str, **card) -> str:
    """Exports a trained DMIT translator as `directory` (SPEC §7 `saved_models/translator/<v>`).

    Endpoints (each also a signature):
    - `translate(content: uint8 [N,H,W,3], reference: uint8 [N,H,W,3], target_domain: string [N])
      → {"images": uint8 [N,S,S,3]}`: the content of `content`, the style encoded (its mean) from
      `reference`, decoded under the `target_domain` label;
    - `sample(content: uint8 [N,H,W,3], target_domain: string [N], seed: int64 [],
      num_samples: int32 []) → {"images": uint8 [N,num_samples,S,S,3]}`: styles drawn from the
      prior N(0, I) by `seed` alone (the same seed gives the same images, whatever the batch);
    - `domains() → {"names": string [D]}`.
    Domain names are "<popularity>/<modality>" and map onto the training labels through a lookup
    table baked into the graph; an unknown name is an InvalidArgumentError listing the valid ones.
    Images are fitted into the S×S square (`fit_to_square`) and scaled to [−1, 1] as in training.
    A cluster-conditioned generator draws its cluster ids from the cluster shares (seed 0 for
    `translate`, `seed` for `sample`), the test-time rule of Suzuki et al.

    Args:
        trainer_or_networks: a trained `pop_tf.models.dmit.DMITTrainer`, or the dict of
            `dmit.build_networks` (uniform cluster shares then).
        directory: the SavedModel folder (replaced whole, atomically).
        config: the resolved translator config (a dict with `image_size`), written to the card.
        data_fingerprint: names the training data in `pop_tf.json`.
        **card: further `pop_tf.json` entries (e.g. `metrics`).

    Returns:
        `directory`.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from pop_tf import data
    from pop_tf.models import dmit

    trainer = trainer_or_networks
    if isinstance(trainer, dict):
        trainer = dmit.DMITTrainer(**trainer, share_discriminator=trainer.get("encoded_discriminator") is None)
    if trainer.label_dim != data.LABEL_DIM:
        raise ValueError(f"the translator's labels have {trainer.label_dim} entries, but the domain names map onto "
                         f"{data.LABEL_DIM} (popularity one-hot ++ modality one-hot)")
    size = int(config["image_size"])
    domains = [(p, m) for p in data.POPULARITIES for m in data.MODALITIES]
    names = [f"{p}/{m}" for p, m in domains]
    labels = tf.constant(np.stack([data.domain_label(p, m) for p, m in domains]))
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(names), tf.range(len(names), dtype=tf.int32)),
        default_value=-1)
    valid = ", ".join(names)  # unquoted: Assert prints its message with quotes escaped

    def target_labels(target_domain, count, inputs):
        """float [N, 4] labels of `target_domain`, checked: a string vector of known names, N = count."""
        expected = f"target_domain must be a string vector [N] of domain names (one of {valid})"
        checks = [tf.debugging.assert_rank(target_domain, 1, message=f"{expected}; got a different rank")]
        with tf.control_dependencies(checks):
            # Padded, as in `checked_images`, so grappler's constant folding cannot slice past a scalar.
            length = tf.concat([tf.shape(target_domain), tf.ones([1], tf.int32)], axis=0)[0]
            target_domain = tf.reshape(target_domain, [length])
        ids = table.lookup(target_domain)
        checks = [
            tf.debugging.assert_equal(length, count, message=f"{inputs} must hold the same number N of entries "
                                      "(one target domain per content image)"),
            tf.debugging.Assert(tf.reduce_all(ids >= 0), [f"target_domain must name one of {valid}; unknown:",
                                                         tf.boolean_mask(target_domain, ids < 0)]),
        ]
        with tf.control_dependencies(checks):
            return tf.gather(labels, tf.maximum(ids, 0))

    def signed(images, name):
        return fit_to_square(checked_images(images, name), size) / 127.5 - 1.0

    def translate(content, reference, target_domain):
        content, reference = signed(content, "content"), signed(reference, "reference")
        count = tf.shape(content)[0]
        checks = [tf.debugging.assert_equal(tf.shape(reference)[0], count, message="content, reference and "
                                            "target_domain must hold the same number N of entries (one reference "
                                            "per content image)")]
        with tf.control_dependencies(checks):
            label = target_labels(target_domain, count, "content, reference and target_domain")
        return {"images": _to_uint8(trainer.translate(content, reference, label))}

    def sample(content, target_domain, seed, num_samples):
        content = signed(content, "content")
        label = target_labels(target_domain, tf.shape(content)[0], "content and target_domain")
        checks = [tf.debugging.assert_positive(num_samples, message="num_samples must be >= 1")]
        with tf.control_dependencies(checks):
            num_samples = tf.identity(num_samples)
        return {"images": _to_uint8(trainer.sample(content, label, seed=seed, num_samples=num_samples))}

    def domain_names():
        return {"names": tf.constant(names)}

    def images(name):  # shapes left open, so `checked_images` can say what is wrong
        return tf.TensorSpec(None, tf.uint8, name=name)

    domain = tf.TensorSpec(None, tf.string, name="target_domain")
    archive = keras.export.ExportArchive()
    for network in (trainer.content_encoder, trainer.style_encoder, trainer.generator):
        archive.track(network)
    archive.track(table)
    archive.add_endpoint("translate", translate, input_signature=[images("content"), images("reference"), domain])
    archive.add_endpoint("sample", sample, input_signature=[
        images("content"), domain, tf.TensorSpec([], tf.int64, name="seed"),
        tf.TensorSpec([], tf.int32, name="num_samples")])
    archive.add_endpoint("domains", domain_names, input_signature=[])
    staging = write_archive(archive, directory)
    try:
        write_model_card(os.path.join(staging, "model"), "translator", config, data_fingerprint, image_size=size,
                         domains=names, endpoints=["translate", "sample", "domains"], **card)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return install_staged(staging, directory)


def file_fingerprint(path: str) -> str:
    """sha256 of a file ('' when unreadable): names a model's training data in its card."""
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""
