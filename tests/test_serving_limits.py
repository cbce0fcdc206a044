"""Serving limits (issue 17): the SavedModels refuse images over `max_pixels` — encoded ones from
their header, before decoding — and `sample` more than `max_samples` styles; the limits are in
`pop_tf.json`, set at export, and `pop-tf translate` checks `--a`/`--b` against the model's.

The hostile inputs are forged by hand: a valid JPEG of under 1 KB whose SOF0 header claims
12,500×12,500 pixels, and PNGs whose IHDR (with its CRC recomputed) claims the same or 2³²−1 on
each side, which would overflow a product in int64.
"""

import io
import os
import shutil
import struct
import zlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from pop_tf import config as config_lib
from pop_tf import serving, translate
from pop_tf.models import ranker as ranker_lib
from pop_tf.stages import export, train_translator
from tests.conftest import tiny_config

SIZE = 32
DEFAULT_MAX_PIXELS = config_lib.ExportConfig().max_pixels
DEFAULT_MAX_SAMPLES = config_lib.ExportConfig().max_samples


def _encoded(array, fmt) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)


def forged_jpeg(height: int, width: int) -> bytes:
    """A valid 16×16 baseline JPEG whose SOF0 segment is patched to claim height × width."""
    data = bytearray(_encoded(_image(16, 16), "JPEG"))
    i = 2
    while data[i] == 0xFF and data[i + 1] != 0xC0:  # walk the segments up to the frame header
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    assert data[i + 1] == 0xC0, "no SOF0 segment"
    data[i + 5:i + 9] = struct.pack(">HH", height, width)  # after marker, length and precision
    return bytes(data)


def forged_png(height: int, width: int) -> bytes:
    """A 4×4 PNG whose IHDR claims height × width, with a correct CRC (so only the size is a lie)."""
    data = bytearray(_encoded(_image(4, 4), "PNG"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _refusal(call) -> str:
    with pytest.raises(tf.errors.InvalidArgumentError) as error:
        call()
    return error.value.message


@pytest.fixture(scope="module")
def ranker_dir(tmp_path_factory):
    keras.utils.set_random_seed(0)
    ranker = ranker_lib.PopularityRanker(ranker_lib.build_backbone("small", "none", SIZE, small_width=4))
    ranker(tf.zeros([1, SIZE, SIZE, 3]))
    directory = str(tmp_path_factory.mktemp("ranker") / "saved_model")
    return serving.export_ranker(ranker, directory, {"image_size": SIZE}, "")


@pytest.fixture(scope="module")
def ranker(ranker_dir):
    return tf.saved_model.load(ranker_dir)


@pytest.fixture(scope="module")
def translator_dir(tmp_path_factory):
    cfg = tiny_config().train_translator
    directory = str(tmp_path_factory.mktemp("translator") / "saved_model")
    return serving.export_translator(train_translator.build_dmit(cfg), directory, config_lib.to_dict(cfg), "")


def test_the_forgeries_are_what_they_claim():
    jpeg, png = forged_jpeg(12500, 12500), forged_png(12500, 12500)
    assert len(jpeg) < 1024 and len(png) < 1024
    assert tf.image.extract_jpeg_shape(jpeg).numpy().tolist() == [12500, 12500, 3]
    with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(png)) as image:
        assert image.size == (12500, 12500)


@pytest.mark.parametrize("forged", [
    pytest.param(lambda: forged_jpeg(12500, 12500), id="jpeg_12500x12500"),
    pytest.param(lambda: forged_jpeg(65500, 400), id="jpeg_one_long_side"),  # libjpeg's largest side
    pytest.param(lambda: forged_png(12500, 12500), id="png_12500x12500"),
    pytest.param(lambda: forged_png(2**32 - 1, 2**32 - 1), id="png_product_overflows_int64"),
])
def test_score_jpeg_refuses_an_image_whose_header_claims_too_many_pixels(ranker, forged):
    normal = _encoded(_image(40, 50), "JPEG")
    # In a batch with a normal image, as the OOM report had it: the whole request is refused.
    message = _refusal(lambda: ranker.score_jpeg(tf.constant([normal, forged()])))
    assert "header declares" in message and "max_pixels in pop_tf.json" in message, message
    assert f"[{DEFAULT_MAX_PIXELS}]" in message, message


def test_score_jpeg_takes_only_formats_whose_header_it_reads(ranker):
    gif = _encoded(_image(20, 20), "GIF")
    message = _refusal(lambda: ranker.score_jpeg(tf.constant([gif])))
    assert "must hold JPEG or PNG bytes" in message


def test_normal_images_still_score_and_match_the_array_endpoint(ranker):
    pixels = _image(40, 50, seed=3)
    png, jpeg = _encoded(pixels, "PNG"), _encoded(pixels, "JPEG")
    scores = ranker.score_jpeg(tf.constant([png, jpeg]))["score"].numpy()
    assert scores.shape == (2,) and np.isfinite(scores).all()
    np.testing.assert_allclose(scores[0], ranker.score(pixels[None])["score"].numpy()[0], atol=1e-5)


def test_the_card_and_the_asset_record_the_limits(ranker_dir, translator_dir):
    assert serving.read_model_card(ranker_dir)["limits"] == {"max_pixels": DEFAULT_MAX_PIXELS}
    assert serving.read_model_card(translator_dir)["limits"] == {"max_pixels": DEFAULT_MAX_PIXELS,
                                                                 "max_samples": DEFAULT_MAX_SAMPLES}
    with open(os.path.join(ranker_dir, "assets", serving.LIMITS_ASSET)) as f:
        assert f.read() == f"max_pixels\t{DEFAULT_MAX_PIXELS}\n"


@pytest.fixture(scope="module")
def exported(ranker_dir, translator_dir, tmp_path_factory):
    """The export stage over a work folder holding both models, with limits of its own."""
    root = tmp_path_factory.mktemp("export")
    workdir, serving_dir = root / "w", root / "serving"
    shutil.copytree(ranker_dir, workdir / "train_ranker" / "saved_model")
    shutil.copytree(translator_dir, workdir / "train_translator" / "saved_model")
    cfg = config_lib.resolve(None, [f"export.workdir={workdir}", f"export.export_dir={serving_dir}",
                                    "export.models=ranker,translator", "export.max_pixels=1500",
                                    "export.max_samples=2"]).export
    paths = export.run(cfg)
    return cfg, paths, tf.saved_model.load(paths["ranker"]), tf.saved_model.load(paths["translator"])


def test_the_export_stage_sets_the_configured_limits(exported):
    cfg, paths, ranker, _ = exported
    assert serving.read_model_card(paths["ranker"])["limits"] == {"max_pixels": 1500}
    assert serving.read_model_card(paths["translator"])["limits"] == {"max_pixels": 1500, "max_samples": 2}
    message = _refusal(lambda: ranker.score_jpeg(tf.constant([_encoded(_image(40, 50), "PNG")])))
    assert "[40] [x] [50]" in message and "[1500]" in message, message
    # the same limits again: the versions stay; other limits: a new version
    assert export.run(cfg)["ranker"] == paths["ranker"]
    other = config_lib.ExportConfig(**{**config_lib.to_dict(cfg), "max_pixels": 2000})
    assert export.run(other)["ranker"] == os.path.join(os.path.dirname(paths["ranker"]), "2")


def test_array_endpoints_refuse_images_over_the_limit_too(exported):
    _, _, ranker, translator = exported
    message = _refusal(lambda: ranker.score(_image(40, 50)[None]))
    assert "images holds an image of] [40] [x] [50]" in message and "[1500]" in message, message
    assert ranker.score(_image(30, 30)[None])["score"].shape == (1,)
    message = _refusal(lambda: translator.translate(_image(40, 50)[None], _image(8, 8)[None],
                                                    tf.constant(["popular/color"])))
    assert "content holds an image of] [40] [x] [50]" in message, message


def test_sample_refuses_more_styles_than_the_cap(exported):
    translator = exported[3]
    content, target, seed = _image(SIZE, SIZE)[None], tf.constant(["popular/color"]), tf.constant(0, tf.int64)
    for too_many in (3, 10_000):
        message = _refusal(lambda: translator.sample(content, target, seed, tf.constant(too_many)))
        assert "num_samples must be at most] [2]" in message and f"got] [{too_many}]" in message, message
        assert "max_samples in pop_tf.json" in message
    assert translator.sample(content, target, seed, tf.constant(2))["images"].shape == (1, 2, SIZE, SIZE, 3)


def test_export_refuses_a_model_without_limits_and_bad_limits(tmp_path):
    source = tmp_path / "w" / "train_ranker" / "saved_model"
    source.mkdir(parents=True)
    serving.write_model_card(str(source), "ranker", {}, "")  # as pop_tf wrote cards before the limits
    cfg = config_lib.ExportConfig(workdir=str(tmp_path / "w"), export_dir=str(tmp_path / "e"), models=["ranker"])
    with pytest.raises(export.ExportError, match="older pop_tf without serving limits"):
        export.run(cfg)
    for key, value in (("max_pixels", "0"), ("max_pixels", str(2**31)), ("max_samples", "-1")):
        with pytest.raises(config_lib.ConfigError, match=f"export.{key}"):
            config_lib.resolve(None, [f"export.{key}={value}"])


@pytest.mark.parametrize("limit, image, expected", [
    (1000, lambda: _encoded(_image(40, 50), "PNG"), "50x40 = 2,000 pixels, above the limit of 1,000"),
    (None, lambda: forged_png(12500, 12500), f"above the limit of {DEFAULT_MAX_PIXELS:,}"),
    (None, lambda: forged_jpeg(12500, 12500), f"above the limit of {DEFAULT_MAX_PIXELS:,}"),
])
def test_translate_checks_a_and_b_against_the_models_limit_before_decoding(limit, image, expected, tmp_path,
                                                                          capsys):
    model = tmp_path / "model"
    model.mkdir()
    # no graph is needed: the images are checked before the model loads
    serving.write_model_card(str(model), "translator", {}, "", **({"limits": {"max_pixels": limit}} if limit else {}))
    (tmp_path / "a.png").write_bytes(_encoded(_image(8, 8), "PNG"))
    (tmp_path / "b.img").write_bytes(image())
    code = translate.main(["--model", str(model), "--a", str(tmp_path / "a.png"), "--b", str(tmp_path / "b.img"),
                           "--output", str(tmp_path / "grid.png")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("pop-tf translate: error: --b ") and expected in err, err
    assert "max_pixels in the model's pop_tf.json" in err and "Traceback" not in err
    assert not (tmp_path / "grid.png").exists()
