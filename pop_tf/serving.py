"""SavedModel builders for other apps (docs/savedmodels.md): endpoints, input checks and the model card.

Every endpoint takes images of any size as uint8 [N, H, W, 3] and fits them into the model's
S×S square the way ingest did for training (scale the longer side to S, pad the shorter one with
white, centred), so a client never has to know S. Bad inputs fail inside the graph with an
`InvalidArgumentError` whose text says what was expected; the loaded model never needs pop_tf.

Image arguments must be uint8, and nothing converts them: a tf.function or SavedModel signature
whose input is declared uint8 turns a NumPy float32 array into uint8 with a plain cast before
the graph sees it (0.3 becomes 0, so a float image in [0, 1] is scored as black), and no check
inside the graph can tell. So the image endpoints (`score`, `embed`, `assign`, `translate`,
`sample`) declare no input signature: each is saved as its uint8 trace plus one trace per other
dtype of its image arguments (`_strict_endpoint`), and those fail with an InvalidArgumentError
naming the argument and its dtype. A NumPy array keeps its dtype when the loaded function is
called, so float, int and bool arrays reach the refusal, as do tensors; any pairing of dtypes
not traced (a float32 content with an int32 reference) finds no matching function and is a
ValueError. The `signatures` (for TF Serving and C++ clients, whose requests carry their dtype)
stay uint8 only; from Python, call the endpoints (`model.score(images)`), since calling a
signature function converts a NumPy array to its declared dtype first. A nested Python list
(not an array) is converted by TensorFlow as uint8, integers modulo 256.
Models are exported with `keras.export.ExportArchive` (several endpoints, each also a signature)
into integer version folders as TF Serving expects, with `pop_tf.json` beside the graph.

Serving limits (`ExportConfig.max_pixels`, `ExportConfig.max_samples`) bound what one request can
make the model allocate: an image of more than `max_pixels` pixels is refused — for encoded
images from the width and height in the header, before a byte is decoded (a JPEG of under 1 KB
can declare 12,500×12,500 pixels, ~470 MB decoded and ~2.3 GB once converted to float) — and
`sample` refuses more than `max_samples` styles per image. The limits live in
`assets/limits.tsv`, read into a lookup table when the model loads, so the export stage can set
them in its copy without rebuilding the graph; `pop_tf.json` records them under `limits`.
"""

import json
import os
import re
import shutil
import tempfile

import pop_tf
from pop_tf import config as config_lib
from pop_tf.errors import PopTfError
from pop_tf.preprocessing import fit_to_square, to_uint8

MODEL_CARD = "pop_tf.json"
LIMITS_ASSET = "limits.tsv"
_IMAGES_HELP = "uint8 images of shape [N, H, W, 3] with N >= 1 and H, W >= 1"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SIGNATURE = b"\xff\xd8\xff"


def resolve_limits(**given) -> dict:
    """The serving limits named in `given` (max_pixels, max_samples): each its value, or the
    ExportConfig default where it is None."""
    defaults = config_lib.ExportConfig()
    return {key: int(getattr(defaults, key) if value is None else value) for key, value in given.items()}


def _write_limits(path: str, limits: dict) -> None:
    with open(path + ".tmp", "w") as f:
        f.writelines(f"{key}\t{int(value)}\n" for key, value in sorted(limits.items()))
    os.replace(path + ".tmp", path)


def _limits_table(path: str, limits: dict):
    """A lookup table {limit name: int64} initialised from the file `path` (saved as an asset)."""
    import tensorflow as tf

    for key, value in limits.items():
        config_lib.validate_value(f"export.{key}", value)
    _write_limits(path, limits)
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(path, tf.string, 0, tf.int64, 1, delimiter="\t"), default_value=-1)


def _assert_pixels(height, width, limit, what: str):
    """An Assert that height × width (int64) is at most `limit`, naming the sizes and the limit."""
    import tensorflow as tf

    # Each side is checked on its own too: a forged PNG may declare 2³²−1 × 2³²−1, whose product
    # overflows int64; sides at most `limit` (< 2³¹, config bound) cannot.
    within = (height <= limit) & (width <= limit) & (height * width <= limit)
    # No apostrophes: Assert prints its strings with quotes escaped.
    return tf.debugging.Assert(within, [what, height, "x", width, "pixels (height x width), more than the model "
                                        "limit of", limit, "pixels (max_pixels in pop_tf.json); send a smaller "
                                        "image"])


def checked_images(images, name="images", max_pixels=None):
    """`images` with a static rank of 4 and 3 channels, or an InvalidArgumentError naming `name`.

    The endpoint signature leaves the shape open (only the dtype is fixed), so wrong ranks,
    channel counts and empty batches reach these checks instead of failing deep in a kernel.
    With `max_pixels` (an int64 tensor), images of more pixels are refused too, before the
    float conversion that quadruples their size.
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
    if max_pixels is not None:
        checks.append(_assert_pixels(tf.cast(shape[1], tf.int64), tf.cast(shape[2], tf.int64), max_pixels,
                                     f"{name} holds an image of"))
    with tf.control_dependencies(checks):
        # A reshape to the checked shape (not tf.ensure_shape, which grappler let run before the
        # rank assert for a rank-5 input) gives the static [None, None, None, 3].
        return tf.reshape(images, tf.stack([shape[0], shape[1], shape[2], 3]))


# The dtypes an image array arrives in when it is not uint8, Python's defaults for nested lists
# (float32, int32, bool) first: the loader tries traces in this order when it must convert a list.
_REFUSED_DTYPES = ("float32", "int32", "bool", "float64", "float16", "bfloat16", "int64", "int16", "int8",
                   "uint16", "uint32", "uint64", "complex64", "complex128")


def _strict_endpoint(body, signature):
    """`body` as a tf.function saved with its uint8 trace first and a refusal for every other dtype.

    `signature` lists the TensorSpecs of `body`'s arguments; the uint8 ones are images. The
    uint8 trace comes first, so it is the endpoint's SavedModel signature. Every other dtype in
    `_REFUSED_DTYPES`, for every non-empty set of the image arguments at once, gets a small
    trace that fails with an InvalidArgumentError naming the arguments and their dtypes, and
    computes nothing (a copy of the model per dtype would multiply the graph). Without an input
    signature the loaded function matches a call to a trace by the arguments' own dtypes, so a
    NumPy float32 array is refused rather than cast to uint8 (see the module docstring).
    """
    import functools
    import inspect
    import itertools

    import tensorflow as tf

    parameters = inspect.signature(body)
    images = [spec.name for spec in signature if spec.dtype == tf.uint8]
    declared = {spec.name: spec.shape for spec in signature}
    outputs = {}

    @functools.wraps(body)
    def endpoint(*args, **kwargs):
        given = parameters.bind(*args, **kwargs).arguments
        wrong = [name for name in images if given[name].dtype != tf.uint8]
        if not wrong:
            # Without an input signature, a caller's static shapes reach the saved graph, and shape
            # inference there ran ahead of the checks: 2 channels failed as "Cannot reshape a tensor
            # with 128 elements" at call time instead of "got a different channel count". This op
            # passes the value on with only the declared shape, as an input signature did.
            return body(**{name: tf.compat.v1.placeholder_with_default(value, declared[name])
                           for name, value in given.items()})
        got = ", ".join(f"{name} as {given[name].dtype.name}" for name in wrong)
        # No apostrophes: Assert prints its strings with quotes escaped.
        refusal = tf.debugging.Assert(False, [
            f"{' and '.join(wrong)} must be {_IMAGES_HELP}; got {got}. Pixels are not converted here (a cast "
            "would turn a float image in [0, 1] black): send uint8 pixels 0 to 255, e.g. "
            "np.round(np.clip(images, 0, 1) * 255).astype(np.uint8) for floats in [0, 1]"])
        with tf.control_dependencies([refusal]):
            return tf.nest.map_structure(lambda t: tf.zeros([0] * max(t.shape.rank or 1, 1), t.dtype),
                                         outputs["structure"])

    function = tf.function(endpoint, autograph=False)
    outputs["structure"] = function.get_concrete_function(*signature).structured_outputs
    positions = [i for i, spec in enumerate(signature) if spec.dtype == tf.uint8]
    for dtype in _REFUSED_DTYPES:
        for count in range(1, len(positions) + 1):
            for chosen in itertools.combinations(positions, count):
                function.get_concrete_function(*[
                    tf.TensorSpec(spec.shape, dtype, name=spec.name) if i in chosen else spec
                    for i, spec in enumerate(signature)])
    return function


def declared_size(data, name="encoded"):
    """int64 [height, width] that JPEG or PNG bytes declare in their header, read without decoding.

    Any other content is an InvalidArgumentError: TF's `decode_image` would also take GIF, BMP,
    WebP and JPEG XL, whose sizes (and a GIF's frame count) this does not read, so they are
    refused rather than decoded unchecked.
    """
    import tensorflow as tf

    # Padded so that the fixed offsets below exist even in a cut-off file (which decoding then rejects).
    padded = tf.strings.join([data, tf.constant(b"\0" * 24)])
    is_png = tf.equal(tf.strings.substr(padded, 0, len(_PNG_SIGNATURE)), _PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(padded, 0, len(_JPEG_SIGNATURE)), _JPEG_SIGNATURE)
    known = tf.debugging.Assert(is_png | is_jpeg, [f"{name} must hold JPEG or PNG bytes; got another format "
                                                   "(or a file cut short)"])

    def png_size():
        # IHDR, always the first chunk: width then height, big-endian uint32, at bytes 16-23.
        raw = tf.cast(tf.io.decode_raw(tf.strings.substr(padded, 16, 8), tf.uint8), tf.int64)
        width = ((raw[0] * 256 + raw[1]) * 256 + raw[2]) * 256 + raw[3]
        height = ((raw[4] * 256 + raw[5]) * 256 + raw[6]) * 256 + raw[7]
        return tf.stack([height, width])

    def jpeg_size():
        return tf.image.extract_jpeg_shape(data, output_type=tf.int64)[:2]

    with tf.control_dependencies([known]):
        return tf.cond(is_png, png_size, jpeg_size)


def decode_images(encoded, size: int, name="encoded", max_pixels=None):
    """string [N] of JPEG/PNG bytes → float32 [N, size, size, 3] in [0, 255], each fitted.

    With `max_pixels` (an int64 tensor), an image whose header declares more pixels is an
    InvalidArgumentError before it is decoded.
    """
    import tensorflow as tf

    checks = [tf.debugging.assert_rank(encoded, 1, message=f"{name} must be a string vector [N] of JPEG or PNG bytes"),
              tf.debugging.assert_positive(tf.size(encoded), message=f"{name} must hold at least one image")]
    with tf.control_dependencies(checks):
        encoded = tf.identity(encoded)

    def one(data):
        checks = []
        if max_pixels is not None:
            height_width = declared_size(data, name)
            checks.append(_assert_pixels(height_width[0], height_width[1], max_pixels,
                                         f"{name} holds an image whose header declares"))
        with tf.control_dependencies(checks):
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


class ModelFolderError(PopTfError):
    """A SavedModel folder to write is taken by something pop_tf did not export."""


def _check_replaceable(directory: str) -> None:
    """Refuses to replace `directory` unless it is a SavedModel pop_tf wrote (one with a card)."""
    if not os.path.lexists(directory):
        return
    if not os.path.islink(directory) and os.path.isdir(directory):
        try:
            read_model_card(directory)
            return
        except PopTfError:
            pass
    raise ModelFolderError(f"'{directory}' already exists and is not a SavedModel pop_tf exported (no readable "
                           f"{MODEL_CARD}); pop_tf replaces only its own models there: move it away or choose "
                           "another output folder")


def install_staged(staging: str, directory: str) -> str:
    """Moves a staged export (`staging/model`, with its card) into place as `directory`."""
    _check_replaceable(directory)
    if os.path.exists(directory):
        shutil.rmtree(directory)
    os.replace(os.path.join(staging, "model"), directory)
    shutil.rmtree(staging, ignore_errors=True)
    return directory


def _export(directory: str, limits: dict, build, kind: str, config: dict, data_fingerprint: str, **card) -> str:
    """Writes the archive `build(limits table)` returns, with its card, as `directory`, atomically.

    Everything goes into a hidden folder beside `directory` first and is renamed into place, so a
    reader never sees half a model; `directory` is replaced only when it is pop_tf's own model.
    """
    _check_replaceable(directory)  # before the export's work, not only after it
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        archive = build(_limits_table(os.path.join(staging, LIMITS_ASSET), limits))
        archive.write_out(os.path.join(staging, "model"), verbose=False)
        write_model_card(os.path.join(staging, "model"), kind, config, data_fingerprint, limits=limits, **card)
        return install_staged(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _limit(table, key: str):
    """The int64 limit `key` from the model's limits table (call inside an endpoint, not at export)."""
    import tensorflow as tf

    return table.lookup(tf.constant(key))


def model_limits(card: dict, configured: dict) -> dict:
    """The limits of the model `card` with the values of `configured` ({} for a model without any)."""
    return {key: int(configured[key]) for key in card.get("limits", {})}


def set_limits(directory: str, limits: dict) -> None:
    """Sets the serving limits of the SavedModel in `directory` (its asset and its card).

    The limits table is read from `assets/limits.tsv` when the model loads, so the graph itself
    is not touched; only keys the model already has are written.
    """
    card = read_model_card(directory)
    unknown = set(limits) - set(card.get("limits", {}))
    if unknown:
        raise ModelFolderError(f"{directory} has no serving limit {', '.join(sorted(unknown))}")
    for key, value in limits.items():
        config_lib.validate_value(f"export.{key}", value)
    _write_limits(os.path.join(directory, "assets", LIMITS_ASSET), {**card["limits"], **limits})
    extra = {k: v for k, v in card.items() if k not in ("kind", "pop_tf_version", "data_fingerprint", "config")}
    extra["limits"] = {**card["limits"], **limits}
    write_model_card(directory, card["kind"], card["config"], card["data_fingerprint"], **extra)


def export_ranker(ranker, directory: str, config: dict, data_fingerprint: str, max_pixels: int = None,
                  **card) -> str:
    """Exports a trained `PopularityRanker` as `directory` (docs/savedmodels.md, Ranker).

    Endpoints (each also a signature): `score(images: uint8 [N,H,W,3]) → {"score": float32 [N]}`
    and `score_jpeg(encoded: string [N]) → {"score": float32 [N]}` (JPEG or PNG bytes). Images
    are fitted into the ranker's S×S square and scaled to [0, 1], as in training. Images of more
    than `max_pixels` pixels (default `ExportConfig.max_pixels`) are refused; `score_jpeg` reads
    the size from the header, before decoding. `images` must be uint8: an array or tensor of any
    other dtype (a float image in [0, 1] included) is an InvalidArgumentError naming its dtype,
    never cast (`_strict_endpoint`); `signatures["score"]` is the uint8 trace, for TF Serving.
    """
    import keras
    import tensorflow as tf

    size = ranker.image_size
    limits = resolve_limits(max_pixels=max_pixels)

    def build(table):
        archive = keras.export.ExportArchive()
        archive.track(ranker)
        archive.track(table)

        def score(images):
            images = fit_to_square(checked_images(images, max_pixels=_limit(table, "max_pixels")), size)
            return {"score": ranker(images / 255.0, training=False)}

        @tf.function(input_signature=[tf.TensorSpec(None, tf.string, name="encoded")])
        def score_jpeg(encoded):
            images = decode_images(encoded, size, max_pixels=_limit(table, "max_pixels"))
            return {"score": ranker(images / 255.0, training=False)}

        archive.add_endpoint("score", _strict_endpoint(score, [tf.TensorSpec(None, tf.uint8, name="images")]))
        archive.add_endpoint("score_jpeg", score_jpeg)
        return archive

    return _export(directory, limits, build, "ranker", config, data_fingerprint, image_size=size, **card)


def export_clusterer(features_model, stats, directory: str, config: dict, data_fingerprint: str,
                     max_pixels: int = None) -> str:
    """Exports the clusterer (docs/savedmodels.md) into `directory` (replaced whole); returns `directory`.

    Endpoints, each also a signature:
    `embed(images: uint8 [N, H, W, 3]) → {"features": float32 [N, d]}` and
    `assign(images: uint8 [N, H, W, 3]) → {"cluster": int32 [N]}` (nearest k-means centre, the
    centres baked in as a constant). `features_model` is a built
    `pop_tf.models.clusterer.ClusterFeatures`; `stats` its `ClusterStats`. Images of more than
    `max_pixels` pixels (default `ExportConfig.max_pixels`) are refused, and so are images of any
    dtype but uint8, by name (`_strict_endpoint`), never cast.
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
    # `checked_images` and fail with a message instead of a signature mismatch; other dtypes
    # reach `_strict_endpoint`'s refusals.
    spec = [tf.TensorSpec(None, tf.uint8, name="images")]
    limits = resolve_limits(max_pixels=max_pixels)

    def build(table):
        def features(images):
            images = checked_images(images, max_pixels=_limit(table, "max_pixels"))
            return features_model(fit_to_square(images, size), training=False)

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
        archive.track(table)
        archive.add_endpoint("embed", _strict_endpoint(embed, spec))
        archive.add_endpoint("assign", _strict_endpoint(assign, spec))
        return archive

    return _export(directory, limits, build, "clusterer", config, data_fingerprint, feature_size=size,
                   feature_dims=int(features_model.dims), num_clusters=int(centers.shape[0]),
                   shares=[float(s) for s in stats.shares], endpoints=["embed", "assign"])


def export_translator(trainer_or_networks, directory: str, config: dict, data_fingerprint: str,
                      max_pixels: int = None, max_samples: int = None, **card) -> str:
    """Exports a trained DMIT translator as `directory` (docs/savedmodels.md, Translator).

    Endpoints (each also a signature):
    - `translate(content: uint8 [N,H,W,3], reference: uint8 [N,H,W,3], target_domain: string [N])
      → {"images": uint8 [N,S,S,3]}`: the content of `content`, the style encoded (its mean) from
      `reference`, decoded under the `target_domain` label;
    - `sample(content: uint8 [N,H,W,3], target_domain: string [N], seed: int64 [],
      num_samples: int32 []) → {"images": uint8 [N,num_samples,S,S,3]}`: styles drawn from the
      prior N(0, I) by `seed` alone (the same seed gives the same images, whatever the batch);
      at most `max_samples` of them;
    - `domains() → {"names": string [D]}`.
    Domain names are "<popularity>/<modality>" and map onto the training labels through a lookup
    table baked into the graph; an unknown name is an InvalidArgumentError listing the valid ones.
    Images are fitted into the S×S square (`preprocessing.fit_to_square`) and scaled to [−1, 1] as in training.
    `content` and `reference` must be uint8: an array or tensor of another dtype is an
    InvalidArgumentError naming the argument and its dtype, never cast (`_strict_endpoint`);
    `seed` and `num_samples` take Python ints or tensors of their dtypes.
    A cluster-conditioned generator draws its cluster ids from the cluster shares (seed 0 for
    `translate`, `seed` for `sample`), the test-time rule of Suzuki et al.

    Args:
        trainer_or_networks: a trained `pop_tf.models.dmit_trainer.DMITTrainer`, or the dict of
            `dmit.build_networks` (uniform cluster shares then).
        directory: the SavedModel folder (replaced whole, atomically).
        config: the resolved translator config (a dict with `image_size`), written to the card.
        data_fingerprint: names the training data in `pop_tf.json`.
        max_pixels: the largest content or reference image, in pixels (default
            `ExportConfig.max_pixels`).
        max_samples: the largest `num_samples` of `sample` (default `ExportConfig.max_samples`).
        **card: further `pop_tf.json` entries (e.g. `metrics`).

    Returns:
        `directory`.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from pop_tf import data
    from pop_tf.models import dmit_trainer

    trainer = trainer_or_networks
    if isinstance(trainer, dict):
        trainer = dmit_trainer.DMITTrainer(**trainer, share_discriminator=trainer.get("encoded_discriminator") is None)
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

    def build(limits):
        def signed(images, name):
            images = checked_images(images, name, max_pixels=_limit(limits, "max_pixels"))
            return fit_to_square(images, size) / 127.5 - 1.0

        def translate(content, reference, target_domain):
            content, reference = signed(content, "content"), signed(reference, "reference")
            count = tf.shape(content)[0]
            checks = [tf.debugging.assert_equal(tf.shape(reference)[0], count, message="content, reference and "
                                                "target_domain must hold the same number N of entries (one "
                                                "reference per content image)")]
            with tf.control_dependencies(checks):
                label = target_labels(target_domain, count, "content, reference and target_domain")
            return {"images": to_uint8(trainer.translate(content, reference, label))}

        def sample(content, target_domain, seed, num_samples):
            content = signed(content, "content")
            label = target_labels(target_domain, tf.shape(content)[0], "content and target_domain")
            cap = _limit(limits, "max_samples")
            # The outputs, and every activation of the decoder, grow with N × num_samples.
            checks = [tf.debugging.assert_positive(num_samples, message="num_samples must be >= 1"),
                      tf.debugging.Assert(tf.cast(num_samples, tf.int64) <= cap, [
                          "num_samples must be at most", cap, "(max_samples in pop_tf.json); got", num_samples])]
            with tf.control_dependencies(checks):
                num_samples = tf.identity(num_samples)
            return {"images": to_uint8(trainer.sample(content, label, seed=seed, num_samples=num_samples))}

        def domain_names():
            return {"names": tf.constant(names)}

        def images(name):  # shapes left open, so `checked_images` can say what is wrong
            return tf.TensorSpec(None, tf.uint8, name=name)

        domain = tf.TensorSpec(None, tf.string, name="target_domain")
        archive = keras.export.ExportArchive()
        for network in (trainer.content_encoder, trainer.style_encoder, trainer.generator):
            archive.track(network)
        archive.track(table)
        archive.track(limits)
        archive.add_endpoint("translate", _strict_endpoint(translate, [images("content"), images("reference"),
                                                                      domain]))
        archive.add_endpoint("sample", _strict_endpoint(sample, [
            images("content"), domain, tf.TensorSpec([], tf.int64, name="seed"),
            tf.TensorSpec([], tf.int32, name="num_samples")]))
        archive.add_endpoint("domains", domain_names, input_signature=[])
        return archive

    limits = resolve_limits(max_pixels=max_pixels, max_samples=max_samples)
    return _export(directory, limits, build, "translator", config, data_fingerprint, image_size=size,
                   domains=names, endpoints=["translate", "sample", "domains"], **card)


def file_fingerprint(path: str) -> str:
    """sha256 of a file ('' when unreadable): names a model's training data in its card."""
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""
