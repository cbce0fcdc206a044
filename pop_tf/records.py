"""The TFRecord format of ingested posts: the only module that knows the feature keys.

Ingest writes one `tf.train.Example` per accepted post with `encode_post`; Python readers use
`decode_post` and tf.data pipelines use `parse_post` (a graph function over a batch or a single
serialized example). Images are stored as PNG (lossless, so training sees exactly what ingest
produced): the colour garment at the configured size and its edge map (single channel).
"""

import json

from pop_tf import tf_example

# Feature keys. Changing one is a format change: bump FORMAT_VERSION.
FORMAT_VERSION = 1
POST_ID = "post_id"
USER_ID = "user_id"
IMAGE_PNG = "image/png"
EDGE_PNG = "edge/png"
IMAGE_SIZE = "image/size"
IMAGE_PATH = "image/path"
LIKES = "likes"
FOLLOWERS = "followers"  # -1: not given
COMMENTS = "comments"  # -1: not given
POSTED_AT = "posted_at"  # unix seconds, -1: not given
DOWNLOADED_AT = "downloaded_at"  # unix seconds, -1: not given
CAPTION = "caption"
CONTENT_TYPE = "content_type"
SPLIT = "split"
PHASH = "image/phash"  # 64-bit perceptual hash, stored as a signed int64
PIXEL_DIGEST = "image/sha256"
SOURCE_INDEX = "source/index"  # record number in the metadata file (0-based)
EXTRA_JSON = "extra_json"  # unknown input fields, carried through untouched
VERSION = "format_version"

_INT_FIELDS = (LIKES, FOLLOWERS, COMMENTS, POSTED_AT, DOWNLOADED_AT, IMAGE_SIZE, PHASH,
               SOURCE_INDEX, VERSION)
_BYTES_FIELDS = (POST_ID, USER_ID, IMAGE_PNG, EDGE_PNG, IMAGE_PATH, CAPTION, CONTENT_TYPE, SPLIT,
                 PIXEL_DIGEST, EXTRA_JSON)
_STRING_FIELDS = tuple(k for k in _BYTES_FIELDS if k not in (IMAGE_PNG, EDGE_PNG))

# Python-side names of the post dict that `encode_post` takes and `decode_post` returns.
_PY_NAMES = {
    POST_ID: "post_id", USER_ID: "user_id", IMAGE_PNG: "image_png", EDGE_PNG: "edge_png",
    IMAGE_SIZE: "image_size", IMAGE_PATH: "image", LIKES: "likes", FOLLOWERS: "followers",
    COMMENTS: "comments", POSTED_AT: "posted_at_unix", DOWNLOADED_AT: "downloaded_at_unix",
    CAPTION: "caption", CONTENT_TYPE: "content_type", SPLIT: "split", PHASH: "phash",
    PIXEL_DIGEST: "pixel_digest", SOURCE_INDEX: "source_index", EXTRA_JSON: "extra",
    VERSION: "format_version",
}
_DEFAULTS = {FOLLOWERS: -1, COMMENTS: -1, POSTED_AT: -1, DOWNLOADED_AT: -1}


def _to_signed64(value: int) -> int:
    return value - (1 << 64) if value >= (1 << 63) else value


def _to_unsigned64(value: int) -> int:
    return value + (1 << 64) if value < 0 else value


def encode_post(post: dict) -> bytes:
    """Serializes a post dict (keys as returned by `decode_post`) to a tf.train.Example.

    Deterministic: the feature map is written in key order, so equal posts are equal bytes in
    every process (protobuf's default map order differs between processes, i.e. between runners'
    workers, which would make two runs' shards differ byte for byte)."""
    feature = {}
    for key in _INT_FIELDS:
        name = _PY_NAMES[key]
        if key == VERSION:
            value = FORMAT_VERSION
        elif key == PHASH:
            value = _to_signed64(int(post[name]))
        else:
            value = post.get(name)
            value = _DEFAULTS.get(key, 0) if value is None else int(value)
        feature[key] = tf_example.Feature(int64_list=tf_example.Int64List(value=[value]))
    for key in _BYTES_FIELDS:
        name = _PY_NAMES[key]
        value = post.get(name)
        if key == EXTRA_JSON:
            value = json.dumps(value or {}, sort_keys=True, ensure_ascii=False)
        if value is None:
            value = b""
        if isinstance(value, str):
            value = value.encode("utf-8")
        feature[key] = tf_example.Feature(bytes_list=tf_example.BytesList(value=[value]))
    example = tf_example.Example(features=tf_example.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def decode_post(serialized: bytes) -> dict:
    """The inverse of `encode_post`, in plain Python (for tests, stats and Beam transforms)."""
    example = tf_example.Example.FromString(serialized)
    features = example.features.feature
    post = {}
    for key in _INT_FIELDS:
        value = features[key].int64_list.value[0]
        post[_PY_NAMES[key]] = _to_unsigned64(value) if key == PHASH else value
    for key in _BYTES_FIELDS:
        value = features[key].bytes_list.value[0]
        if key in _STRING_FIELDS:
            value = value.decode("utf-8")
        post[_PY_NAMES[key]] = value
    post["extra"] = json.loads(post["extra"])
    for key, default in _DEFAULTS.items():
        if post[_PY_NAMES[key]] == default:
            post[_PY_NAMES[key]] = None
    return post


def feature_spec() -> dict:
    """The `tf.io.parse_example` spec of post records."""
    import tensorflow as tf
    return {
        **{key: tf.io.FixedLenFeature([], tf.int64) for key in _INT_FIELDS},
        **{key: tf.io.FixedLenFeature([], tf.string) for key in _BYTES_FIELDS},
    }


def parse_post(serialized, image_size: int, scored: bool = False) -> dict:
    """Parses one serialized example into tensors for tf.data.

    Returns `image` and `edge` as uint8 [S, S, 3] (the edge map is expanded to three channels
    so both modalities feed the same networks), `likes`, `followers`, `post_id`, `user_id`,
    `posted_at` and `split`; with `scored`, also the score stage's `score` and `domain`.
    """
    import tensorflow as tf  # imported where tensors are needed, not by the record builders

    parsed = tf.io.parse_single_example(serialized, scored_feature_spec() if scored else feature_spec())
    image = tf.io.decode_png(parsed[IMAGE_PNG], channels=3)
    edge = tf.io.decode_png(parsed[EDGE_PNG], channels=3)
    image = tf.ensure_shape(image, [image_size, image_size, 3])
    edge = tf.ensure_shape(edge, [image_size, image_size, 3])
    return {
        "image": image,
        "edge": edge,
        "post_id": parsed[POST_ID],
        "user_id": parsed[USER_ID],
        "likes": parsed[LIKES],
        "followers": parsed[FOLLOWERS],
        "posted_at": parsed[POSTED_AT],
        "split": parsed[SPLIT],
        **({"score": parsed[SCORE], "domain": parsed[DOMAIN]} if scored else {}),
    }


# Scored post records (the score stage): a post record plus the ranker's score and the
# popularity domain it gives the translator ("popular", "unpopular", or "" for the middle).
SCORE = "popularity/score"
DOMAIN = "popularity/domain"
DOMAINS = ("unpopular", "popular")


def add_score(serialized: bytes, score: float, domain: str) -> bytes:
    """A post record with the ranker's `score` and popularity `domain` added."""
    if domain not in DOMAINS + ("",):
        raise ValueError(f"domain must be one of {DOMAINS} or '', got {domain!r}")
    example = tf_example.Example.FromString(serialized)
    features = example.features.feature
    features[SCORE].float_list.value[:] = [float(score)]
    features[DOMAIN].bytes_list.value[:] = [domain.encode("utf-8")]
    return example.SerializeToString(deterministic=True)


def decode_scored_post(serialized: bytes) -> dict:
    """`decode_post` plus `score` (float32-rounded) and `domain`."""
    post = decode_post(serialized)
    features = tf_example.Example.FromString(serialized).features.feature
    post["score"] = features[SCORE].float_list.value[0]
    post["domain"] = features[DOMAIN].bytes_list.value[0].decode("utf-8")
    return post


def scored_feature_spec() -> dict:
    import tensorflow as tf
    return {**feature_spec(), SCORE: tf.io.FixedLenFeature([], tf.float32),
            DOMAIN: tf.io.FixedLenFeature([], tf.string)}


def iter_serialized(pattern: str):
    """Yields serialized examples from GZIP TFRecord files matching `pattern` (sorted order)."""
    import tensorflow as tf  # imported where tensors are needed, not by the record builders

    paths = sorted(tf.io.gfile.glob(pattern))
    for path in paths:
        for record in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator():
            yield record


# Ids in the CSV files pop_tf writes (scores.csv, assignments.csv) come from the user's metadata:
# a cell a spreadsheet would run as a formula (=, +, -, @, or a tab, carriage return or line feed
# first, also after leading spaces) gets a leading single quote, as OWASP advises for CSV
# injection, and so does one that already starts with a quote, so every reader that undoes it
# with `from_csv_cell` gets the id back exactly.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def csv_cell(text: str) -> str:
    """`text` safe as a CSV cell a spreadsheet opens: not read as a formula (see `from_csv_cell`)."""
    text = str(text)
    if text.startswith(("'", *_FORMULA_START)) or text.lstrip(" ").startswith(_FORMULA_START):
        return "'" + text
    return text


def from_csv_cell(cell: str) -> str:
    """The text `csv_cell` was given."""
    return cell[1:] if cell.startswith("'") else cell


# Pair records (the pairs stage): one tf.train.Example per popularity-discriminable image pair,
# A the more popular post. Both images' PNG bytes are inside, so the ranker reads one file and
# never joins back to the post records; likes, followers and posting times of both posts are kept
# so the pair rule can be checked from the file alone.
PAIR_FORMAT_VERSION = 1
PAIR_POST_ID_A = "a/post_id"
PAIR_POST_ID_B = "b/post_id"
PAIR_IMAGE_A = "a/image/png"
PAIR_IMAGE_B = "b/image/png"
PAIR_LIKES_A = "a/likes"
PAIR_LIKES_B = "b/likes"
PAIR_FOLLOWERS_A = "a/followers"  # -1: not given
PAIR_FOLLOWERS_B = "b/followers"  # -1: not given
PAIR_POSTED_AT_A = "a/posted_at"  # unix seconds
PAIR_POSTED_AT_B = "b/posted_at"  # unix seconds
PAIR_MARGIN = "margin"  # popularity(A) - popularity(B), float32
# USER_ID, SPLIT and IMAGE_SIZE keep their post-record keys; VERSION holds PAIR_FORMAT_VERSION.

_PAIR_INT_FIELDS = (PAIR_LIKES_A, PAIR_LIKES_B, PAIR_FOLLOWERS_A, PAIR_FOLLOWERS_B, PAIR_POSTED_AT_A,
                    PAIR_POSTED_AT_B, IMAGE_SIZE, VERSION)
_PAIR_BYTES_FIELDS = (PAIR_POST_ID_A, PAIR_POST_ID_B, USER_ID, SPLIT, PAIR_IMAGE_A, PAIR_IMAGE_B)
_PAIR_STRING_FIELDS = (PAIR_POST_ID_A, PAIR_POST_ID_B, USER_ID, SPLIT)
_PAIR_PY_NAMES = {
    PAIR_POST_ID_A: "post_id_a", PAIR_POST_ID_B: "post_id_b", USER_ID: "user_id", SPLIT: "split",
    PAIR_IMAGE_A: "image_png_a", PAIR_IMAGE_B: "image_png_b", PAIR_LIKES_A: "likes_a",
    PAIR_LIKES_B: "likes_b", PAIR_FOLLOWERS_A: "followers_a", PAIR_FOLLOWERS_B: "followers_b",
    PAIR_POSTED_AT_A: "posted_at_unix_a", PAIR_POSTED_AT_B: "posted_at_unix_b",
    IMAGE_SIZE: "image_size", PAIR_MARGIN: "margin", VERSION: "format_version",
}
_PAIR_DEFAULTS = {PAIR_FOLLOWERS_A: -1, PAIR_FOLLOWERS_B: -1}


def encode_pair(pair: dict) -> bytes:
    """Serializes a pair dict (keys as returned by `decode_pair`) to a tf.train.Example."""
    feature = {}
    for key in _PAIR_INT_FIELDS:
        value = PAIR_FORMAT_VERSION if key == VERSION else pair.get(_PAIR_PY_NAMES[key])
        value = _PAIR_DEFAULTS.get(key, 0) if value is None else int(value)
        feature[key] = tf_example.Feature(int64_list=tf_example.Int64List(value=[value]))
    for key in _PAIR_BYTES_FIELDS:
        value = pair.get(_PAIR_PY_NAMES[key]) or b""
        if isinstance(value, str):
            value = value.encode("utf-8")
        feature[key] = tf_example.Feature(bytes_list=tf_example.BytesList(value=[value]))
    feature[PAIR_MARGIN] = tf_example.Feature(float_list=tf_example.FloatList(value=[float(pair["margin"])]))
    example = tf_example.Example(features=tf_example.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def decode_pair(serialized: bytes) -> dict:
    """The inverse of `encode_pair` in plain Python; `margin` comes back rounded to float32."""
    features = tf_example.Example.FromString(serialized).features.feature
    pair = {}
    for key in _PAIR_INT_FIELDS:
        value = features[key].int64_list.value[0]
        pair[_PAIR_PY_NAMES[key]] = None if _PAIR_DEFAULTS.get(key) == value else value
    for key in _PAIR_BYTES_FIELDS:
        value = features[key].bytes_list.value[0]
        pair[_PAIR_PY_NAMES[key]] = value.decode("utf-8") if key in _PAIR_STRING_FIELDS else value
    pair["margin"] = features[PAIR_MARGIN].float_list.value[0]
    return pair


def pair_feature_spec() -> dict:
    """The `tf.io.parse_example` spec of pair records."""
    import tensorflow as tf
    return {
        **{key: tf.io.FixedLenFeature([], tf.int64) for key in _PAIR_INT_FIELDS},
        **{key: tf.io.FixedLenFeature([], tf.string) for key in _PAIR_BYTES_FIELDS},
        PAIR_MARGIN: tf.io.FixedLenFeature([], tf.float32),
    }


def parse_pair(serialized, image_size: int) -> dict:
    """Parses one serialized pair into tensors for tf.data.

    Returns `image_a` (the more popular post's image) and `image_b` as uint8 [S, S, 3], `margin`
    (float32, > 0), `post_id_a`, `post_id_b`, `user_id` and `split`.
    """
    import tensorflow as tf  # imported where tensors are needed, not by the record builders

    parsed = tf.io.parse_single_example(serialized, pair_feature_spec())
    image_a = tf.ensure_shape(tf.io.decode_png(parsed[PAIR_IMAGE_A], channels=3), [image_size, image_size, 3])
    image_b = tf.ensure_shape(tf.io.decode_png(parsed[PAIR_IMAGE_B], channels=3), [image_size, image_size, 3])
    return {
        "image_a": image_a,
        "image_b": image_b,
        "margin": parsed[PAIR_MARGIN],
        "post_id_a": parsed[PAIR_POST_ID_A],
        "post_id_b": parsed[PAIR_POST_ID_B],
        "user_id": parsed[USER_ID],
        "split": parsed[SPLIT],
    }
