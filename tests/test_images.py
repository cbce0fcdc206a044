"""Tests for pop_tf.beam.images: hostile decoding, colour modes, geometry, edge maps and hashes."""

import concurrent.futures
import io
import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFile
from scipy import ndimage

from pop_tf.beam import images, reasons
from pop_tf.beam.reasons import Rejected
from tests import hostile_images as hostile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALID = sorted(name for name, (_, expected) in hostile.CORPUS.items() if expected is None)
INVALID = sorted(name for name, (_, expected) in hostile.CORPUS.items() if expected is not None)


def decode(name, **limits):
    return images.decode_image(hostile.CORPUS[name][0](), **limits)


def reject_of(data, **limits):
    with pytest.raises(Rejected) as info:
        images.decode_image(data, **limits)
    return info.value


def pixel(image, fx, fy):
    """RGB of `image` at fractional coordinates, as ints."""
    width, height = image.size
    xy = (round(fx * (width - 1)), round(fy * (height - 1)))
    return tuple(int(v) for v in image.getpixel(xy))


def assert_close(actual, expected, tol):
    assert all(abs(a - e) <= tol for a, e in zip(actual, expected)), (actual, expected)


def shifted(array, dx, dy):
    """`array` moved by (dx, dy) pixels, the uncovered edge filled with white."""
    out = np.full_like(array, 255)
    height, width = array.shape[:2]
    out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = (
        array[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)])
    return out


def photo_like(kind, size=128):
    """A garment with asymmetric details (a print and a pocket), off-centre; like a real photo,
    it has no exact mirror symmetry (see test_phash_symmetric_images_are_unstable)."""
    image = hostile.garment(kind, size=(size, size), shift=(7, -3))
    draw = ImageDraw.Draw(image)
    draw.ellipse([70, 50, 90, 70], fill=(250, 220, 40))
    draw.rectangle([40, 60, 55, 100], fill=(30, 30, 30))
    return np.asarray(image)


def jpeg_roundtrip(array, quality):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


# ------------------------------------------------------------------------------------------
# The corpus
# ------------------------------------------------------------------------------------------


def test_corpus_is_deterministic_and_covers_every_image_reason():
    for name, (builder, _) in hostile.CORPUS.items():
        assert builder() == builder(), name
    image_reasons = {reasons.EMPTY_FILE, reasons.NOT_AN_IMAGE, reasons.UNSUPPORTED_FORMAT,
                     reasons.CORRUPT_IMAGE, reasons.DECOMPRESSION_BOMB, reasons.IMAGE_TOO_SMALL,
                     reasons.EXTREME_ASPECT}
    assert image_reasons <= {expected for _, expected in hostile.CORPUS.values()}


@pytest.mark.parametrize("name", INVALID)
def test_hostile_file_is_rejected_with_its_reason(name):
    builder, expected = hostile.CORPUS[name]
    rejected = reject_of(builder())
    assert rejected.reason == expected, rejected.message
    assert rejected.reason in reasons.ALL
    assert len(rejected.message) > 20 and str(rejected) == rejected.message


@pytest.mark.parametrize("name", VALID)
def test_valid_file_decodes_to_rgb_and_squares(name):
    image = decode(name)
    assert image.mode == "RGB"
    assert min(image.size) >= 16
    square = images.pad_to_square_and_resize(image, 48)
    assert square.shape == (48, 48, 3) and square.dtype == np.uint8
    # Every valid corpus image is a garment on a white (or transparent) background.
    assert (square[0, 0] >= 240).all(), square[0, 0]
    assert square.min() < 200


def test_sentences_name_the_problem_concretely():
    assert "HTML" in reject_of(hostile.html_as_jpg()).message
    assert "PDF" in reject_of(hostile.pdf_header()).message
    assert "PPM" in reject_of(hostile.ppm_image()).message
    assert "SVG" in reject_of(hostile.svg_image()).message
    assert "HEIC" in reject_of(hostile.heic_header()).message
    assert "truncated" in reject_of(hostile.truncated_jpeg()).message
    bomb = reject_of(hostile.decompression_bomb()).message
    assert "20000x20000 = 400,000,000 pixels" in bomb and "ingest.max_pixels" in bomb
    assert "8000x8000 = 64,000,000 pixels" in reject_of(hostile.pixel_bomb()).message
    assert "4x4" in reject_of(hostile.tiny_image()).message
    assert "1000x20" in reject_of(hostile.extreme_aspect()).message
    assert "50.0:1" in reject_of(hostile.extreme_aspect()).message


def test_limits_are_parameters():
    data = hostile.valid_png()  # 128x96, ~19 KB
    assert reject_of(data, max_file_bytes=len(data) - 1).reason == reasons.FILE_TOO_LARGE
    assert images.decode_image(data, max_file_bytes=len(data)).size == (128, 96)
    assert reject_of(data, max_pixels=128 * 96 - 1).reason == reasons.DECOMPRESSION_BOMB
    assert images.decode_image(data, max_pixels=128 * 96).size == (128, 96)
    assert reject_of(data, min_side=97).reason == reasons.IMAGE_TOO_SMALL
    assert reject_of(data, max_aspect=1.3).reason == reasons.EXTREME_ASPECT
    assert images.decode_image(hostile.extreme_aspect(), max_aspect=50.0).size == (1000, 20)
    assert images.decode_image(hostile.tiny_image(), min_side=4).size == (4, 4)


def test_accepts_any_bytes_like_and_refuses_other_types():
    data = hostile.valid_png()
    assert images.decode_image(bytearray(data)).size == (128, 96)
    assert images.decode_image(memoryview(data)).size == (128, 96)
    with pytest.raises(TypeError):
        images.decode_image("not bytes")


# ------------------------------------------------------------------------------------------
# Decompression bombs and truncation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["decompression_bomb", "pixel_bomb"])
def test_bomb_is_rejected_from_the_header_without_decoding(name, monkeypatch):
    data = hostile.CORPUS[name][0]()
    assert len(data) < 100_000  # small on disk, huge when decoded
    loads = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: loads.append(self.size) or original(self))
    start = time.perf_counter()
    assert reject_of(data).reason == reasons.DECOMPRESSION_BOMB
    assert time.perf_counter() - start < 1.0
    assert loads == []


def test_bomb_does_not_allocate_its_pixels():
    # Peak RSS is per process, so measure in a fresh one: decoding the 8000x8000 bomb would
    # need >= 64 MB (mode "1" is one byte per pixel) before any RGB conversion.
    code = (
        "import resource, sys\n"
        "from tests.hostile_images import pixel_bomb, decompression_bomb\n"
        "from pop_tf.beam.images import decode_image\n"
        "from pop_tf.beam.reasons import Rejected\n"
        "bombs = [pixel_bomb(), decompression_bomb()]\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for data in bombs:\n"
        "    try:\n"
        "        decode_image(data)\n"
        "    except Rejected as e:\n"
        "        assert e.reason == 'decompression_bomb'\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) * 1024)\n"  # ru_maxrss is in KiB on Linux
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    grew = int(result.stdout.strip().splitlines()[-1])
    assert grew < 16 * 2**20, f"peak memory grew by {grew:,} bytes"


@pytest.mark.parametrize("name", ["truncated_jpeg", "truncated_png", "jpeg_without_eoi"])
def test_truncated_files_are_rejected_even_if_someone_enabled_lenient_loading(name, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = hostile.CORPUS[name][0]()
    # PIL itself would grey-fill the missing part...
    lenient = Image.open(io.BytesIO(data))
    lenient.load()
    assert lenient.size[0] > 0
    # ...decode_image does not, and leaves the caller's setting as it found it.
    assert reject_of(data).reason == reasons.CORRUPT_IMAGE
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_truncation_guard_is_safe_under_concurrent_decodes(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    jobs = [hostile.truncated_jpeg(), hostile.truncated_png(), hostile.valid_png()] * 20

    def outcome(data):
        try:
            return images.decode_image(data).mode
        except Rejected as e:
            return e.reason

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(outcome, jobs))
    assert results == [reasons.CORRUPT_IMAGE, reasons.CORRUPT_IMAGE, "RGB"] * 20
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_decoding_leaves_pil_globals_alone():
    before = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS)
    for name in ["valid_png", "truncated_png", "decompression_bomb", "pixel_bomb"]:
        try:
            decode(name)
        except Rejected:
            pass
    assert (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS) == before


# ------------------------------------------------------------------------------------------
# Frames, orientation and colour modes
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["animated_gif", "animated_png", "animated_webp", "valid_tiff",
                                  "valid_mpo"])
def test_multi_frame_files_give_their_first_frame(name):
    image = decode(name)
    assert image.size == (128, 96)
    assert_close(pixel(image, 0.5, 0.3), hostile.RED, 40)  # frame 1 is a blue dress


def test_mpo_is_reported_as_mpo_and_accepted():
    assert Image.open(io.BytesIO(hostile.valid_mpo())).format == "MPO"


@pytest.mark.parametrize("name", ["exif_rotated_6_jpeg", "exif_rotated_3_jpeg"])
def test_exif_orientation_puts_the_garment_upright(name):
    stored = Image.open(io.BytesIO(hostile.CORPUS[name][0]()))
    image = decode(name)
    assert image.size == hostile.upright_marked().size == (120, 80)
    if name == "exif_rotated_6_jpeg":
        assert stored.size == (80, 120)  # the file really is stored sideways
    # The red marker sits at the top-left of the upright picture, and nowhere else.
    assert_close(image.getpixel((13, 13)), hostile.RED, 40)
    for x, y in [(106, 13), (13, 66), (106, 66)]:
        assert image.getpixel((x, y))[0] < 150 or image.getpixel((x, y))[1] > 150, (x, y)


def test_transparent_areas_become_white():
    palette = decode("palette_transparent_png")  # transparent index is black in the palette
    assert pixel(palette, 0, 0) == (255, 255, 255)
    assert_close(pixel(palette, 0.5, 0.3), hostile.RED, 0)

    rgba = decode("rgba_transparent_png")  # transparent *black* background
    assert pixel(rgba, 0.02, 0.95) == (255, 255, 255)
    assert_close(pixel(rgba, 0.5, 0.3), hostile.GREEN, 0)
    assert_close(rgba.getpixel((0, 5)), (127, 127, 127), 1)  # black at alpha 128 over white

    la = decode("la_png")
    assert pixel(la, 0.02, 0.95) == (255, 255, 255)
    assert pixel(la, 0.5, 0.3) == (50, 50, 50)

    trns = decode("rgb_tRNS_png")  # black background declared transparent by tRNS
    assert pixel(trns, 0.02, 0.95) == (255, 255, 255)
    assert_close(pixel(trns, 0.5, 0.3), hostile.RED, 0)


def test_sixteen_bit_grey_keeps_its_full_range():
    source = Image.open(io.BytesIO(hostile.gray16_png()))
    assert source.mode == "I;16"
    # PIL's own conversion clips at 255: almost the whole ramp turns white.
    assert (np.asarray(source.convert("L")) == 255).mean() > 0.9
    row = np.asarray(decode("gray16_png"))[10]
    assert (row[:, 0] == row[:, 1]).all() and (row[:, 1] == row[:, 2]).all()
    gray = row[:, 0].astype(int)
    assert gray[0] == 0 and gray[-1] == 255 and (np.diff(gray) >= 0).all()
    assert len(np.unique(gray)) > 200
    assert abs(int(gray[128]) - 128) <= 1


def test_float_grey_in_unit_range_is_scaled_to_bytes():
    assert Image.open(io.BytesIO(hostile.gray_float_tiff())).mode == "F"
    gray = np.asarray(decode("gray_float_tiff"))[5, :, 0].astype(int)
    assert gray[0] == 0 and gray[-1] == 255 and (np.diff(gray) >= 0).all()


def test_cmyk_lab_grey_and_bilevel_convert_to_the_right_colours():
    cmyk = decode("cmyk_jpeg")
    assert_close(pixel(cmyk, 0.02, 0.95), (255, 255, 255), 4)
    assert_close(pixel(cmyk, 0.5, 0.3), (0, 255, 255), 12)  # cyan ink
    lab = decode("lab_tiff")
    assert_close(pixel(lab, 0.5, 0.3), hostile.RED, 6)
    assert_close(pixel(lab, 0.02, 0.95), (255, 255, 255), 3)
    for name, dark in [("bilevel_png", 0), ("grayscale_jpeg", 60)]:
        image = decode(name)
        r, g, b = pixel(image, 0.5, 0.3)
        assert r == g == b and abs(r - dark) <= 6
        assert pixel(image, 0.02, 0.95) == (255, 255, 255) or name == "grayscale_jpeg"


@pytest.mark.parametrize(
    "image, expected",
    [
        (Image.new("YCbCr", (20, 20), (255, 128, 128)), (255, 255, 255)),
        (Image.new("HSV", (20, 20), (0, 255, 255)), (255, 0, 0)),
        (Image.new("CMYK", (20, 20), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("RGBA", (20, 20), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("RGBa", (20, 20), (0, 0, 0, 0)), (255, 255, 255)),
        (Image.new("La", (20, 20), (0, 0)), (255, 255, 255)),
        (Image.new("PA", (20, 20), (0, 0)), (255, 255, 255)),
        (Image.new("1", (20, 20), 1), (255, 255, 255)),
        (Image.new("I;16B", (20, 20), 65535), (255, 255, 255)),
        (Image.new("I;16", (20, 20), 257 * 100), (100, 100, 100)),
        (Image.new("I", (20, 20), 65535), (255, 255, 255)),  # 16-bit data in mode I
        (Image.new("F", (20, 20), 0.5), (128, 128, 128)),  # unit-range float
    ],
    ids=lambda v: getattr(v, "mode", ""),
)
def test_to_rgb_handles_every_mode(image, expected):
    rgb = images.to_rgb(image)
    assert rgb.mode == "RGB"
    assert_close(rgb.getpixel((3, 3)), expected, 1)


def test_to_rgb_stretches_out_of_range_high_depth_images():
    ints = np.array([[-1000, 0], [1000, 3000]], dtype=np.int32)
    assert np.asarray(images.to_rgb(Image.fromarray(ints)))[..., 0].tolist() == [[0, 64],
                                                                                [128, 255]]
    floats = np.array([[-2.0, np.nan], [0.0, 2.0]], dtype=np.float32)
    assert np.asarray(images.to_rgb(Image.fromarray(floats)))[..., 0].tolist() == [[0, 128],
                                                                                  [128, 255]]


# ------------------------------------------------------------------------------------------
# Square resizing
# ------------------------------------------------------------------------------------------


def test_pad_to_square_keeps_the_whole_garment_undistorted():
    wide = Image.new("RGB", (200, 100), (255, 255, 255))
    ImageDraw.Draw(wide).rectangle([50, 24, 149, 73], fill=(0, 0, 0))  # 100x50 black box
    square = images.pad_to_square_and_resize(wide, 100)
    assert square.shape == (100, 100, 3) and square.dtype == np.uint8
    assert (square[:24] == 255).all() and (square[-24:] == 255).all()  # white bands
    dark = np.argwhere(square[..., 0] < 128)
    height = dark[:, 0].max() - dark[:, 0].min() + 1
    width = dark[:, 1].max() - dark[:, 1].min() + 1
    assert (height, width) == (25, 50)  # aspect 2:1 kept, not stretched
    assert abs((dark[:, 0].min() + dark[:, 0].max()) / 2 - 49.5) <= 1  # centred
    assert abs((dark[:, 1].min() + dark[:, 1].max()) / 2 - 49.5) <= 1

    tall = images.pad_to_square_and_resize(wide.transpose(Image.Transpose.ROTATE_90), 100)
    assert (tall[:, :24] == 255).all() and (tall[:, -24:] == 255).all()


def test_pad_to_square_upscales_small_images_and_keeps_exact_sizes():
    small = images.pad_to_square_and_resize(Image.new("RGB", (20, 16), (10, 200, 30)), 64)
    assert small.shape == (64, 64, 3)
    assert (small[32, 32] == (10, 200, 30)).all() and (small[0, 32] == 255).all()
    exact = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert (images.pad_to_square_and_resize(Image.fromarray(exact), 32) == exact).all()
    grey = images.pad_to_square_and_resize(Image.new("L", (40, 40), 7), 16)
    assert grey.shape == (16, 16, 3) and (grey == 7).all()
    with pytest.raises(ValueError):
        images.pad_to_square_and_resize(Image.new("RGB", (4, 4)), 0)


# ------------------------------------------------------------------------------------------
# Edge maps
# ------------------------------------------------------------------------------------------


def square_on_white(size=64, lo=20, hi=43):
    array = np.full((size, size, 3), 255, np.uint8)
    array[lo:hi + 1, lo:hi + 1] = 0
    return array


def test_edge_map_of_blank_images_is_all_white():
    for value in (255, 0, 128):
        edges = images.edge_map(np.full((40, 50, 3), value, np.uint8))
        assert edges.shape == (40, 50) and edges.dtype == np.uint8
        assert (edges == 255).all()
    # Faint sensor/JPEG noise is not a line either (normalised by the theoretical maximum).
    noisy = np.clip(250 + np.random.default_rng(0).integers(-4, 5, (40, 50, 3)), 0, 255)
    assert (images.edge_map(noisy.astype(np.uint8)) == 255).all()


def test_edge_map_of_a_square_is_its_outline():
    edges = images.edge_map(square_on_white())
    assert set(np.unique(edges)) == {0, 255}
    assert edges[32, 32] == 255 and edges[5, 5] == 255 and edges[5, 32] == 255
    for y, x in [(20, 32), (43, 32), (32, 20), (32, 43), (20, 20)]:
        assert edges[y, x] == 0, (y, x)
    black = edges == 0
    # A closed ring: filling its holes covers the interior, which is white in the map.
    assert ndimage.binary_fill_holes(black)[32, 32]
    assert black[24:40, 24:40].sum() == 0
    assert black.sum() < 0.4 * black.size


def test_edge_map_accepts_grey_is_deterministic_and_validates():
    rgb = square_on_white()
    assert (images.edge_map(rgb) == images.edge_map(rgb[..., 0])).all()
    assert (images.edge_map(rgb) == images.edge_map(rgb.copy())).all()
    with pytest.raises(ValueError):
        images.edge_map(rgb.astype(np.float32))
    with pytest.raises(ValueError):
        images.edge_map(rgb, threshold=1.5)


def test_edge_map_threshold_is_monotone():
    array = photo_like("tshirt")
    counts = [(images.edge_map(array, t) == 0).sum() for t in (0.02, 0.05, 0.12, 0.25, 0.5)]
    assert all(a >= b for a, b in zip(counts, counts[1:])), counts
    assert counts[0] > counts[-1]
    assert (images.edge_map(array, 1.0) == 255).all()


def test_sobel_normaliser_is_the_exact_maximum():
    # The largest 3x3 Sobel magnitude over inputs in [0, 1]: the magnitude is convex in the
    # inputs, so its maximum over the cube is at a corner, i.e. a binary pattern.
    best = 0.0
    for bits in itertools.product((0.0, 1.0), repeat=9):
        patch = np.array(bits).reshape(3, 3)
        gx = ndimage.sobel(patch, axis=1, mode="constant")[1, 1]
        gy = ndimage.sobel(patch, axis=0, mode="constant")[1, 1]
        best = max(best, float(np.hypot(gx, gy)))
    assert best == pytest.approx(images._SOBEL_MAX)


# ------------------------------------------------------------------------------------------
# Hashes
# ------------------------------------------------------------------------------------------


def test_phash_range_and_identity():
    array = photo_like("tshirt")
    value = images.perceptual_hash(array)
    assert isinstance(value, int) and 0 <= value < 2**64
    assert images.perceptual_hash(array.copy()) == value
    assert images.hamming_distance(value, value) == 0
    assert images.perceptual_hash(np.full((50, 70, 3), 255, np.uint8)) == 1 << 63  # DC bit only


@pytest.mark.parametrize("kind", ["tshirt", "dress", "trousers"])
def test_phash_is_stable_under_reencoding_shifts_and_resizing(kind):
    array = photo_like(kind)
    base = images.perceptual_hash(array)
    variants = [jpeg_roundtrip(array, q) for q in (90, 75, 50)]
    variants += [shifted(array, dx, dy) for dx, dy in [(1, 0), (-1, 0), (0, 1), (0, -1)]]
    variants.append(np.asarray(Image.fromarray(array).resize((100, 100), Image.Resampling.LANCZOS)))
    for variant in variants:
        assert images.hamming_distance(base, images.perceptual_hash(variant)) <= 4


def test_phash_separates_different_garments():
    hashes = {kind: images.perceptual_hash(photo_like(kind))
              for kind in ("tshirt", "dress", "trousers")}
    for a, b in itertools.combinations(hashes, 2):
        assert images.hamming_distance(hashes[a], hashes[b]) >= 12, (a, b)


def test_phash_symmetric_images_are_unstable():
    """Documents a known pHash limit rather than a wish: in a mirror-symmetric picture half the
    AC coefficients are zero and the median sits among them, so a 1-pixel shift can flip many
    bits. Real photos are never exactly symmetric; the synthetic garments are."""
    array = np.asarray(hostile.garment("tshirt", size=(128, 128)))
    distances = [images.hamming_distance(images.perceptual_hash(array),
                                         images.perceptual_hash(shifted(array, dx, 0)))
                 for dx in (1, -1)]
    assert max(distances) > 4


def test_phash_is_blind_to_colour_and_contrast():
    """Documents a known pHash limit: only the sign of the structure relative to the median
    counts, so one silhouette in red, blue or light grey hashes identically."""
    hashes = {images.perceptual_hash(np.asarray(hostile.garment("dress", color=color)))
              for color in (hostile.RED, hostile.BLUE, (200, 200, 200))}
    assert len(hashes) == 1


def test_hamming_distance():
    assert images.hamming_distance(0, 2**64 - 1) == 64
    assert images.hamming_distance(0b1011, 0b0001) == 2
    with pytest.raises(ValueError):
        images.hamming_distance(-1, 0)


@pytest.mark.parametrize("num_bands", [2, 4, 8, 16])
def test_hash_bands_pigeonhole(num_bands):
    rng = np.random.default_rng(num_bands)
    width = 64 // num_bands
    for _ in range(300):
        a = int(rng.integers(0, 2**63)) * 2 + int(rng.integers(0, 2))
        bands = images.hash_bands(a, num_bands)
        assert [i for i, _ in bands] == list(range(num_bands))
        assert sum(v << (64 - (i + 1) * width) for i, v in bands) == a  # bands tile the hash
        flips = rng.choice(64, size=int(rng.integers(0, num_bands)), replace=False)
        b = a
        for bit in flips:
            b ^= 1 << int(bit)
        assert images.hamming_distance(a, b) < num_bands
        assert set(images.hash_bands(a, num_bands)) & set(images.hash_bands(b, num_bands))
    # The bound is tight: one flipped bit in every band leaves no band in common.
    c = 0
    for i in range(num_bands):
        c ^= 1 << (i * width)
    assert images.hamming_distance(0, c) == num_bands
    assert not set(images.hash_bands(0, num_bands)) & set(images.hash_bands(c, num_bands))


def test_num_bands_for_distance_keeps_the_pigeonhole_guarantee():
    assert [images.num_bands_for_distance(d) for d in (0, 1, 3, 4, 7, 8, 15, 16, 63)] == [
        1, 2, 4, 8, 8, 16, 16, 32, 64]
    for distance in range(64):
        bands = images.num_bands_for_distance(distance)
        assert bands > distance and 64 % bands == 0
    with pytest.raises(ValueError):
        images.num_bands_for_distance(64)


def test_hash_bands_validates():
    assert images.hash_bands(2**64 - 1, 8) == [(i, 255) for i in range(8)]
    with pytest.raises(ValueError):
        images.hash_bands(0, 7)
    with pytest.raises(ValueError):
        images.hash_bands(2**64, 8)


def test_pixel_digest_depends_on_pixels_not_encoding():
    array = photo_like("dress")
    first = io.BytesIO()
    Image.fromarray(array).save(first, "PNG", compress_level=1)
    resaved = io.BytesIO()
    Image.open(io.BytesIO(first.getvalue())).save(resaved, "PNG", compress_level=9,
                                                  pnginfo=_text_chunk("note", "re-saved"))
    assert first.getvalue() != resaved.getvalue()
    digests = {images.pixel_digest(np.asarray(images.decode_image(data)))
               for data in (first.getvalue(), resaved.getvalue())}
    assert digests == {images.pixel_digest(array)}
    changed = array.copy()
    changed[0, 0, 0] ^= 1
    assert images.pixel_digest(changed) != images.pixel_digest(array)
    flat = np.zeros(12, np.uint8)
    assert images.pixel_digest(flat.reshape(2, 6)) != images.pixel_digest(flat.reshape(3, 4))
    assert images.pixel_digest(array[:, ::-1]) == images.pixel_digest(array[:, ::-1].copy())
    assert len(images.pixel_digest(array)) == 64


def _text_chunk(key, value):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(key, value)
    return info


@pytest.mark.parametrize("shape", [(20, 30), (20, 30, 3)])
def test_encode_png_round_trips_and_is_deterministic(shape):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = images.encode_png(array)
    assert data == images.encode_png(array.copy())
    assert data.startswith(b"\x89PNG")
    assert (np.asarray(Image.open(io.BytesIO(data))) == array).all()


def test_encode_png_validates():
    with pytest.raises(ValueError):
        images.encode_png(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        images.encode_png(np.zeros((4, 4, 4), np.uint8))


def test_functions_are_module_level_and_picklable():
    import pickle

    for fn in (images.decode_image, images.pad_to_square_and_resize, images.edge_map,
               images.perceptual_hash, images.hash_bands, images.pixel_digest,
               images.encode_png, images.to_rgb):
        assert pickle.loads(pickle.dumps(fn)) is fn
    json.dumps(images.hash_bands(12345))  # plain ints, ready for Beam keys
