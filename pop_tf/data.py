"""tf.data readers over pop_tf's TFRecords: parse, decode, augment, batch.

Files are read in parallel, records parsed and PNGs decoded with `AUTOTUNE` parallelism, and
batches prefetched, so the train step never waits on Python. Randomness (shuffle order, A/B
swaps, flips) is derived from a seed: the same seed gives the same batches on CPU.
"""

import tensorflow as tf

from pop_tf import records
from pop_tf.errors import PopTfError

AUTOTUNE = tf.data.AUTOTUNE


class DataError(PopTfError):
    """Input files that are missing or hold no records; the message names the pattern."""


def list_files(pattern: str, what: str) -> list:
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise DataError(f"no {what} files match {pattern}; run the stage that writes them first")
    return files


def _records(files, parallel: bool):
    return tf.data.TFRecordDataset(files, compression_type="GZIP",
                                   num_parallel_reads=AUTOTUNE if parallel else None)


def _resize(images, image_size: int, stored_size: int):
    if image_size == stored_size:
        return images
    return tf.cast(tf.clip_by_value(tf.round(tf.image.resize(images, (image_size, image_size), antialias=True)),
                                    0, 255), tf.uint8)


def _shift(image, draws, max_shift: float):
    """Translates an [S, S, 3] uint8 image by up to ±max_shift·S pixels per axis, white fill."""
    size = image.shape[0]
    pad = max(1, int(round(max_shift * size)))
    padded = tf.pad(tf.cast(image, tf.int32) - 255, [[pad, pad], [pad, pad], [0, 0]]) + 255
    offsets = tf.cast(tf.floor(draws * (2 * pad + 1)), tf.int32)
    return tf.cast(padded[offsets[0]:offsets[0] + size, offsets[1]:offsets[1] + size], tf.uint8)


def pair_dataset(pattern: str, stored_size: int, image_size: int, batch_size: int, training: bool,
                 seed: int = 0, flip: bool = True, max_shift: float = 0.0,
                 shuffle_buffer: int = 2048) -> tf.data.Dataset:
    """Batches of PDIPs for the siamese ranker.

    Each element is a dict: `image_a`, `image_b` uint8 [B, S, S, 3] and `target` float32 [B]
    (1 when A is the more popular post). In training the order of each pair is swapped with
    probability ½ (the target becomes 0), so the classifier sees both orders, and each image is
    flipped left-right with probability ½ when `flip`; the dataset repeats forever. Otherwise
    the pairs come once, in file order, unswapped and unflipped.

    Args:
        pattern: glob of pair TFRecord files (`<pairs>/train_pairs-*.tfrecord.gz`).
        stored_size: the image size the records hold (ingest's `image_size`).
        image_size: the ranker's input size (images are resized when it differs).
        batch_size: pairs per batch.
        training: shuffle, augment and repeat.
        seed: the seed of every random choice.
        flip: left-right flip augmentation.
        max_shift: random translation of each image by up to this fraction of its side, the
            uncovered border filled with white (the background of ingested garments).
        shuffle_buffer: records in the shuffle buffer.
    """
    files = list_files(pattern, "pair record")
    dataset = _records(files, parallel=training)
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        # (seed, index) keys the stateless draws: augmentation does not depend on thread timing.
        dataset = dataset.enumerate()
    else:
        dataset = dataset.map(lambda s: (tf.constant(0, tf.int64), s))

    def to_pair(index, serialized):
        pair = records.parse_pair(serialized, stored_size)
        image_a, image_b, target = pair["image_a"], pair["image_b"], tf.constant(1.0)
        if training:
            draws = tf.random.stateless_uniform([7], seed=tf.stack([tf.cast(seed, tf.int64), index]))
            swap = draws[0] < 0.5
            image_a, image_b = (tf.where(swap, image_b, image_a), tf.where(swap, image_a, image_b))
            target = tf.where(swap, 0.0, 1.0)
            if flip:
                image_a = tf.where(draws[1] < 0.5, tf.reverse(image_a, [1]), image_a)
                image_b = tf.where(draws[2] < 0.5, tf.reverse(image_b, [1]), image_b)
            if max_shift > 0:
                image_a = _shift(image_a, draws[3:5], max_shift)
                image_b = _shift(image_b, draws[5:7], max_shift)
        return {"image_a": image_a, "image_b": image_b, "target": target}

    dataset = dataset.map(to_pair, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=training, num_parallel_calls=AUTOTUNE)
    dataset = dataset.map(lambda b: {**b, "image_a": _resize(b["image_a"], image_size, stored_size),
                                     "image_b": _resize(b["image_b"], image_size, stored_size)},
                          num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def post_dataset(pattern: str, stored_size: int, batch_size: int, image_size: int = None,
                 scored: bool = False) -> tf.data.Dataset:
    """Batches of ingested (or scored) posts in file order, once, for scoring and evaluation.

    Elements are dicts of `parse_post`'s tensors (`image`, `edge` uint8, `post_id`, `split`, …),
    resized to `image_size` when given.
    """
    files = list_files(pattern, "post record")
    dataset = _records(files, parallel=False)
    dataset = dataset.map(lambda s: records.parse_post(s, stored_size, scored=scored), num_parallel_calls=AUTOTUNE,
                          deterministic=True)
    dataset = dataset.batch(batch_size, num_parallel_calls=AUTOTUNE)
    if image_size and image_size != stored_size:
        dataset = dataset.map(lambda b: {**b, "image": _resize(b["image"], image_size, stored_size),
                                         "edge": _resize(b["edge"], image_size, stored_size)})
    return dataset.prefetch(AUTOTUNE)


def to_signed_unit(images):
    """uint8 [0, 255] → float32 [−1, 1], the GANs' image range."""
    return tf.cast(images, tf.float32) / 127.5 - 1.0


def edge_to_image_dataset(pattern: str, stored_size: int, image_size: int, batch_size: int, seed: int = 0,
                          flip: bool = True, cluster_of: dict = None, shuffle_buffer: int = 2048) -> tf.data.Dataset:
    """Shuffled, repeating batches of (edge map, colour image) of the same post for pix2pix.

    Elements: `edge`, `image` float32 [B, S, S, 3] in [−1, 1] (flipped together when `flip`) and
    `cluster` int32 [B]: the post's cluster id from `cluster_of` ({post_id: id}; a post missing
    there is an error at build time, not a silent 0), or 0 for every post without it.
    """
    files = list_files(pattern, "post record")
    if cluster_of is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(cluster_of), tf.string),
                                                tf.constant(list(cluster_of.values()), tf.int32)), default_value=-1)
    dataset = _records(files, parallel=True).shuffle(shuffle_buffer, seed=seed).repeat().enumerate()

    def to_example(index, serialized):
        post = records.parse_post(serialized, stored_size)
        edge, image = post["edge"], post["image"]
        if flip:
            flipped = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(seed, tf.int64), index])) < 0.5
            edge = tf.where(flipped, tf.reverse(edge, [1]), edge)
            image = tf.where(flipped, tf.reverse(image, [1]), image)
        cluster = table.lookup(post["post_id"]) if cluster_of is not None else tf.constant(0, tf.int32)
        return {"edge": edge, "image": image, "cluster": cluster}

    dataset = dataset.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda b: {"edge": to_signed_unit(_resize(b["edge"], image_size, stored_size)),
                                     "image": to_signed_unit(_resize(b["image"], image_size, stored_size)),
                                     "cluster": b["cluster"]}, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


# Domain labels of DMIT: popularity one-hot (unpopular, popular) ++ modality one-hot
# (edge, color). The order is the translator's label layout; serving maps names onto it too.
POPULARITIES = ("unpopular", "popular")
MODALITIES = ("edge", "color")
LABEL_DIM = len(POPULARITIES) + len(MODALITIES)


def domain_label(popularity: str, modality: str):
    """The 4-d label of a domain, e.g. ("popular", "color") → [0, 1, 0, 1] (float32 numpy)."""
    import numpy as np

    if popularity not in POPULARITIES or modality not in MODALITIES:
        raise ValueError(f"a domain is one of {POPULARITIES} × {MODALITIES}, got ({popularity!r}, {modality!r})")
    label = np.zeros([LABEL_DIM], np.float32)
    label[POPULARITIES.index(popularity)] = 1.0
    label[len(POPULARITIES) + MODALITIES.index(modality)] = 1.0
    return label


def _domain_of(serialized):
    """The score stage's popularity domain of a serialized post ("" when unscored or undecided)."""
    spec = {records.DOMAIN: tf.io.FixedLenFeature([], tf.string, default_value="")}
    return tf.io.parse_single_example(serialized, spec)[records.DOMAIN]


def domain_pair_dataset(pattern: str, stored_size: int, image_size: int, batch_size: int, seed: int = 0,
                        flip: bool = True, cluster_of: dict = None, shuffle_buffer: int = 2048,
                        modalities=MODALITIES) -> tf.data.Dataset:
    """Shuffled, repeating batches of DMIT's domain pairs from scored post records.

    Only posts the score stage put in a popularity domain ("popular" or "unpopular") are used;
    the undecided middle ("") is dropped (on the record's domain field alone, before any image is
    decoded). A domain is popularity × modality: a post gives its colour image to the colour
    domain of its popularity and its edge map to the edge one. Each row of a batch draws a domain
    for A uniformly and a DIFFERENT domain for B, then one random example of each
    (`DMITTrainer` translates A into B's domain and B into A's). DMIT always draws the target from
    D − {E_d(x)} (its eqs. 7 and 10 and the official loader): a row whose two domains agree would
    show D_c the same (content, label) as real and as fake, and teach D_x to call a correctly
    labelled real image fake. Examples are flipped left-right with probability ½ when `flip`;
    every draw is stateless, from the seed, the stream and the example's index, so batches do not
    depend on thread timing.

    Elements: `image_a`, `image_b` float32 [B, S, S, 3] in [−1, 1], `label_a`, `label_b` float32
    [B, 4] (popularity one-hot ++ modality one-hot, `domain_label`); with `cluster_of`
    ({post_id: cluster id}; a post missing there is an error when it is read, not a silent 0)
    also `cluster_a`, `cluster_b` int32 [B].

    Args:
        pattern: glob of scored post records (`<score>/train-*.tfrecord.gz`).
        stored_size: the image size the records hold.
        image_size: the translator's size (images are resized when it differs).
        batch_size: pairs per batch.
        seed: the seed of every random choice; the same seed gives the same batches.
        flip: left-right flip augmentation.
        cluster_of: cluster ids for diversity=clusters.
        shuffle_buffer: records in each domain stream's shuffle buffer.
        modalities: the modalities whose domains are drawn (the labels keep both one-hots).

    Raises:
        DataError: when no file matches or no record is in a popularity domain (unscored records,
            e.g. an ingest output, have none), instead of repeating an empty stream forever, or
            when fewer than two domains are left to pair.
    """
    files = list_files(pattern, "scored post record")

    def of_popularity(popularity):
        return _records(files, parallel=True).filter(lambda s: tf.equal(_domain_of(s), popularity))

    popularities = [p for p in POPULARITIES if next(iter(of_popularity(p).take(1)), None) is not None]
    if not popularities:
        raise DataError(f"no record matching {pattern} is in a popularity domain ({' or '.join(POPULARITIES)}); "
                        "pass the score stage's output, and check score.unpopular_quantile/popular_quantile")
    if cluster_of is not None:
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(list(cluster_of), tf.string),
                                                tf.constant(list(cluster_of.values()), tf.int32)), default_value=-1)
    domains = [(p, m) for p in popularities for m in MODALITIES if m in modalities]
    if len(domains) < 2:
        raise DataError(f"{pattern} gives only the domain(s) {domains}; DMIT needs two to translate between "
                        f"(popularities found: {popularities}, modalities asked for: {list(modalities)})")

    def domain_stream(side: int, index: int):
        popularity, modality = domains[index]
        label = tf.constant(domain_label(popularity, modality))
        stream_seed = (seed * 2 + side) * len(domains) + index

        def to_example(position, serialized):
            post = records.parse_post(serialized, stored_size, scored=True)
            image = post["edge"] if modality == "edge" else post["image"]
            if flip:
                draw = tf.random.stateless_uniform([], seed=tf.stack([tf.cast(stream_seed, tf.int64), position]))
                image = tf.where(draw < 0.5, tf.reverse(image, [1]), image)
            example = {"image": image, "label": label}
            if cluster_of is not None:
                cluster = table.lookup(post["post_id"])
                with tf.control_dependencies([tf.debugging.assert_non_negative(
                        cluster, message="a training post has no cluster assignment; rerun the cluster stage")]):
                    example["cluster"] = tf.identity(cluster)
            return example

        shuffled = of_popularity(popularity).shuffle(shuffle_buffer, seed=stream_seed).repeat().enumerate()
        return shuffled.map(to_example, num_parallel_calls=AUTOTUNE, deterministic=True)

    # Row n: domain a uniform, domain b uniform over the others, both from one seeded draw.
    count = len(domains)
    draws = tf.data.Dataset.random(seed=seed).map(lambda r: tf.math.floormod(r, count * (count - 1)))
    choice_a = draws.map(lambda r: r % count)
    choice_b = draws.map(lambda r: (r % count + 1 + r // count) % count)
    side_a = tf.data.Dataset.choose_from_datasets([domain_stream(0, i) for i in range(count)], choice_a)
    side_b = tf.data.Dataset.choose_from_datasets([domain_stream(1, i) for i in range(count)], choice_b)

    def to_pair(a, b):
        pair = {"image_a": a["image"], "label_a": a["label"], "image_b": b["image"], "label_b": b["label"]}
        if cluster_of is not None:
            pair.update(cluster_a=a["cluster"], cluster_b=b["cluster"])
        return pair

    dataset = tf.data.Dataset.zip(side_a, side_b).map(to_pair).batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda b: {**b, "image_a": to_signed_unit(_resize(b["image_a"], image_size, stored_size)),
                                     "image_b": to_signed_unit(_resize(b["image_b"], image_size, stored_size))},
                          num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)
