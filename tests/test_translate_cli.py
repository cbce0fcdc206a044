"""`pop-tf translate`: the 10-image grid from a translator SavedModel's endpoints (docs/savedmodels.md).

A stand-in SavedModel with the translator's exact signatures makes the grid's layout testable
without training: `translate` returns the reference darkened by 10 × the index of the target
domain in DOMAINS, `sample` returns the content darkened by (seed + sample index), so every tile
shows which call made it, and under which domain label.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import serving, translate

S = 8
DOMAINS = ["unpopular/edge", "unpopular/color", "popular/edge", "popular/color"]


class _FakeTranslator(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8), tf.TensorSpec(None, tf.uint8),
                                  tf.TensorSpec([None], tf.string)])
    def translate(self, content, reference, target_domain):
        reference = tf.ensure_shape(reference, [None, None, None, 3])
        base = tf.cast(tf.image.resize(reference, (S, S), method="nearest"), tf.int32)
        domain = tf.argmax(tf.cast(tf.equal(target_domain[:, None], tf.constant(DOMAINS)[None]), tf.int32), axis=1,
                           output_type=tf.int32)
        return {"images": tf.cast(base - 10 * domain[:, None, None, None], tf.uint8)}

    @tf.function(input_signature=[tf.TensorSpec(None, tf.uint8), tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int32)])
    def sample(self, content, target_domain, seed, num_samples):
        content = tf.ensure_shape(content, [None, None, None, 3])
        base = tf.cast(tf.image.resize(content, (S, S), method="nearest"), tf.int32)
        offsets = tf.cast(seed, tf.int32) + tf.range(num_samples)
        images = base[:, None] - offsets[None, :, None, None, None]
        return {"images": tf.cast(images, tf.uint8)}

    @tf.function(input_signature=[])
    def domains(self):
        return {"names": tf.constant(DOMAINS)}


@pytest.fixture(scope="module")
def fake_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("translator") / "1"
    module = _FakeTranslator()
    tf.saved_model.save(module, str(path), signatures={"translate": module.translate, "sample": module.sample,
                                                       "domains": module.domains})
    serving.write_model_card(str(path), "translator", {}, "")
    return path


def test_grid_is_the_inputs_then_the_papers_ten_image_row(fake_model):
    model = tf.saved_model.load(str(fake_model))
    a, b = np.full((S, S, 3), 100, np.uint8), np.full((2 * S, 2 * S, 3), 200, np.uint8)
    grid = translate.translation_grid(model, a, b, "unpopular/color", "popular/color", seed=5)
    assert grid.shape == (S, 12 * S, 3)
    assert translate.GRID_COLUMNS == ("A", "B", "A→B", "B→A", "A→A rand 1", "A→A rand 2", "A→A rand 3",
                                      "A→A rand 4", "B→B rand 1", "B→B rand 2", "B→B rand 3", "B→B rand 4")
    tiles = [int(grid[0, i * S, 0]) for i in range(12)]
    # A | B | A→B: B's style under popular/color (index 3) | B→A: A's style under A's own label,
    # unpopular/color (index 1), as DMIT's s2w_enc | A→A: 100−(5..8) | B→B: 200−(5..8)
    assert tiles == [100, 200, 200 - 30, 100 - 10, 95, 94, 93, 92, 195, 194, 193, 192]


def test_cli_writes_the_grid_and_names_bad_domains(fake_model, tmp_path):
    for name, value in (("a.png", 100), ("b.png", 200)):
        Image.fromarray(np.full((S, S, 3), value, np.uint8)).save(tmp_path / name)
    args = [sys.executable, "-m", "pop_tf", "translate", "--model", str(fake_model), "--a", str(tmp_path / "a.png"),
            "--b", str(tmp_path / "b.png")]
    result = subprocess.run([*args, "--output", str(tmp_path / "grid.png")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["columns"][2:4] == ["A→B", "B→A"]
    with Image.open(tmp_path / "grid.png") as grid:
        assert grid.size == (12 * S, S)
    bad = subprocess.run([*args, "--domain-b", "viral/color", "--output", str(tmp_path / "x.png")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--domain-b 'viral/color' is not a domain" in bad.stderr
    assert "popular/color" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "x.png").exists()


def test_cli_refuses_a_fifo_named_like_an_image_instead_of_hanging(fake_model, tmp_path):
    fifo = tmp_path / "b.png"
    os.mkfifo(fifo)
    Image.fromarray(np.full((S, S, 3), 9, np.uint8)).save(tmp_path / "a.png")
    args = [sys.executable, "-m", "pop_tf", "translate", "--model", str(fake_model), "--a", str(tmp_path / "a.png"),
            "--b", str(fifo), "--output", str(tmp_path / "g.png")]
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:  # subprocess.run has killed the blocked command
        pytest.fail("pop-tf translate blocked on a FIFO given as --b")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"--b {fifo} is a FIFO (named pipe), not a regular file" in result.stderr
    assert not (tmp_path / "g.png").exists()
