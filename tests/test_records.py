"""The record format: encode → decode and encode → tf.data parse round trips."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image

from pop_tf import records


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _post(size=8):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    edge = np.where(rng.random((size, size)) > 0.5, 255, 0).astype(np.uint8)
    return {
        "post_id": "p-ü1", "user_id": "u1", "image_png": _png(image), "edge_png": _png(edge),
        "image_size": size, "image": "images/ü.png", "likes": 42, "followers": None, "comments": 3,
        "posted_at_unix": 1_700_000_000, "downloaded_at_unix": None, "caption": "#a 👗",
        "content_type": "photo", "split": "train", "phash": (1 << 64) - 5, "pixel_digest": "ab" * 32,
        "source_index": 7, "extra": {"source": "x", "n": [1, 2]},
    }, image, edge


def test_encode_decode_round_trip():
    post, _, _ = _post()
    decoded = records.decode_post(records.encode_post(post))
    assert decoded.pop("format_version") == records.FORMAT_VERSION
    assert decoded == post


def test_tf_parse_gives_images_and_fields():
    post, image, edge = _post()
    parsed = records.parse_post(tf.constant(records.encode_post(post)), image_size=8)
    np.testing.assert_array_equal(parsed["image"].numpy(), image)
    assert parsed["edge"].shape == (8, 8, 3)
    np.testing.assert_array_equal(parsed["edge"].numpy()[..., 1], edge)
    assert parsed["likes"].numpy() == 42 and parsed["followers"].numpy() == -1
    assert parsed["post_id"].numpy().decode() == "p-ü1"


def test_parse_rejects_wrong_image_size():
    post, _, _ = _post()
    try:
        records.parse_post(tf.constant(records.encode_post(post)), image_size=16)
    except (tf.errors.InvalidArgumentError, ValueError) as e:
        assert "16" in str(e) or "shape" in str(e)
    else:
        raise AssertionError("a record of the wrong size must not parse silently")


def test_iter_serialized_reads_gzip_shards(tmp_path):
    post, _, _ = _post()
    for shard in range(2):
        with tf.io.TFRecordWriter(str(tmp_path / f"train-{shard}.tfrecord.gz"), options="GZIP") as writer:
            for i in range(3):
                writer.write(records.encode_post({**post, "post_id": f"p{shard}{i}"}))
    ids = [records.decode_post(s)["post_id"] for s in records.iter_serialized(str(tmp_path / "train-*"))]
    assert ids == ["p00", "p01", "p02", "p10", "p11", "p12"]


def test_records_are_wire_compatible_with_tf_train_example():
    post, _, _ = _post()
    serialized = records.encode_post(post)
    example = tf.train.Example.FromString(serialized)
    assert example.features.feature[records.POST_ID].bytes_list.value[0] == "p-ü1".encode()
    assert example.features.feature[records.PHASH].int64_list.value[0] == -5  # signed storage
    assert records.decode_post(example.SerializeToString())["phash"] == (1 << 64) - 5


def test_beam_side_of_the_format_does_not_import_tensorflow():
    """Beam workers build records without paying TensorFlow's multi-second import."""
    import subprocess
    import sys
    code = ("import sys; import pop_tf.stages.ingest, pop_tf.stages.pairs; "
            "from pop_tf import records; records.decode_post(records.encode_post("
            "{'post_id': 'x', 'phash': 1, 'image_png': b'', 'edge_png': b''})); "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
