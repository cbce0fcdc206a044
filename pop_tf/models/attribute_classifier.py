"""A small CNN that reads a synthetic garment's attributes: shape, colour, pattern and sleeve.

The embedded dataset (`pop_tf.synth`) knows every garment's attributes, so a classifier trained on
its real images is a judge that needs no download: it reads what a generated garment shows
(`pop_tf.metrics.attributes`), and its penultimate layer is a feature space in which FID, KID,
precision/recall, NDB and diversity mean something for these images (ImageNet-free, so the
figures are named `*_synth` and compare only within pop_tf's synthetic data).

Architecture: four conv stages (3×3 conv, batch norm, ReLU, 2×2 max pool; widths w, 2w, 4w, 4w),
global average pooling, beside a per-pixel colour branch (two 1×1 convs of 2w, averaged), then a
`features` dense layer (ReLU) and one softmax head per attribute. The
input is float32 [N, S, S, 3] in [0, 1]; `preprocess` turns uint8 images of any size into that.

Training (`train`) uses light augmentation so the judge is not thrown by the small defects every
generator makes: horizontal flips, shifts of up to `max_shift`·S on white, occasional blur, and a
little per-pixel noise. Per-pixel noise is kept faint on purpose; images whose pixels are mostly
noise are *outliers*: with `outlier_share` > 0 (outlier exposure, Hendrycks et al. 2019) a share
of every batch is replaced by uniform noise or by garments drowned in strong per-pixel noise,
with the uniform distribution as the target of every head. A plain softmax classifier reads the
mean colour of a speckled silhouette with high confidence; with outlier exposure, confidence
means "a clean garment of this colour", which is what the evaluation asks.

References:
    Hendrycks, Mazeika & Dietterich. "Deep Anomaly Detection with Outlier Exposure", ICLR 2019.
"""

import numpy as np

from pop_tf import synth

# Heads and their classes, in label order. Sleeves in the order of their popularity effect.
HEADS = {
    "shape": tuple(synth.SHAPES),
    "color": tuple(synth.COLORS),
    "pattern": tuple(synth.PATTERNS),
    "sleeve": tuple(synth.SLEEVE_EFFECT),
}
FEATURES_LAYER = "features"


def preprocess(images, image_size: int):
    """uint8 (or float in [0, 255]) [N, H, W, 3] → float32 [N, S, S, 3] in [0, 1], antialiased resize."""
    import tensorflow as tf

    images = tf.cast(tf.convert_to_tensor(images), tf.float32)
    if images.shape[1] != image_size or images.shape[2] != image_size:
        images = tf.clip_by_value(tf.image.resize(images, (image_size, image_size), antialias=True), 0.0, 255.0)
    return images / 255.0


def build(image_size: int = 32, width: int = 24, feature_dim: int = 128):
    """The classifier: inputs [N, S, S, 3] in [0, 1]; outputs {head: softmax [N, C], "features": [N, D]}."""
    import keras

    from pop_tf.layers import normalization

    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = inputs
    for stage, filters in enumerate((width, 2 * width, 4 * width, 4 * width)):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{stage}")(x)
        x = normalization.BatchNormalization(name=f"bn{stage}")(x)
        x = keras.layers.ReLU(name=f"relu{stage}")(x)
        if x.shape[1] > 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{stage}")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    # A per-pixel colour branch (1×1 convs, averaged): a learned colour histogram, so the colour
    # heads see how much of the garment has which colour, which pooled shape features blur.
    colour = keras.layers.Conv2D(2 * width, 1, activation="relu", name="colour0")(inputs)
    colour = keras.layers.Conv2D(2 * width, 1, activation="relu", name="colour1")(colour)
    colour = keras.layers.GlobalAveragePooling2D(name="colour_pool")(colour)
    x = keras.layers.Concatenate(name="joined")([x, colour])
    features = keras.layers.Dense(feature_dim, activation="relu", name=FEATURES_LAYER)(x)
    outputs = {name: keras.layers.Dense(len(classes), activation="softmax", name=name)(features)
               for name, classes in HEADS.items()}
    outputs[FEATURES_LAYER] = features
    return keras.Model(inputs, outputs, name="attribute_classifier")


def labels_of(rows) -> dict:
    """{head: int32 [N]} class indices of truth.jsonl rows (dicts with shape, color, pattern, sleeve)."""
    index = {head: {name: i for i, name in enumerate(classes)} for head, classes in HEADS.items()}
    return {head: np.asarray([index[head][row[head]] for row in rows], np.int32) for head in HEADS}


def _augment(image, seed, image_size: int, max_shift: float, noise: float):
    """One training image [S, S, 3] in [0, 1], flipped, shifted on white, sometimes blurred, faintly noised."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 5)
    image = tf.image.stateless_random_flip_left_right(image, seeds[0])
    pad = max(1, int(round(max_shift * image_size)))
    padded = tf.pad(image - 1.0, [[pad, pad], [pad, pad], [0, 0]]) + 1.0
    image = tf.image.stateless_random_crop(padded, [image_size, image_size, 3], seeds[1])
    # Generators blur: a third of the images go down to 3/4 size and back up.
    small = max(2, (3 * image_size) // 4)
    blurred = tf.image.resize(tf.image.resize(image[None], (small, small), antialias=True),
                              (image_size, image_size))[0]
    image = tf.where(tf.random.stateless_uniform([], seeds[2]) < 1 / 3, blurred, image)
    sd = noise * tf.random.stateless_uniform([], seeds[3])
    image = image + sd * tf.random.stateless_normal(tf.shape(image), seeds[4])
    return tf.clip_by_value(image, 0.0, 1.0)


def _outlier(image, seed):
    """Uniform noise, or the garment under strong per-pixel RGB noise (sd 0.2..0.5), in [0, 1]."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 4)
    uniform = tf.random.stateless_uniform(tf.shape(image), seeds[0])
    sd = 0.2 + 0.3 * tf.random.stateless_uniform([], seeds[1])
    speckled = tf.clip_by_value(image + sd * tf.random.stateless_normal(tf.shape(image), seeds[2]), 0.0, 1.0)
    return tf.where(tf.random.stateless_uniform([], seeds[3]) < 0.5, uniform, speckled)


def train(images: np.ndarray, labels: dict, image_size: int = 32, width: int = 24, feature_dim: int = 128,
          steps: int = 900, batch_size: int = 64, learning_rate: float = 3e-3, max_shift: float = 0.08,
          noise: float = 0.05, outlier_share: float = 0.15, seed: int = 0):
    """Trains a classifier from scratch and returns it (a Keras model, see `build`).

    Args:
        images: uint8 [N, S, S, 3] already at `image_size` (see `preprocess`).
        labels: {head: int [N]} class indices (see `labels_of`).
        steps: batches of training, whatever the number of images (a small dataset is seen more
            often, a large one less); the learning rate follows a cosine decay to 0.
        max_shift: largest shift as a fraction of the side.
        noise: largest sd of the faint per-pixel noise augmentation (images in [0, 1]).
        outlier_share: share of each batch replaced by outliers with uniform targets (0: none).
        seed: decides the initial weights, the order and every augmentation draw.
    """
    import keras
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1:] != (image_size, image_size, 3):
        raise ValueError(f"images must be [N, {image_size}, {image_size}, 3], got {images.shape}")
    count = len(images)
    keras.utils.set_random_seed(seed)
    model = build(image_size, width, feature_dim)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps)
    heads = list(HEADS)

    def example(index, item):
        image, targets = item
        image = tf.cast(image, tf.float32) / 255.0
        seed_pair = tf.stack([tf.constant(seed, tf.int64), index])
        seeds = tf.random.experimental.stateless_split(seed_pair, 3)
        image = _augment(image, seeds[0], image_size, max_shift, noise)
        soft = {h: tf.one_hot(targets[h], len(HEADS[h])) for h in heads}
        if outlier_share > 0:
            is_outlier = tf.random.stateless_uniform([], seeds[1]) < outlier_share
            image = tf.where(is_outlier, _outlier(image, seeds[2]), image)
            soft = {h: tf.where(is_outlier, tf.fill([len(HEADS[h])], 1.0 / len(HEADS[h])), soft[h]) for h in heads}
        return image, soft

    dataset = (tf.data.Dataset.from_tensor_slices((images, {h: labels[h] for h in heads}))
               .shuffle(count, seed=seed, reshuffle_each_iteration=True).repeat().enumerate()
               .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
               .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    # Trained through a view without the features output (which has no target); it shares the layers.
    heads_only = keras.Model(model.inputs, {h: model.get_layer(h).output for h in heads})
    heads_only.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss={h: keras.losses.CategoricalCrossentropy() for h in heads})
    heads_only.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False)  # shuffled above
    return model
