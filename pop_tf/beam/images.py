"""Pure image functions for the ingest job: safe decoding, square resizing, edge maps, hashes.

Everything here is a module-level function over bytes, PIL images or numpy arrays, so Beam can
pickle the DoFns that call it and tests can call it without a pipeline. No function changes
process-wide state that outlives the call (see `_strict_truncation` for the one PIL global that
decoding has to care about). The one function that touches the filesystem,
`read_untrusted_file`, reads a local file so that no path can block or exhaust the reader (FIFOs,
devices, symlinks out of the dataset, endless files); ingest reads images and the metadata file
with it, `pop-tf translate` its two images.

Decoding is defensive because the input is whatever users scraped from the web:

* The pixel count is read from the header (``Image.open`` is lazy) and checked *before* a single
  pixel is decoded, so a 50 KB PNG that declares 20000x20000 pixels costs microseconds, not 1 GB.
* Truncated files are rejected rather than grey-filled: ``ImageFile.LOAD_TRUNCATED_IMAGES`` is
  forced off for the duration of each decode.
* Only the formats the product supports are parsed for real (`SUPPORTED_FORMATS`); every other
  file is only *identified*, to say precisely what it is in the reject sentence.

Reject reasons (`pop_tf.beam.reasons`) raised by `decode_image`, in the order they are checked:

==================== =====================================================================
EMPTY_FILE           0 bytes
FILE_TOO_LARGE       more bytes than ``max_file_bytes`` (checked before parsing anything)
CORRUPT_IMAGE        starts with the signature of a supported format but the header cannot
                     be parsed (e.g. cut off after a few bytes)
UNSUPPORTED_FORMAT   PIL identifies another image format (PPM, ICO, TGA, AVIF, PSD, ...), or
                     the bytes carry the signature of an image format PIL cannot read (SVG,
                     HEIC/HEIF, JPEG XL); also a colour mode that cannot be converted to RGB
NOT_AN_IMAGE         anything else: HTML, XML, JSON, text, PDF, archives, video, random bytes
DECOMPRESSION_BOMB   width x height from the header above ``max_pixels``, or PIL's own
                     ``DecompressionBombError``
IMAGE_TOO_SMALL      shorter side below ``min_side``
EXTREME_ASPECT       longer / shorter side above ``max_aspect``
CORRUPT_IMAGE        decoding the pixels fails: truncated data, broken compressed stream,
                     bad chunk checksums, ...
==================== =====================================================================
"""

import contextlib
import functools
import hashlib
import io
import math
import os
import re
import stat
import struct
import threading

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError
from scipy import fft as _fft
from scipy import ndimage as _ndimage

from pop_tf.beam import reasons
from pop_tf.beam.reasons import Rejected

# Format names as PIL reports them in `Image.format`. MPO is what PIL calls a JPEG that carries
# extra frames (most phone cameras write one); the first frame is an ordinary JPEG.
SUPPORTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO")
# The parsers handed to Image.open. MPO has no opener of its own: the JPEG opener returns an MPO
# image when it finds the extra frames, and naming "MPO" in `formats` makes Image.open raise
# KeyError('MPO') once every parser before it has declined the file.
_OPEN_FORMATS = tuple(name for name in SUPPORTED_FORMATS if name != "MPO")

_WHITE = (255, 255, 255)

# Config keys named in reject sentences, so a user knows which knob a limit comes from.
_KEY_MAX_PIXELS = "ingest.max_pixels"
_KEY_MAX_FILE_BYTES = "ingest.max_file_bytes"
_KEY_MIN_SIDE = "ingest.min_image_side"
_KEY_MAX_ASPECT = "ingest.max_aspect_ratio"


# --------------------------------------------------------------------------------------------
# Reading untrusted local files
# --------------------------------------------------------------------------------------------


class FileRefused(Exception):
    """A local file that `read_untrusted_file` would not read.

    Args:
      kind: one of `REFUSED_KINDS`, for the caller to map onto its own error or reject reason.
      message: the rest of a sentence whose subject is the file ("is a FIFO, not a regular file").
    """

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind
        self.message = message


REFUSED_KINDS = ("outside_root", "missing", "not_regular", "too_large", "unreadable")

_FILE_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _file_type(mode):
    return next((name for test, name in _FILE_TYPES if test(mode)), "a special file")


def read_untrusted_file(path, max_bytes, *, root=None, limit_name=None) -> bytes:
    """The bytes of a local regular file, read so that no file can hang or exhaust the reader.

    A FIFO blocks `open()` until a writer comes, and /dev/zero or /dev/urandom never end, even
    behind an innocent name or a symlink. So the path is resolved, refused when it leaves `root`,
    stat'ed (only regular files within `max_bytes` are read), then opened with O_NONBLOCK (a FIFO
    swapped in after the stat cannot block) and O_NOFOLLOW (nor a symlink), checked again on the
    open descriptor, and read for at most `max_bytes + 1` bytes.

    Args:
      path: a local filesystem path.
      max_bytes: the largest file accepted.
      root: when given, the file must resolve inside this folder (symlinks included).
      limit_name: the option `max_bytes` comes from, named in the too-large sentence.

    Raises:
      FileRefused: with a `kind` from `REFUSED_KINDS` and a sentence fragment about the file.
    """
    real = os.path.realpath(path)
    if root is not None:
        real_root = os.path.realpath(root)
        inside = real_root if real_root.endswith(os.sep) else real_root + os.sep
        if real != real_root and not real.startswith(inside):
            raise FileRefused("outside_root", "resolves outside the dataset root (through a symlink)")
    try:
        info = os.stat(real)
    except FileNotFoundError:
        raise FileRefused("missing", "does not exist") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise FileRefused("unreadable", f"could not be read: {getattr(e, 'strerror', None) or e}") from None
    _check_regular(info, max_bytes, limit_name)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except FileNotFoundError:
        raise FileRefused("missing", "does not exist") from None
    except OSError as e:  # ELOOP: swapped for a symlink since it was resolved
        raise FileRefused("unreadable", f"could not be read: {e.strerror or e}") from None
    try:
        _check_regular(os.fstat(fd), max_bytes, limit_name)
        chunks, size = [], 0
        while size <= max_bytes:  # bounded even if the file grows while it is read
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        raise FileRefused("unreadable", f"could not be read: {e.strerror or e}") from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise FileRefused("too_large", _too_large(f"more than {max_bytes:,}", max_bytes, limit_name))
    return b"".join(chunks)


def _check_regular(info, max_bytes, limit_name):
    if not stat.S_ISREG(info.st_mode):
        raise FileRefused("not_regular", f"is {_file_type(info.st_mode)}, not a regular file")
    if info.st_size > max_bytes:
        raise FileRefused("too_large", _too_large(f"{info.st_size:,}", max_bytes, limit_name))


def _too_large(size, max_bytes, limit_name):
    source = f" ({limit_name})" if limit_name else ""
    return f"is {size} bytes, above the limit of {max_bytes:,} bytes{source}"


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def decode_image(
    data: bytes,
    *,
    max_pixels: int = 50_000_000,
    max_file_bytes: int = 50 * 1024 * 1024,
    min_side: int = 16,
    max_aspect: float = 8.0,
    max_pixels_key: str = _KEY_MAX_PIXELS,
) -> Image.Image:
    """Decodes untrusted image bytes into an upright RGB image, or explains why it cannot.

    Steps: size limits on the bytes; lazy open restricted to `SUPPORTED_FORMATS`; geometry
    checks on the header's width and height (before any pixel is decoded); strict full decode of
    the first frame (animated GIF/WEBP/PNG, multi-page TIFF and MPO all yield frame 0); EXIF
    orientation; conversion of any colour mode to RGB (see `to_rgb`).

    Args:
      data: the file's bytes.
      max_pixels: largest allowed width*height, checked from the header (ingest.max_pixels).
      max_file_bytes: largest allowed file size in bytes (ingest.max_file_bytes).
      min_side: smallest allowed shorter side in pixels (ingest.min_image_side).
      max_aspect: largest allowed ratio of longer to shorter side (ingest.max_aspect_ratio).
      max_pixels_key: the option a DECOMPRESSION_BOMB sentence names as the limit's source.

    Returns:
      A fully loaded PIL image in mode "RGB", independent of `data`.

    Raises:
      Rejected: with the most specific reason code (module docstring) and a sentence that names
        the problem with its numbers.
      TypeError: if `data` is not bytes-like (a programming error, not bad input).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode_image needs bytes, got {type(data).__name__}")
    data = bytes(data)
    size = len(data)
    if size == 0:
        raise Rejected(reasons.EMPTY_FILE, "the image file is empty (0 bytes)")
    if size > max_file_bytes:
        raise Rejected(
            reasons.FILE_TOO_LARGE,
            f"the image file is {size:,} bytes, above the limit of {max_file_bytes:,} bytes "
            f"({_KEY_MAX_FILE_BYTES})",
        )

    with _strict_truncation():
        image = _open_supported(data, max_pixels, max_pixels_key)
        try:
            fmt = image.format
            _check_geometry(image.size, max_pixels, min_side, max_aspect, max_pixels_key)
            _load_pixels(image, fmt, max_pixels, max_pixels_key)
            upright = _exif_upright(image)
        finally:
            # Releases the parser and its reference to `data`; `upright` is an independent copy.
            image.close()
    return to_rgb(upright)


def _open_supported(data, max_pixels, max_pixels_key=_KEY_MAX_PIXELS):
    """Opens `data` lazily with the supported parsers only, or raises the right `Rejected`."""
    try:
        image = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
    except Image.DecompressionBombError as e:
        # PIL refuses sizes above 2 * Image.MAX_IMAGE_PIXELS inside Image.open itself, before we
        # ever see `.size`.
        raise _pil_bomb(data, e, max_pixels, max_pixels_key) from None
    except UnidentifiedImageError:
        header_error = None
    except Exception as e:  # noqa: BLE001 - any parser failure on a header is a data problem
        # A supported parser accepted the signature, then failed on the header (PIL raises
        # OSError "Truncated File Read", ValueError, EOFError, struct.error, ...).
        header_error = e
    else:
        if image.format in SUPPORTED_FORMATS:
            return image
        # Not reachable with today's PIL; guards against a plugin reporting another name.
        image.close()
        header_error = None
    raise _classify_unopenable(data, header_error, max_pixels, max_pixels_key)


def _pil_bomb(data, error, max_pixels, max_pixels_key=_KEY_MAX_PIXELS):
    """DECOMPRESSION_BOMB for PIL's own refusal, with the declared size when it can be read."""
    declared = "more pixels than can be decoded safely"
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        declared = f"{width}x{height} = {width * height:,} pixels"
    else:
        match = re.search(r"\((\d+) pixels\)", str(error))
        if match:
            declared = f"{int(match.group(1)):,} pixels"
    return Rejected(
        reasons.DECOMPRESSION_BOMB,
        f"image header says {declared}, above the limit of {max_pixels:,} ({max_pixels_key}); "
        f"PIL refused to open it as a likely decompression bomb",
    )


def _classify_unopenable(data, header_error, max_pixels, max_pixels_key=_KEY_MAX_PIXELS):
    """Builds the `Rejected` for bytes that no supported parser could open."""
    text_kind = _describe_text(data)
    supported = _supported_signature(data)
    # "BM" (BMP) is a two-letter signature that plain text can start with; text wins there.
    if supported and not (supported == "BMP" and text_kind):
        why = f": {header_error}" if header_error is not None else ""
        return Rejected(
            reasons.CORRUPT_IMAGE,
            f"the file starts like a {supported} image ({len(data):,} bytes) but its header "
            f"cannot be read{why}; the file is probably cut short or damaged",
        )

    # Identify other formats only to name them: every PIL plugin may look, none decodes pixels.
    try:
        with Image.open(io.BytesIO(data)) as other:
            other_format = other.format or "unknown"
    except Image.DecompressionBombError as e:
        return _pil_bomb(data, e, max_pixels, max_pixels_key)
    except Exception:  # noqa: BLE001 - lax plugins (e.g. IPTC) raise OSError on random bytes
        other_format = None
    if other_format is not None:
        return Rejected(
            reasons.UNSUPPORTED_FORMAT,
            f"the file is an image in {other_format} format; supported formats are "
            f"{_supported_list()}: convert it to PNG or JPEG",
        )

    foreign = _foreign_image_signature(data)
    if foreign:
        return Rejected(
            reasons.UNSUPPORTED_FORMAT,
            f"the file looks like {foreign}, which cannot be decoded here; supported formats "
            f"are {_supported_list()}: convert it to PNG or JPEG",
        )

    what = _describe_known_binary(data) or text_kind or _describe_unknown(data)
    return Rejected(reasons.NOT_AN_IMAGE, f"the file is not an image: it looks like {what}")


def _check_geometry(size, max_pixels, min_side, max_aspect, max_pixels_key=_KEY_MAX_PIXELS):
    """Rejects by header width/height: pixel bomb, too small, extreme aspect (in that order)."""
    width, height = size
    pixels = width * height
    if pixels > max_pixels:
        raise Rejected(
            reasons.DECOMPRESSION_BOMB,
            f"image header says {width}x{height} = {pixels:,} pixels, above the limit of "
            f"{max_pixels:,} ({max_pixels_key})",
        )
    short, long = min(width, height), max(width, height)
    if short < max(min_side, 1):  # a 0-pixel side is too small whatever the configured minimum
        raise Rejected(
            reasons.IMAGE_TOO_SMALL,
            f"image is {width}x{height} pixels; its shorter side ({short}) is below the "
            f"minimum of {min_side} ({_KEY_MIN_SIDE})",
        )
    if long > max_aspect * short:
        raise Rejected(
            reasons.EXTREME_ASPECT,
            f"image is {width}x{height} pixels, an aspect ratio of {long / short:.1f}:1, above "
            f"the limit of {max_aspect:g}:1 ({_KEY_MAX_ASPECT})",
        )


def _load_pixels(image, fmt, max_pixels, max_pixels_key=_KEY_MAX_PIXELS):
    """Decodes frame 0 fully; any decoder failure is CORRUPT_IMAGE."""
    try:
        image.load()
    except Image.DecompressionBombError as e:
        raise Rejected(
            reasons.DECOMPRESSION_BOMB,
            f"the {fmt} image expands to more pixels than can be decoded safely, above the "
            f"limit of {max_pixels:,} ({max_pixels_key}); PIL says: {e}",
        ) from None
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, ValueError, zlib.error, ...
        raise Rejected(
            reasons.CORRUPT_IMAGE,
            f"the {fmt} image ({image.size[0]}x{image.size[1]}) could not be decoded: {e}; the "
            f"file is probably cut short or damaged",
        ) from None


def _exif_upright(image):
    """Returns a loaded copy of `image` rotated/flipped as its EXIF orientation tag says.

    Unreadable EXIF is not a reason to drop good pixels: the image is then kept as stored.
    """
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF blocks raise a zoo of errors
        return image.copy()


# The one process-wide PIL switch that changes decoding: when a caller anywhere has set
# ImageFile.LOAD_TRUNCATED_IMAGES = True, PIL grey-fills truncated files instead of raising. PIL
# reads it as a module global with no per-image override, so each decode forces it off and the
# last concurrent decode to finish restores the caller's value. When it is already False (PIL's
# default) nothing observable ever changes.
_TRUNCATION_LOCK = threading.Lock()
_truncation_users = 0
_truncation_saved = False


@contextlib.contextmanager
def _strict_truncation():
    """Keeps `ImageFile.LOAD_TRUNCATED_IMAGES` False while at least one decode is running."""
    global _truncation_users, _truncation_saved
    with _TRUNCATION_LOCK:
        if _truncation_users == 0:
            _truncation_saved = ImageFile.LOAD_TRUNCATED_IMAGES
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            ImageFile.LOAD_TRUNCATED_IMAGES = False
        _truncation_users += 1
    try:
        yield
    finally:
        with _TRUNCATION_LOCK:
            _truncation_users -= 1
            if _truncation_users == 0 and ImageFile.LOAD_TRUNCATED_IMAGES != _truncation_saved:
                ImageFile.LOAD_TRUNCATED_IMAGES = _truncation_saved


# --------------------------------------------------------------------------------------------
# Sniffing: only used to choose a reason and write a useful sentence, never to accept a file.
# --------------------------------------------------------------------------------------------


def _supported_list():
    return ", ".join(SUPPORTED_FORMATS[:-1]) + " and " + SUPPORTED_FORMATS[-1]


def _supported_signature(data):
    """Name of the supported format whose magic number `data` starts with, else None."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    if data.startswith(b"BM"):
        return "BMP"
    return None


# ISO base media (HEIF/AVIF/MP4) files carry a brand after "ftyp" at offset 4.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
_AVIF_BRANDS = (b"avif", b"avis")


def _foreign_image_signature(data):
    """Describes image formats PIL has no parser for (so it cannot identify them), else None."""
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in _HEIF_BRANDS:
            return "a HEIC/HEIF image (the iPhone photo format)"
        if brand in _AVIF_BRANDS:
            return "an AVIF image"
    if data.startswith(b"\xff\x0a") or data.startswith(b"\x00\x00\x00\x0cJXL \r\n\x87\n"):
        return "a JPEG XL image"
    head = _text_head(data)
    if head is not None and "<svg" in head.lower():
        return "an SVG vector image"
    return None


def _text_head(data, limit=4096):
    """The start of `data` as text if it decodes as UTF-8 (or UTF-16 with a BOM), else None."""
    chunk = data[:limit]
    if chunk.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return chunk[: len(chunk) // 2 * 2].decode("utf-16")
        except UnicodeDecodeError:
            return None
    try:
        return chunk.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        # A multi-byte character cut by `limit` is still text.
        if len(chunk) == limit and e.start >= limit - 3:
            return chunk[: e.start].decode("utf-8-sig", errors="strict")
        return None


def _describe_text(data):
    """Says what kind of text `data` is (HTML, XML, JSON, plain text), or None if binary."""
    head = _text_head(data)
    if head is None or not head:
        return None
    printable = sum(ch.isprintable() or ch in "\t\n\r\f" for ch in head)
    if printable < 0.95 * len(head):
        return None
    stripped = head.lstrip()
    lowered = stripped[:1024].lower()
    if lowered.startswith("<!doctype html") or any(
        tag in lowered for tag in ("<html", "<head", "<body")
    ):
        return "HTML (a web page, e.g. an error or login page saved under an image name)"
    if lowered.startswith("<?xml") or lowered.startswith("<"):
        return "XML or other markup text"
    if stripped[:1] in ("{", "["):
        return "JSON text"
    snippet = " ".join(stripped.split())[:40]
    return f"plain text (starts with {snippet!r})"


_BINARY_SIGNATURES = (
    (b"%PDF-", "a PDF document"),
    (b"%!PS", "a PostScript document"),
    (b"PK\x03\x04", "a ZIP archive (or a zipped document such as .docx)"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"\x7fELF", "an executable program (ELF)"),
    (b"OggS", "an Ogg audio/video file"),
    (b"ID3", "an MP3 audio file"),
    (b"\x1aE\xdf\xa3", "a Matroska/WebM video"),
)


def _describe_known_binary(data):
    """Names a known non-image format by its magic number (checked before text: a PDF header
    is often plain ASCII), else None."""
    for magic, what in _BINARY_SIGNATURES:
        if data.startswith(magic):
            return what
    if data[4:8] == b"ftyp":
        return "a video (MP4/QuickTime container)"
    return None


def _describe_unknown(data):
    """Quotes the size and first bytes of data nothing recognised, for the reject sentence."""
    first = data[:8].hex(" ")
    return f"unrecognised binary data ({len(data):,} bytes, starting with bytes {first})"


# --------------------------------------------------------------------------------------------
# Colour modes
# --------------------------------------------------------------------------------------------


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts a PIL image of any mode to RGB, compositing any transparency onto white.

    * Alpha (RGBA, LA, PA, premultiplied RGBa/La) and palette or single-colour transparency
      (``info["transparency"]`` on P, L, 1, RGB) are alpha-composited over white, so transparent
      backgrounds look like the white studio backgrounds of the rest of the data.
    * High bit depths are mapped to 8 bits by their true range (PIL's own ``convert`` clips them
      at 255 instead, turning most 16-bit images white):

      - ``I;16``/``I;16B``/``I;16L``/``I;16N`` (unsigned 16 bit): round(v / 257), so 0 -> 0 and
        65535 -> 255 exactly.
      - ``I`` (32-bit signed): values within 0..65535 are taken as 16-bit data (PIL has long
        used mode I for 16-bit PNG/PGM), otherwise min-max stretched to 0..255.
      - ``F`` (32-bit float): values within [0, 1] are taken as normalised intensities (x255),
        otherwise min-max stretched; NaN/inf become 0.
      A min-max stretch of a constant image gives black (there is no contrast to preserve).
    * CMYK, YCbCr, HSV, 1, L, P convert with PIL's formulas (embedded ICC profiles are not
      applied); LAB goes through LittleCMS (PIL's plain ``convert`` does not handle it).

    Raises:
      Rejected(UNSUPPORTED_FORMAT): for a colour mode with no route to RGB.
    """
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in ("RGBa", "La"):
        image = image.convert(mode.upper())  # un-premultiply before compositing
        mode = image.mode
    if mode.startswith("I") or mode == "F":
        return _high_depth_to_rgb(image)
    if mode == "LAB":
        return _lab_to_rgb(image)
    if mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as e:
        raise Rejected(
            reasons.UNSUPPORTED_FORMAT,
            f"the image's colour mode {mode} cannot be converted to RGB ({e})",
        ) from None


def _high_depth_to_rgb(image):
    """Maps 16/32-bit grey (modes I;16*, I, F) to 8-bit RGB by the true range (see `to_rgb`)."""
    values = np.asarray(image)
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        gray = (values.astype(np.uint32) * 255 + 32767) // 65535
    elif values.dtype.kind in "iu" and values.size and values.min() >= 0 and values.max() <= 65535:
        gray = (values.astype(np.int64) * 255 + 32767) // 65535
    elif values.dtype.kind == "f":
        finite = np.nan_to_num(values.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            gray = np.rint(finite * 255.0)
        else:
            gray = _min_max(finite)
    else:
        gray = _min_max(values.astype(np.float64))
    gray = np.clip(gray, 0, 255).astype(np.uint8)
    transparent = image.info.get("transparency")
    if isinstance(transparent, int) and not isinstance(transparent, bool):
        # A PNG tRNS colour on 16-bit grey marks exact sample values as fully transparent.
        gray = np.where(values == transparent, np.uint8(255), gray)
    return Image.fromarray(np.repeat(gray[..., None], 3, axis=2))


def _min_max(values):
    if values.size == 0:
        return np.zeros(values.shape, np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, np.float64)
    return np.rint((values - low) * (255.0 / (high - low)))


@functools.lru_cache(maxsize=1)
def _lab_transform():
    # Built once per process: LittleCMS profile creation costs milliseconds.
    from PIL import ImageCms

    return ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )


def _lab_to_rgb(image):
    try:
        from PIL import ImageCms

        return ImageCms.applyTransform(image, _lab_transform())
    except (ImportError, OSError, ValueError) as e:  # PIL built without LittleCMS
        raise Rejected(
            reasons.UNSUPPORTED_FORMAT,
            f"the image is in the CIE L*a*b* colour mode, which cannot be converted to RGB "
            f"here ({e}); save it as an RGB PNG or JPEG",
        ) from None


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


def pad_to_square_and_resize(image: Image.Image, size: int) -> np.ndarray:
    """Fits the whole image into a white `size` x `size` square, centred; never crops or stretches.

    The longer side is scaled to `size` (LANCZOS, with ``reducing_gap`` so that large
    reductions first box-reduce by an integer factor: faster, same quality) and the shorter side
    is padded with white, split evenly (an odd leftover pixel goes to the bottom/right). This is
    the same picture as padding to a square first and resizing after, but it never allocates the
    padded full-resolution square (up to max_side^2 pixels, e.g. 1.2 GB for a 20000x2500 photo).

    Args:
      image: a PIL image of any mode (converted with `to_rgb` when not RGB).
      size: side of the output in pixels, > 0.

    Returns:
      uint8 array [size, size, 3].
    """
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    image = to_rgb(image)
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels ({width}x{height})")
    longer = max(width, height)
    new_w = max(1, round(width * size / longer))
    new_h = max(1, round(height * size / longer))
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if (new_w, new_h) == (size, size):
        return np.array(image, dtype=np.uint8)
    canvas = Image.new("RGB", (size, size), _WHITE)
    canvas.paste(image, ((size - new_w) // 2, (size - new_h) // 2))
    return np.array(canvas, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Edge maps (the "design lines" domain, like edges2shoes)
# --------------------------------------------------------------------------------------------

# Largest gradient magnitude scipy's 3x3 Sobel can give on values in [0, 1]: sqrt(4^2 + 2^2),
# reached by e.g. [[0,0,1],[0,0,1],[0,1,1]] (checked exhaustively in the tests). Dividing by
# this constant instead of the per-image maximum keeps the map comparable across images and
# makes a blank image blank (a per-image maximum would blow up sensor noise into lines).
_SOBEL_MAX = math.sqrt(20.0)
_EDGE_BLUR_SIGMA = 1.0
# ITU-R BT.601 luma, the same weights as PIL's convert("L").
_LUMA = np.array([0.299, 0.587, 0.114])


def _as_gray(rgb):
    """float64 [H, W] in 0..255 from uint8 [H, W, 3] or [H, W]; validates the array."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {rgb.dtype}")
    if rgb.ndim == 2:
        return rgb.astype(np.float64)
    if rgb.ndim == 3 and rgb.shape[2] == 3:
        return rgb.astype(np.float64) @ _LUMA
    raise ValueError(f"expected an image of shape [H, W, 3] or [H, W], got {rgb.shape}")


def edge_map(rgb: np.ndarray, threshold: float = 0.12) -> np.ndarray:
    """Black design lines (0) on white (255): the line-drawing domain of the paper.

    Grayscale (BT.601 luma, scaled to [0, 1]) -> Gaussian blur (sigma 1 px, to suppress JPEG
    noise and fabric texture) -> Sobel gradient magnitude divided by its theoretical maximum
    (so it lies in [0, 1] for every image) -> pixels whose magnitude exceeds `threshold` are
    lines. Borders are extended by repeating the edge pixels, so the frame of the image itself
    is not a line. A clean step between black and white gives a magnitude of about 0.5 after the
    blur; the default 0.12 marks steps of about a quarter of the full contrast.

    Args:
      rgb: uint8 [H, W, 3] (or [H, W] grey).
      threshold: in [0, 1]; higher gives fewer, stronger lines.

    Returns:
      uint8 [H, W] with values 0 (line) and 255 (background). Deterministic.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    gray = _as_gray(rgb) / 255.0
    blurred = _ndimage.gaussian_filter(gray, sigma=_EDGE_BLUR_SIGMA, mode="nearest")
    gx = _ndimage.sobel(blurred, axis=1, mode="nearest")
    gy = _ndimage.sobel(blurred, axis=0, mode="nearest")
    magnitude = np.hypot(gx, gy) / _SOBEL_MAX
    return np.where(magnitude > threshold, np.uint8(0), np.uint8(255))


# --------------------------------------------------------------------------------------------
# Hashes for duplicate detection
# --------------------------------------------------------------------------------------------

_HASH_BITS = 64


def perceptual_hash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash (pHash) for near-duplicate detection.

    Grayscale (BT.601) -> 32x32 with PIL's LANCZOS (anti-aliased, so the hash depends on the
    picture, not on its resolution) -> 2-D DCT-II (orthonormal) -> the 8x8 lowest frequencies.
    Bit i (row-major over that 8x8 block, bit 0 = the DC term = the most significant bit of the
    result) is 1 when its coefficient is above the median of the 63 AC coefficients. The DC term
    is left out of the median because it is the mean brightness, far larger than the rest; its
    own bit is therefore 1 for any image that is not black, so 63 bits carry information.
    Coefficients are rounded to 1e-6 first so that exact zeros (flat images) do not split on
    floating-point noise that can differ between machines.

    Re-encoding, small resizes and shifts by a pixel change a few bits; different pictures
    differ in about half of them. Compare hashes with `hamming_distance`.

    Known limits, inherent to pHash: the median threshold makes it blind to contrast, so the
    same silhouette at the same place in two colours (both darker than the background) hashes
    identically; and in an exactly mirror-symmetric picture
    (a synthetic garment, centred) half the AC coefficients are zero and the median sits among
    them, so a 1-pixel shift can flip many bits. Photos are never exactly symmetric.

    Returns:
      a Python int in [0, 2**64).
    """
    gray = _as_gray(rgb)
    small = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8))
    small = small.resize((32, 32), Image.Resampling.LANCZOS)
    coeffs = _fft.dctn(np.asarray(small, dtype=np.float64), type=2, norm="ortho")[:8, :8]
    coeffs = np.round(coeffs, 6).ravel()
    median = np.median(coeffs[1:])
    value = 0
    for bit in coeffs > median:
        value = (value << 1) | int(bit)
    return value


def hamming_distance(a: int, b: int) -> int:
    """Number of bit positions in which two non-negative hashes differ."""
    if a < 0 or b < 0:
        raise ValueError("hashes must be non-negative")
    return (a ^ b).bit_count()


def hash_bands(h: int, num_bands: int = 8) -> list[tuple[int, int]]:
    """Splits a 64-bit hash into `num_bands` bands for locality-sensitive bucketing.

    Band 0 holds the most significant 64/num_bands bits. Pigeonhole principle: two hashes at
    Hamming distance d differ in at most d bands, so if d < num_bands they agree exactly on at
    least one band. Grouping records by (band_index, band_value) therefore puts every pair within
    distance `num_bands - 1` into a common bucket, and only pairs within a bucket need an exact
    distance check. To find all pairs within distance D choose num_bands > D (num_bands must
    divide 64: 1, 2, 4, 8, 16, 32 or 64); `num_bands_for_distance(D)` picks it.

    Returns:
      [(band_index, band_value), ...] in band order; the index keeps equal values of different
      bands apart when all bands share one key space.
    """
    if num_bands <= 0 or _HASH_BITS % num_bands:
        raise ValueError(f"num_bands must divide {_HASH_BITS}, got {num_bands}")
    if not 0 <= h < 1 << _HASH_BITS:
        raise ValueError(f"hash must be in [0, 2**{_HASH_BITS}), got {h}")
    width = _HASH_BITS // num_bands
    mask = (1 << width) - 1
    return [
        (index, (h >> (_HASH_BITS - (index + 1) * width)) & mask) for index in range(num_bands)
    ]


def num_bands_for_distance(max_distance: int) -> int:
    """The fewest `hash_bands` bands that guarantee every pair within `max_distance` bits shares
    a band: the smallest divisor of 64 above `max_distance` (e.g. 8 for distances up to 7, 16 up
    to 15). Fewer bands mean longer band values, hence smaller buckets and fewer comparisons."""
    if not 0 <= max_distance < _HASH_BITS:
        raise ValueError(f"max_distance must be in [0, {_HASH_BITS}), got {max_distance}")
    return next(n for n in (1, 2, 4, 8, 16, 32, 64) if n > max_distance)


def pixel_digest(rgb: np.ndarray) -> str:
    """sha256 hex of the pixels (shape + bytes): equal iff two images are pixel-identical.

    Independent of how the file was encoded (PNG vs re-saved PNG, metadata, compression), unlike
    a hash of the file bytes. The array is normalised to C-contiguous uint8 first, and its shape
    is part of the digest so that e.g. 2x6 and 3x4 images with the same bytes differ.
    """
    array = np.asarray(rgb)
    if array.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {array.dtype}")
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256()
    digest.update(("x".join(str(n) for n in array.shape) + "\n").encode("ascii"))
    digest.update(array.tobytes())
    return digest.hexdigest()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 [H, W] (grey) or [H, W, 3] (RGB) array; same array -> same bytes.

    No metadata is written and ``optimize`` is off (its search depends on the zlib build), so the
    output depends only on the pixels and the zlib version.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8, got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"expected shape [H, W] or [H, W, 3], got {array.shape}")
    buffer = io.BytesIO()
    # fromarray maps uint8 [H, W] to mode L and [H, W, 3] to RGB.
    Image.fromarray(np.ascontiguousarray(array)).save(
        buffer, format="PNG", optimize=False, compress_level=6
    )
    return buffer.getvalue()


_COLOUR_GRID = 4


def colour_signature(rgb: np.ndarray) -> bytes:
    """Mean colour of each cell of a 4x4 grid (48 bytes): what pHash cannot see.

    pHash is computed on brightness relative to its median, so the same garment in red and in
    blue hashes alike; in a shop's feed those are different products, not copies. Near-duplicate
    detection therefore asks for both a close pHash and close colours (`colour_distance`).
    """
    array = np.asarray(rgb, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB array [H, W, 3], got shape {array.shape}")
    rows = np.array_split(np.arange(array.shape[0]), _COLOUR_GRID)
    cols = np.array_split(np.arange(array.shape[1]), _COLOUR_GRID)
    cells = [array[r[0]:r[-1] + 1, c[0]:c[-1] + 1].mean(axis=(0, 1)) for r in rows for c in cols]
    return np.clip(np.rint(cells), 0, 255).astype(np.uint8).tobytes()


def colour_distance(a: bytes, b: bytes) -> int:
    """Largest difference (0..255) between corresponding cell colours of two signatures."""
    return int(np.abs(np.frombuffer(a, np.uint8).astype(np.int16) - np.frombuffer(b, np.uint8)).max())
