"""Image preprocessing in TensorFlow graphs, shared by models and the exported SavedModels.

`fit_to_square` fits images of any size into a model's S×S square the way ingest fitted the
training images; `to_uint8` turns a generator's [−1, 1] output back into pixels. Models call
them inside their own graphs (`pop_tf.models.clusterer`), and `pop_tf.serving` builds its
endpoints from them, so a served model prepares images exactly as training did.
"""


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


def to_uint8(images):
    """float [−1, 1] → uint8 pixels: round((x + 1)·127.5), clipped."""
    import tensorflow as tf

    return tf.cast(tf.clip_by_value(tf.round((images + 1.0) * 127.5), 0.0, 255.0), tf.uint8)
