"""A hostile corpus of image files, built in memory, for the image and ingest tests.

Each builder is a plain function taking no arguments and returning the file's bytes; the same
call always returns the same bytes on one machine (JPEG/WEBP bytes depend on the codec library
version, so compare decoded pixels, not bytes, across machines). Large-but-cheap files (the
decompression bombs) are cached.

`CORPUS` maps a name to ``(builder, expected)``, where ``expected`` is the reject reason code that
`pop_tf.beam.images.decode_image` (with its default limits) must raise, or None when the file is
a valid image that must decode to RGB. The drawing helpers (`garment`, `upright_marked`) are
public so that tests can compare decoded pixels with what was drawn.
"""

import functools
import hashlib
import io
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image, ImageDraw

from pop_tf.beam import reasons

WHITE = (255, 255, 255)
RED = (220, 20, 30)
BLUE = (20, 40, 210)
GREEN = (20, 170, 40)

# ----------------------------------------------------------------------------------------------
# Drawing
# ----------------------------------------------------------------------------------------------


def garment(kind="tshirt", size=(128, 96), color=RED, shift=(0, 0), mode="RGB", background=WHITE):
    """Draws a flat garment silhouette centred on a plain background.

    Args:
      kind: "tshirt" (short sleeves), "dress" (narrow top, wide skirt) or "trousers".
      size: (width, height) in pixels; the shape scales with it.
      color: fill in `mode`'s colour space.
      shift: (dx, dy) in pixels, to make shifted copies.
      mode: PIL mode of the returned image.
      background: background value in `mode`'s colour space.
    """
    width, height = size
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    dx, dy = shift

    def pt(fx, fy):
        return (round(fx * width) + dx, round(fy * height) + dy)

    if kind == "tshirt":
        outline = [(0.35, 0.12), (0.65, 0.12), (0.88, 0.30), (0.78, 0.42), (0.70, 0.36),
                   (0.70, 0.90), (0.30, 0.90), (0.30, 0.36), (0.22, 0.42), (0.12, 0.30)]
    elif kind == "dress":
        outline = [(0.40, 0.08), (0.60, 0.08), (0.62, 0.40), (0.85, 0.92), (0.15, 0.92),
                   (0.38, 0.40)]
    elif kind == "trousers":
        outline = [(0.30, 0.08), (0.70, 0.08), (0.76, 0.92), (0.56, 0.92), (0.50, 0.40),
                   (0.44, 0.92), (0.24, 0.92)]
    else:
        raise ValueError(f"unknown garment kind {kind!r}")
    draw.polygon([pt(x, y) for x, y in outline], fill=color)
    return image


def textured(image, seed=0, amplitude=6):
    """Adds deterministic mild noise (fabric texture), so PNGs are not trivially compressible
    and truncating one really cuts into the pixel data."""
    array = np.asarray(image).astype(np.int16)
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, array.shape)
    return Image.fromarray(np.clip(array + noise, 0, 255).astype(np.uint8))


def upright_marked(size=(120, 80)):
    """A landscape garment with a red 20x20 marker in its top-left corner: the upright truth for
    the EXIF orientation cases."""
    image = garment("tshirt", size=size, color=BLUE)
    ImageDraw.Draw(image).rectangle([4, 4, 23, 23], fill=RED)
    return image


def _save(image, fmt, **params):
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _deterministic_bytes(n, seed=b"pop_tf hostile"):
    """n pseudo-random bytes from SHA-256 in counter mode (stable across numpy versions)."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:n])


def _png_chunk(kind, payload):
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def blank_bilevel_png(width, height):
    """A real, fully valid 1-bit PNG of a huge white canvas in a few tens of KB.

    Rows are compressed one at a time, so building it never holds the raw pixels in memory.
    """
    row = b"\x00" + b"\xff" * ((width + 7) // 8)  # filter type 0, then all-white bits
    compressor = zlib.compressobj(9)
    chunks = [compressor.compress(row) for _ in range(height)]
    idat = b"".join(chunks) + compressor.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1 bit, greyscale
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


# ----------------------------------------------------------------------------------------------
# Valid images, including the unusual ones
# ----------------------------------------------------------------------------------------------


def valid_png():
    return _save(textured(garment("tshirt")), "PNG")


def valid_jpeg():
    return _save(textured(garment("tshirt")), "JPEG", quality=90)


def progressive_jpeg():
    return _save(garment("dress"), "JPEG", quality=85, progressive=True)


def grayscale_jpeg():
    return _save(garment("trousers", mode="L", color=60, background=255), "JPEG")


def valid_bmp():
    return _save(garment("dress"), "BMP")


def valid_gif():
    return _save(garment("tshirt").convert("P", palette=Image.Palette.ADAPTIVE), "GIF")


def animated_gif():
    """Two frames: red first, blue second; the first frame must win."""
    frames = [garment("tshirt", color=RED), garment("dress", color=BLUE)]
    frames = [f.convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    return _save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def animated_png():
    frames = [garment("tshirt", color=RED), garment("dress", color=BLUE)]
    return _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100)


def valid_tiff():
    """A two-page TIFF; the first page must win."""
    pages = [garment("tshirt", color=RED), garment("dress", color=BLUE)]
    return _save(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def valid_webp():
    return _save(garment("tshirt"), "WEBP", quality=90)


def animated_webp():
    frames = [garment("tshirt", color=RED), garment("dress", color=BLUE)]
    return _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100,
                 quality=90)


def valid_mpo():
    """A multi-picture JPEG as phones write it (PIL reports format MPO)."""
    frames = [garment("tshirt", color=RED), garment("dress", color=BLUE)]
    return _save(frames[0], "MPO", save_all=True, append_images=frames[1:])


def gray16_png():
    """16-bit greyscale (PIL mode I;16): a left-to-right ramp over the full 0..65535 range."""
    ramp = np.linspace(0, 65535, 256).round().astype(np.uint16)
    return _save(Image.fromarray(np.tile(ramp, (64, 1))), "PNG")


def gray_float_tiff():
    """32-bit float greyscale (mode F) with intensities in [0, 1]: a left-to-right ramp."""
    ramp = np.linspace(0.0, 1.0, 128, dtype=np.float32)
    return _save(Image.fromarray(np.tile(ramp, (64, 1))), "TIFF")


def lab_tiff():
    """A CIE L*a*b* TIFF of a red garment (PIL mode LAB)."""
    lab = garment("tshirt").convert("LAB")
    # PIL attaches the LittleCMS Lab profile it converted with, and that profile carries its
    # creation time to the second: two builds straddling a second would differ. Decoding does
    # not read it (LAB is always converted with the built-in D50 Lab profile).
    lab.info.pop("icc_profile", None)
    return _save(lab, "TIFF")


def cmyk_jpeg():
    """CMYK JPEG: white paper (0,0,0,0) with a pure cyan (255,0,0,0) garment."""
    return _save(garment("tshirt", mode="CMYK", color=(255, 0, 0, 0), background=(0, 0, 0, 0)),
                 "JPEG", quality=95)


def palette_transparent_png():
    """Palette PNG whose background index is *black* and fully transparent: it must become
    white, not black."""
    image = Image.new("P", (128, 96), 0)
    image.putpalette([0, 0, 0, *RED] + [0, 0, 0] * 254)
    rgb_shape = garment("tshirt", color=(255, 255, 255), background=(0, 0, 0)).convert("L")
    image.paste(1, mask=rgb_shape.point(lambda v: 255 if v > 127 else 0))
    return _save(image, "PNG", transparency=0)


def rgba_transparent_png():
    """RGBA: transparent black background, opaque green garment, a half-transparent black band
    (rows 0..9) that must come out mid-grey."""
    image = garment("tshirt", mode="RGBA", color=GREEN + (255,), background=(0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle([0, 0, 127, 9], fill=(0, 0, 0, 128))
    return _save(image, "PNG")


def la_png():
    """Grey + alpha: transparent background, opaque dark-grey garment."""
    return _save(garment("dress", mode="LA", color=(50, 255), background=(0, 0)), "PNG")


def bilevel_png():
    """1-bit: black garment on white."""
    return _save(garment("tshirt", mode="1", color=0, background=1), "PNG")


def rgb_tRNS_png():
    """RGB PNG whose black background is declared transparent by a tRNS colour."""
    return _save(garment("tshirt", background=(0, 0, 0)), "PNG", transparency=(0, 0, 0))


def _exif_jpeg(orientation, stored):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(stored, "JPEG", quality=95, exif=exif.tobytes())


def exif_rotated_6_jpeg():
    """Stored turned 90 degrees counter-clockwise with orientation 6 ("rotate 90 CW to view"),
    as a phone held upright writes it; viewed, it is `upright_marked()`."""
    return _exif_jpeg(6, upright_marked().transpose(Image.Transpose.ROTATE_90))


def exif_rotated_3_jpeg():
    """Stored upside down with orientation 3; viewed, it is `upright_marked()`."""
    return _exif_jpeg(3, upright_marked().transpose(Image.Transpose.ROTATE_180))


def png_without_iend():
    """The last 12 bytes (IEND) missing: every pixel is present, so PIL accepts it."""
    return valid_png()[:-12]


# ----------------------------------------------------------------------------------------------
# Rejects
# ----------------------------------------------------------------------------------------------


def empty_file():
    return b""


def truncated_jpeg():
    data = valid_jpeg()
    return data[: len(data) * 6 // 10]


def jpeg_without_eoi():
    """Only the final 2-byte end-of-image marker missing: PIL still calls it truncated."""
    return valid_jpeg()[:-2]


def truncated_png():
    data = valid_png()
    return data[: len(data) * 6 // 10]


def jpeg_header_only():
    return valid_jpeg()[:10]


def png_signature_only():
    return b"\x89PNG\r\n\x1a\n"


def png_bad_crc():
    """IHDR checksum damaged: PIL refuses the header."""
    data = bytearray(valid_png())
    data[29] ^= 0xFF  # last byte of the IHDR CRC (8 signature + 4 length + 4 type + 13 data)
    return bytes(data)


def png_garbage_idat():
    """Valid chunk structure and CRCs, but the compressed pixel stream is garbage."""
    raw = valid_png()
    signature, rest = raw[:8], raw[8:]
    out, pos = [signature], 0
    while pos < len(rest):
        (length,) = struct.unpack(">I", rest[pos:pos + 4])
        kind = rest[pos + 4:pos + 8]
        payload = rest[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            payload = payload[:2] + _deterministic_bytes(len(payload) - 2, b"idat")
        out.append(_png_chunk(kind, payload))
        pos += 12 + length
    return b"".join(out)


def html_as_jpg():
    return (b"<!DOCTYPE html>\n<html><head><title>403 Forbidden</title></head>\n"
            b"<body><h1>Forbidden</h1><p>You don't have permission to access this image.</p>"
            b"</body></html>\n")


def text_file():
    return "Notes from the shoot: blue dress, 3 looks, reshoot on Tuesday.\n".encode() * 5


def text_starting_with_bm():
    """Plain text whose first two letters are the BMP signature "BM"."""
    return b"BMW 320d for sale, low mileage, ask for photos.\n"


def json_file():
    return b'{"error": "not found", "status": 404}\n'


def random_bytes():
    return _deterministic_bytes(4096)


def pdf_header():
    return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"


def zip_archive():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        info = zipfile.ZipInfo("look.jpg", date_time=(2020, 1, 1, 0, 0, 0))
        archive.writestr(info, valid_jpeg())
    return buffer.getvalue()


def svg_image():
    return (b'<?xml version="1.0" encoding="UTF-8"?>\n'
            b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
            b'<rect x="8" y="8" width="48" height="48" fill="red"/></svg>\n')


def heic_header():
    """The start of an iPhone HEIC file (ISO-BMFF 'ftyp' box, brand heic)."""
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heic"
    return struct.pack(">I", 4 + len(ftyp)) + ftyp + _deterministic_bytes(512, b"heic")


def ppm_image():
    """Netpbm PPM: an image PIL reads, but not a supported format."""
    return _save(garment("tshirt"), "PPM")


def ico_image():
    return _save(garment("tshirt", size=(64, 64)), "ICO", sizes=[(64, 64)])


@functools.lru_cache(maxsize=None)
def decompression_bomb():
    """20000x20000 = 400,000,000 pixels in ~50 KB; above even PIL's own hard limit, so
    `Image.open` itself refuses it."""
    return blank_bilevel_png(20000, 20000)


@functools.lru_cache(maxsize=None)
def pixel_bomb():
    """8000x8000 = 64,000,000 pixels (above ingest.max_pixels = 50,000,000 but below PIL's
    limits): only our own header check stops it."""
    return blank_bilevel_png(8000, 8000)


def tiny_image():
    return _save(Image.new("RGB", (4, 4), RED), "PNG")


def extreme_aspect():
    return _save(Image.new("RGB", (1000, 20), RED), "PNG")


CORPUS = {
    # valid
    "valid_png": (valid_png, None),
    "valid_jpeg": (valid_jpeg, None),
    "progressive_jpeg": (progressive_jpeg, None),
    "grayscale_jpeg": (grayscale_jpeg, None),
    "valid_bmp": (valid_bmp, None),
    "valid_gif": (valid_gif, None),
    "animated_gif": (animated_gif, None),
    "animated_png": (animated_png, None),
    "valid_tiff": (valid_tiff, None),
    "valid_webp": (valid_webp, None),
    "animated_webp": (animated_webp, None),
    "valid_mpo": (valid_mpo, None),
    "gray16_png": (gray16_png, None),
    "gray_float_tiff": (gray_float_tiff, None),
    "lab_tiff": (lab_tiff, None),
    "cmyk_jpeg": (cmyk_jpeg, None),
    "palette_transparent_png": (palette_transparent_png, None),
    "rgba_transparent_png": (rgba_transparent_png, None),
    "la_png": (la_png, None),
    "bilevel_png": (bilevel_png, None),
    "rgb_tRNS_png": (rgb_tRNS_png, None),
    "exif_rotated_6_jpeg": (exif_rotated_6_jpeg, None),
    "exif_rotated_3_jpeg": (exif_rotated_3_jpeg, None),
    "png_without_iend": (png_without_iend, None),
    # rejected
    "empty_file": (empty_file, reasons.EMPTY_FILE),
    "truncated_jpeg": (truncated_jpeg, reasons.CORRUPT_IMAGE),
    "jpeg_without_eoi": (jpeg_without_eoi, reasons.CORRUPT_IMAGE),
    "truncated_png": (truncated_png, reasons.CORRUPT_IMAGE),
    "jpeg_header_only": (jpeg_header_only, reasons.CORRUPT_IMAGE),
    "png_signature_only": (png_signature_only, reasons.CORRUPT_IMAGE),
    "png_bad_crc": (png_bad_crc, reasons.CORRUPT_IMAGE),
    "png_garbage_idat": (png_garbage_idat, reasons.CORRUPT_IMAGE),
    "html_as_jpg": (html_as_jpg, reasons.NOT_AN_IMAGE),
    "text_file": (text_file, reasons.NOT_AN_IMAGE),
    "text_starting_with_bm": (text_starting_with_bm, reasons.NOT_AN_IMAGE),
    "json_file": (json_file, reasons.NOT_AN_IMAGE),
    "random_bytes": (random_bytes, reasons.NOT_AN_IMAGE),
    "pdf_header": (pdf_header, reasons.NOT_AN_IMAGE),
    "zip_archive": (zip_archive, reasons.NOT_AN_IMAGE),
    "svg_image": (svg_image, reasons.UNSUPPORTED_FORMAT),
    "heic_header": (heic_header, reasons.UNSUPPORTED_FORMAT),
    "ppm_image": (ppm_image, reasons.UNSUPPORTED_FORMAT),
    "ico_image": (ico_image, reasons.UNSUPPORTED_FORMAT),
    "decompression_bomb": (decompression_bomb, reasons.DECOMPRESSION_BOMB),
    "pixel_bomb": (pixel_bomb, reasons.DECOMPRESSION_BOMB),
    "tiny_image": (tiny_image, reasons.IMAGE_TOO_SMALL),
    "extreme_aspect": (extreme_aspect, reasons.EXTREME_ASPECT),
}
