"""The embedded synthetic dataset.

`run(SynthConfig)` writes a dataset in the input contract (docs/architecture.md) that the demo and most tests
use instead of scraped posts:

```
<output>/
  images/p000000.png ...   garment images on white (a share saved as .jpg)
  metadata.jsonl           one post per line, the input contract plus an extra `source` field
  truth.jsonl              the hidden intrinsic popularity and the drawn attributes of each post
  broken.jsonl             the records made to be rejected, with the reason ingest must give
  config.json              the resolved SynthConfig
```

How likes are made. Each image has a hidden *intrinsic popularity*, a fixed function of what is
drawn (`intrinsic_popularity`): the garment type weighs most, sleeve length a little, colour and
pattern clearly less (the finding of Nezhad et al. 2022). Likes then follow the way posts behave
on a social network:

    log(likes) = BASE + FOLLOWER_ELASTICITY * log(followers) + INTRINSIC_WEIGHT * intrinsic
                 + log(1 - exp(-age_days / LIKES_SETTLE_DAYS)) + Normal(0, NOISE_SD)

so a ranker can only recover `intrinsic` by comparing posts of the same user made close in time
(the PDIP rule), which is what the pipeline does. `truth.jsonl` is read only by evaluation.

Rejects path. About `broken_share` of the records break each paper filter (too recent, caption
too long, no hashtag, a mention) and `num_corrupt` records point at a truncated PNG, a text file
named .jpg, a missing file or an empty file. Each broken record breaks exactly one rule, so the
reason listed in `broken.jsonl` is the only one ingest can give.

Determinism. Every random draw comes from a `numpy.random.SeedSequence(seed)` child stream named
by purpose, nothing reads the clock, and JSON is written with a fixed key order, so one seed gives
byte-identical files. No two images are near-duplicates: each image's 64-bit DCT perceptual hash
is kept at least `MIN_HASH_DISTANCE` bits away from every earlier one (its pose is redrawn if not),
a margin over ingest's near-duplicate threshold (4 bits) that survives differences in how the
hash is computed. Flat garments on white are otherwise near-duplicates surprisingly often: the
hash sees mostly the silhouette, and colour does not change it at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import math
import os
import re
import time
from typing import Optional, Sequence

import numpy as np
import scipy.fft
from PIL import Image, ImageDraw

from pop_tf.beam import reasons
from pop_tf.config import ConfigError, SynthConfig, to_dict, validate_value, write_resolved
from pop_tf.truth import FILE_NAME as TRUTH_FILE

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# The hidden popularity model. Shape effects span about 2.6 (standard deviation ~0.8), colour
# effects about 0.45 and pattern effects about 0.25, so content clearly dominates style.

SHAPE_EFFECT = {
    "long_dress": 1.3,
    "jacket": 0.9,
    "hoodie": 0.5,
    "tshirt": 0.1,
    "skirt": -0.2,
    "tank_top": -0.5,
    "trousers": -0.8,
    "shorts": -1.3,
}
SLEEVE_EFFECT = {"none": 0.0, "short": 0.15, "long": 0.3}
COLOR_EFFECT = {
    "red": 0.2,
    "black": 0.15,
    "navy": 0.1,
    "pink": 0.05,
    "blue": 0.0,
    "teal": 0.0,
    "green": -0.05,
    "grey": -0.1,
    "purple": -0.1,
    "brown": -0.15,
    "orange": -0.2,
    "yellow": -0.25,
}
PATTERN_EFFECT = {"stripes": 0.1, "dots": 0.05, "solid": 0.0, "checks": -0.1}
# A garment that fills more of the frame reads better in a feed: a small continuous effect, so
# the truth is not only a lookup table over categories.
SCALE_EFFECT_PER_UNIT = 0.5

# Likes given intrinsic popularity (see the module docstring).
LIKES_BASE = -2.2
FOLLOWER_ELASTICITY = 0.8
INTRINSIC_WEIGHT = 1.0
LIKES_SETTLE_DAYS = 8.0
LIKES_NOISE_SD = 0.5
COMMENTS_PER_LIKE = 0.03

# ---------------------------------------------------------------------------------------------
# What can be drawn.

COLORS = {
    "red": (200, 30, 40),
    "orange": (235, 120, 30),
    "yellow": (235, 200, 40),
    "green": (50, 140, 60),
    "teal": (20, 140, 140),
    "blue": (40, 90, 200),
    "navy": (25, 35, 90),
    "purple": (120, 50, 150),
    "pink": (235, 120, 170),
    "brown": (120, 75, 40),
    "grey": (128, 128, 128),
    "black": (25, 25, 25),
}
# The second colour of a patterned garment; "off_white" makes classic white stripes and dots.
SECONDARY_COLORS = {"off_white": (245, 242, 232), **COLORS}
PATTERNS = ("solid", "stripes", "dots", "checks")
SLEEVES_BY_SHAPE = {
    "tshirt": ("short", "long"),
    "tank_top": ("none",),
    "long_dress": ("none", "short", "long"),
    "skirt": ("none",),
    "trousers": ("none",),
    "shorts": ("none",),
    "jacket": ("short", "long"),
    "hoodie": ("long",),
}
SHAPES = tuple(SHAPE_EFFECT)

# Pose and style jitter ranges (fractions of the image side / of the garment's size).
SCALE_RANGE = (0.55, 0.88)
ASPECT_RANGE = (0.82, 1.2)
MAX_ANGLE_DEG = 10.0
COLOR_JITTER = 14  # +- per RGB channel
FRAME_MARGIN = 0.06  # the garment's bounding box keeps this far from every edge
JPEG_SHARE = 0.15
JPEG_QUALITY = 92

# Near-duplicate guard: ingest rejects images whose hashes differ in <= 4 of 64 bits. Every pair
# is kept >= 8 apart under three resampling filters (HASH_FILTERS), which measured >= 6 under
# other variants too (bicubic, orthonormal DCT, hashing after a resize to 128 or 256 px).
# The hashes of decoded files are compared, so JPEG artefacts are accounted for.
MIN_HASH_DISTANCE = 8
MAX_POSE_TRIES = 60  # bounds the time per image; 8,000 images at 64 px needed ~5 on average

# Posting times. Likes settle after a few weeks; ingest drops posts younger than 30 days, so
# valid posts are at least 31 days old and too-recent ones at most 28 (no boundary ambiguity).
HISTORY_DAYS = 420
MIN_VALID_AGE_DAYS = 31
TOO_RECENT_AGE_DAYS = (1.0, 28.0)
USER_ACTIVE_DAYS = (90, 360)
FIRST_DOWNLOAD = dt.datetime(2022, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)

EXTRA_FIELD = ("source", "pop_tf.synth")

# Reasons in the order the corrupt-file records cycle through them.
CORRUPT_KINDS = (reasons.CORRUPT_IMAGE, reasons.NOT_AN_IMAGE, reasons.MISSING_FILE,
                 reasons.EMPTY_FILE)
FILTER_KINDS = (reasons.FILTER_TOO_RECENT, reasons.FILTER_CAPTION_TOO_LONG,
                reasons.FILTER_CAPTION_NO_HASHTAG, reasons.FILTER_CAPTION_MENTION)

_NOT_AN_IMAGE_BODY = (
    b"<!DOCTYPE html>\n<html><head><title>429 Too Many Requests</title></head>\n"
    b"<body><h1>Too Many Requests</h1><p>Please wait a few minutes before you try again.</p>"
    b"</body></html>\n")

# Random streams, one per purpose, so that changing how one thing is drawn does not reshuffle
# everything else. The order of this tuple is part of the output format: append, never reorder.
_STREAMS = ("users", "attributes", "pose", "broken", "times", "likes", "captions", "formats")


# ---------------------------------------------------------------------------------------------
# Garment description


@dataclasses.dataclass(frozen=True)
class Garment:
    """Everything that decides how one garment image looks (and so its intrinsic popularity)."""

    shape: str
    sleeve: str
    color: str
    secondary_color: str
    pattern: str
    rgb: tuple  # `color` after the small per-image colour jitter
    secondary_rgb: tuple
    scale: float  # garment size as a fraction of the image side
    aspect: float  # width stretch of the garment
    fit: float  # -1 (slim) .. 1 (loose, flared): width of body, legs, hems and sleeves
    length: float  # -1 (cropped) .. 1 (long): hem and sleeve length
    dx: float  # centre offset, fractions of the image side
    dy: float
    angle: float  # degrees, counter-clockwise
    pattern_period: float  # in garment units (the garment is 1 unit across)
    pattern_phase: float  # 0..1
    pattern_angle: float  # degrees
    light_angle: float  # degrees; direction the light comes from, in garment coordinates
    light_strength: float  # how much darker the far side of the garment is (0..1)

    def truth(self) -> dict:
        """The attributes as written to truth.jsonl (fixed key order, rounded floats)."""
        row = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float):
                value = round(value, 5)
            elif isinstance(value, tuple):
                value = [int(v) for v in value]
            row[field.name] = value
        return row


def intrinsic_popularity(garment: Garment) -> float:
    """The hidden popularity of a garment image: higher is more popular, roughly -2 .. 2.

    Shape dominates, then sleeve length; colour and pattern matter clearly less. The pipeline
    never calls this; it is the ground truth that `truth.jsonl` records for evaluation.
    """
    mid_scale = sum(SCALE_RANGE) / 2
    return (SHAPE_EFFECT[garment.shape] + SLEEVE_EFFECT[garment.sleeve]
            + COLOR_EFFECT[garment.color] + PATTERN_EFFECT[garment.pattern]
            + SCALE_EFFECT_PER_UNIT * (garment.scale - mid_scale))


def _sample_style(rng: np.random.Generator) -> dict:
    """Draws the categorical attributes and colours of one garment (not its pose)."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    sleeves = SLEEVES_BY_SHAPE[shape]
    sleeve = sleeves[rng.integers(len(sleeves))]
    color = tuple(COLORS)[rng.integers(len(COLORS))]
    pattern = PATTERNS[rng.integers(len(PATTERNS))]
    if pattern == "solid":
        secondary = color
    else:
        # Off-white half of the time; otherwise any other colour (never the garment's own).
        others = [c for c in COLORS if c != color]
        secondary = "off_white" if rng.random() < 0.5 else others[rng.integers(len(others))]
    rgb = _jitter_rgb(COLORS[color], rng)
    secondary_rgb = _jitter_rgb(SECONDARY_COLORS[secondary], rng)
    return dict(shape=shape, sleeve=sleeve, color=color, secondary_color=secondary,
                pattern=pattern, rgb=rgb, secondary_rgb=secondary_rgb)


def _jitter_rgb(rgb: Sequence[int], rng: np.random.Generator) -> tuple:
    jitter = rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
    return tuple(int(v) for v in np.clip(np.asarray(rgb) + jitter, 0, 255))


def _sample_pose(style: dict, rng: np.random.Generator) -> Garment:
    """Draws the continuous pose and pattern jitter of a garment with the given style."""
    scale = rng.uniform(*SCALE_RANGE)
    # Offsets of up to the free room around the garment; the frame check in `_fits` has the last
    # word, because rotation and aspect change the footprint.
    room = max(0.0, (1.0 - scale) / 2 - FRAME_MARGIN)
    return Garment(
        **style,
        scale=float(scale),
        aspect=float(rng.uniform(*ASPECT_RANGE)),
        fit=float(rng.uniform(-1.0, 1.0)),
        length=float(rng.uniform(-1.0, 1.0)),
        dx=float(rng.uniform(-room, room)),
        dy=float(rng.uniform(-room, room)),
        angle=float(rng.uniform(-MAX_ANGLE_DEG, MAX_ANGLE_DEG)),
        # Log-uniform: mostly fine prints, some bold ones (rugby stripes, buffalo checks).
        pattern_period=float(np.exp(rng.uniform(np.log(0.07), np.log(0.28)))),
        pattern_phase=float(rng.random()),
        pattern_angle=float(rng.choice([0.0, 90.0, 45.0, -45.0]) + rng.uniform(-10, 10)),
        light_angle=float(rng.uniform(-180.0, 180.0)),
        light_strength=float(rng.uniform(0.05, 0.3)),
    )


# ---------------------------------------------------------------------------------------------
# Garment geometry. Each builder returns polygons in garment units (y grows downwards); `_outline`
# then centres them and scales them so the longer side of their bounding box is 1.


@dataclasses.dataclass
class _Outline:
    fill: list  # polygons that are fabric
    cut: list = dataclasses.field(default_factory=list)  # polygons cut out again (necklines)
    lines: list = dataclasses.field(default_factory=list)  # seams and edges, drawn darker
    dots: list = dataclasses.field(default_factory=list)  # (x, y, r): buttons


def _bezier(p0, p1, p2, n: int = 8) -> list:
    """Points of a quadratic Bezier curve from p0 to p2 pulled towards p1 (necklines, hems)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t ** 2 * np.asarray(p2)
    return [tuple(p) for p in pts]


def _mirror(points) -> list:
    return [(-x, y) for x, y in points]


def _sleeves(shoulder, armpit, sleeve: str, fit: float, length: float) -> tuple:
    """Left and right sleeve polygons and their hem lines, from the left shoulder and armpit."""
    (sx, sy), (ax, ay) = shoulder, armpit
    if sleeve == "short":
        reach = 0.2 + 0.06 * length
        out = (sx - reach * (0.75 + 0.15 * fit), sy + reach * (0.8 - 0.1 * fit))
        inner = (ax - reach * 0.45, ay + reach * 0.45)
    elif sleeve == "long":
        reach = 0.68 + 0.1 * length
        out = (sx - 0.12 - 0.08 * fit, sy + reach)
        inner = (ax - 0.04 - 0.05 * fit, sy + reach + 0.01)
    else:
        return [], []
    left = [shoulder, out, inner, armpit]
    hem = [out, inner]
    return [left, _mirror(left)], [hem, _mirror(hem)]


def _top(half_width: float, hem_y: float, sleeve: str, fit: float, length: float,
         neck: float = 0.09) -> _Outline:
    """A T-shaped top (t-shirt, jacket, hoodie body): body, round neck, optional sleeves."""
    w = half_width * (1 + 0.12 * fit)
    hem_w = w + 0.01 + 0.03 * fit
    hem_y = hem_y + 0.08 * length
    shoulder = (-w - 0.03, -0.36)
    armpit = (-w, -0.12)
    neckline = _bezier((neck, -0.4), (0.0, -0.3), (-neck, -0.4))
    body = ([(-neck, -0.4), shoulder, armpit, (-hem_w, hem_y), (hem_w, hem_y), (w, -0.12),
             (w + 0.03, -0.36), (neck, -0.4)] + neckline[1:-1])
    sleeves, hems = _sleeves(shoulder, armpit, sleeve, fit, length)
    return _Outline(fill=[body] + sleeves, lines=[neckline] + hems)


def _tshirt(sleeve: str, fit: float, length: float) -> _Outline:
    return _top(0.22, 0.44, sleeve, fit, length)


def _jacket(sleeve: str, fit: float, length: float) -> _Outline:
    hem_y = 0.42 + 0.08 * length
    outline = _top(0.25, 0.42, sleeve, fit, length, neck=0.08)
    # A V opening instead of a round neck, lapels, a front edge and buttons.
    outline.cut.append([(-0.08, -0.405), (0.08, -0.405), (0.0, -0.14)])
    outline.lines = outline.lines[1:]
    outline.lines += [[(-0.08, -0.4), (-0.14, -0.24), (0.0, -0.14)],
                      [(0.08, -0.4), (0.14, -0.24), (0.0, -0.14)],
                      [(0.0, -0.14), (0.0, hem_y)],
                      [(-0.2, 0.18), (-0.08, 0.18)], [(0.08, 0.18), (0.2, 0.18)]]
    outline.dots += [(0.03, y, 0.014) for y in (-0.04, 0.08, 0.2)]
    return outline


def _hoodie(sleeve: str, fit: float, length: float) -> _Outline:
    outline = _top(0.25, 0.4, sleeve, fit, length, neck=0.1)
    hood_w, hood_top = 0.15 + 0.03 * fit, -0.56 - 0.04 * length
    hood = (_bezier((-hood_w, -0.36), (-hood_w - 0.02, hood_top - 0.02), (0.0, hood_top), 6)
            + _bezier((0.0, hood_top), (hood_w + 0.02, hood_top - 0.02), (hood_w, -0.36), 6)[1:])
    # Closed at the bottom below the neck scoop, so the scoop shows the hood's lining.
    outline.fill.insert(0, hood + [(0.0, -0.28)])
    band = 0.34 + 0.08 * length  # 0.06 above the hem
    top, bottom = band - 0.22, band - 0.04
    outline.lines += [
        [(-0.14, top), (0.14, top), (0.19, bottom), (-0.19, bottom), (-0.14, top)],  # pocket
        [(-0.26, band), (0.26, band)],  # waistband
        [(-0.03, -0.31), (-0.04, -0.16)], [(0.03, -0.31), (0.04, -0.16)],  # drawstrings
    ]
    return outline


def _tank_top(sleeve: str, fit: float, length: float) -> _Outline:
    w = 0.2 * (1 + 0.12 * fit)
    hem_y = 0.42 + 0.1 * length
    left_armhole = _bezier((-w - 0.02, -0.12), (-0.15, -0.16), (-0.14, -0.45))
    body = (left_armhole + [(-0.09, -0.45)]
            + _bezier((-0.09, -0.45), (0.0, -0.15 + 0.06 * fit), (0.09, -0.45))[1:-1]
            + [(0.09, -0.45)] + _mirror(left_armhole)[::-1]
            + [(w + 0.03 + 0.03 * fit, hem_y), (-w - 0.03 - 0.03 * fit, hem_y)])
    return _Outline(fill=[body], lines=[[(-w - 0.03, hem_y - 0.06), (w + 0.03, hem_y - 0.06)]])


def _long_dress(sleeve: str, fit: float, length: float) -> _Outline:
    hem_w, hem_y = 0.36 + 0.08 * fit, 0.48 + 0.1 * length
    waist_y = -0.08 + 0.03 * length
    shoulder = (-0.16, -0.44)
    armpit = (-0.17, -0.26)
    left = [shoulder, armpit, (-0.12, waist_y), (-hem_w, hem_y)]
    neck = _bezier((0.08, -0.44), (0.0, -0.3), (-0.08, -0.44))
    hem = _bezier((-hem_w, hem_y), (0.0, hem_y + 0.05), (hem_w, hem_y))
    body = [(-0.08, -0.44)] + left + hem[1:-1] + _mirror(left)[::-1] + neck[:-1]
    sleeves, hems = _sleeves(shoulder, armpit, sleeve, fit, length)
    return _Outline(fill=[body] + sleeves,
                    lines=[neck, [(-0.12, waist_y), (0.12, waist_y)]] + hems)


def _skirt(sleeve: str, fit: float, length: float) -> _Outline:
    hem_w, hem_y = 0.33 + 0.08 * fit, 0.3 + 0.12 * length
    body = ([(-0.2, -0.32), (0.2, -0.32), (hem_w, hem_y)]
            + _bezier((hem_w, hem_y), (0.0, hem_y + 0.06), (-hem_w, hem_y))[1:-1]
            + [(-hem_w, hem_y)])
    pleats = [[(x * 0.2, -0.25), (x * hem_w * 0.95, hem_y + 0.03)] for x in (-0.5, 0.0, 0.5)]
    return _Outline(fill=[body], lines=[[(-0.2, -0.25), (0.2, -0.25)]] + pleats)


def _legwear(waist_y: float, crotch_y: float, hem_y: float, hem_out: float, hem_in: float,
             fly: bool) -> _Outline:
    body = [(-0.2, waist_y), (-hem_out, hem_y), (-hem_in, hem_y), (0.0, crotch_y),
            (hem_in, hem_y), (hem_out, hem_y), (0.2, waist_y)]
    lines = [[(-0.2, waist_y + 0.06), (0.2, waist_y + 0.06)]]
    if fly:
        lines.append([(0.0, waist_y + 0.06), (0.0, crotch_y - 0.04)])
    return _Outline(fill=[body], lines=lines)


def _trousers(sleeve: str, fit: float, length: float) -> _Outline:
    return _legwear(-0.46, -0.1, 0.47 + 0.1 * length, 0.22 + 0.06 * fit, 0.03 + 0.02 * fit,
                    fly=True)


def _shorts(sleeve: str, fit: float, length: float) -> _Outline:
    return _legwear(-0.22, 0.0, 0.16 + 0.1 * length, 0.28 + 0.05 * fit, 0.02, fly=False)


_BUILDERS = {
    "tshirt": _tshirt, "tank_top": _tank_top, "long_dress": _long_dress, "skirt": _skirt,
    "trousers": _trousers, "shorts": _shorts, "jacket": _jacket, "hoodie": _hoodie,
}


def _outline(garment: Garment) -> _Outline:
    """The garment's polygons centred on (0, 0), with the longer bounding-box side equal to 1."""
    raw = _BUILDERS[garment.shape](garment.sleeve, garment.fit, garment.length)
    pts = np.concatenate([np.asarray(p, dtype=float) for p in raw.fill])
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    centre, size = (lo + hi) / 2, float((hi - lo).max())

    def norm(poly):
        return [tuple((np.asarray(p) - centre) / size) for p in poly]

    return _Outline(
        fill=[norm(p) for p in raw.fill], cut=[norm(p) for p in raw.cut],
        lines=[norm(p) for p in raw.lines],
        dots=[(*((np.asarray(d[:2]) - centre) / size), d[2] / size) for d in raw.dots])


# ---------------------------------------------------------------------------------------------
# Rendering


def _render_factor(image_size: int) -> int:
    """Supersampling factor: draw at 2-4x and downsample with Lanczos for anti-aliased edges."""
    return max(2, min(4, 192 // image_size))


class _Pose:
    """Maps garment units to canvas pixels (and back, for the pattern field)."""

    def __init__(self, garment: Garment, canvas: int):
        self.canvas = canvas
        self.centre = np.array([0.5 + garment.dx, 0.5 + garment.dy]) * canvas
        self.size = garment.scale * canvas
        a = math.radians(garment.angle)
        # y points down on screen, so a counter-clockwise turn is this matrix.
        rot = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
        self.forward = rot @ np.diag([garment.aspect, 1.0]) * self.size
        self.inverse = np.linalg.inv(self.forward)

    def points(self, poly) -> list:
        pts = np.asarray(poly, dtype=float) @ self.forward.T + self.centre
        return [tuple(p) for p in pts]

    def garment_coords(self, box) -> tuple:
        """Garment-unit coordinates (u, v) of the pixel centres in `box` (x0, y0, x1, y1).

        Patterns are drawn in these coordinates, so they move, scale and turn with the garment.
        """
        x0, y0, x1, y1 = box
        x = (np.arange(x0, x1, dtype=np.float32) + 0.5 - self.centre[0])[None, :]
        y = (np.arange(y0, y1, dtype=np.float32) + 0.5 - self.centre[1])[:, None]
        inv = self.inverse.astype(np.float32)
        return inv[0, 0] * x + inv[0, 1] * y, inv[1, 0] * x + inv[1, 1] * y


def _fits(outline: _Outline, pose: _Pose) -> bool:
    """Whether the garment stays FRAME_MARGIN inside the image, so the corners stay white."""
    pts = np.concatenate([np.asarray(pose.points(p)) for p in outline.fill]) / pose.canvas
    return bool(pts.min() >= FRAME_MARGIN and pts.max() <= 1.0 - FRAME_MARGIN)


def _pattern_mix(garment: Garment, u: np.ndarray, v: np.ndarray) -> Optional[np.ndarray]:
    """Per-pixel share (0..1) of the secondary colour at garment coordinates (u, v).

    None for a solid garment.
    """
    if garment.pattern == "solid":
        return None
    period, phase = garment.pattern_period, garment.pattern_phase
    a = math.radians(garment.pattern_angle)
    # Coordinates along and across the pattern direction, in periods.
    s = (u * math.cos(a) + v * math.sin(a)) / period + phase
    t = (-u * math.sin(a) + v * math.cos(a)) / period + phase * 0.618
    if garment.pattern == "stripes":
        return ((s % 1.0) < 0.45).astype(np.float32)
    if garment.pattern == "dots":
        # Staggered rows read as a polka-dot print rather than a grid.
        row = np.floor(t)
        ds = ((s + 0.5 * row) % 1.0) - 0.5
        dt_ = (t % 1.0) - 0.5
        return (ds * ds + dt_ * dt_ < 0.28 ** 2).astype(np.float32)
    # Checks (gingham): each band direction adds half a tone, crossings are full.
    return 0.5 * (((s % 1.0) < 0.5).astype(np.float32) + ((t % 1.0) < 0.5))


def _render(garment: Garment, outline: _Outline, image_size: int) -> Image.Image:
    factor = _render_factor(image_size)
    canvas = image_size * factor
    pose = _Pose(garment, canvas)

    mask = Image.new("L", (canvas, canvas), 0)
    mask_draw = ImageDraw.Draw(mask)
    for poly in outline.fill:
        mask_draw.polygon(pose.points(poly), fill=255)
    for poly in outline.cut:
        mask_draw.polygon(pose.points(poly), fill=0)

    # Fabric colours are computed only inside the garment's bounding box (under half the canvas)
    # and pasted through the mask, which blends the anti-aliased edge.
    box = mask.getbbox()
    u, v = pose.garment_coords(box)
    colour = np.asarray(garment.rgb, dtype=np.float32)
    mix = _pattern_mix(garment, u, v)
    if mix is not None:
        secondary = np.asarray(garment.secondary_rgb, dtype=np.float32)
        colour = colour + mix[..., None] * (secondary - colour)
    # Soft light from one side keeps flat-lays from looking like clip art; its direction also
    # varies the image's coarse brightness layout, which keeps perceptual hashes apart.
    a = math.radians(garment.light_angle)
    away = np.clip(0.5 - (u * math.cos(a) + v * math.sin(a)), 0.0, 1.0)
    shade = 1.0 - garment.light_strength * away
    fabric = (colour * shade[..., None] + 0.5).astype(np.uint8)
    image = Image.new("RGB", (canvas, canvas), (255, 255, 255))
    image.paste(Image.fromarray(fabric, "RGB"), box[:2], mask.crop(box))

    draw = ImageDraw.Draw(image)
    seam = tuple(int(c * 0.55) for c in garment.rgb)
    width = max(1, round(factor * 0.7))
    for poly in outline.fill:
        draw.polygon(pose.points(poly), outline=seam, width=width)
    for poly in outline.cut:
        draw.polygon(pose.points(poly), fill=(255, 255, 255), outline=seam, width=width)
    for line in outline.lines:
        draw.line(pose.points(line), fill=seam, width=width, joint="curve")
    for x, y, r in outline.dots:
        (cx, cy), = pose.points([(x, y)])
        rad = r * pose.size
        draw.ellipse((cx - rad, cy - rad, cx + rad, cy + rad), fill=seam)
    return image.resize((image_size, image_size), Image.Resampling.LANCZOS)


# ---------------------------------------------------------------------------------------------
# Near-duplicate guard


# Perceptual hashes differ a little with the filter used to shrink the image to 32x32; the guard
# checks the distance under each of these, so the margin holds for whichever one ingest uses.
HASH_FILTERS = (Image.Resampling.LANCZOS, Image.Resampling.BILINEAR, Image.Resampling.BOX)


def guard_hash_unnormalised_dct(image: Image.Image, resample=Image.Resampling.LANCZOS) -> int:
    """The near-duplicate guard's 64-bit DCT hash: grey 32x32, top-left 8x8 of the unnormalised DCT
    above their median.

    The median is taken over the 63 AC coefficients so that the DC term (overall brightness)
    does not shift it.

    Not the hash ingest stores and compares (`pop_tf.beam.images.perceptual_hash`): that one takes
    BT.601 grey in floating point, always shrinks with LANCZOS and thresholds the orthonormal DCT
    rounded to 1e-6, so the two hashes of one image differ in some bits. The guard keeps this
    one, under every filter of HASH_FILTERS, because the images a seed draws depend on it bit for
    bit; its margin (`MIN_HASH_DISTANCE`, see there) keeps ingest's hashes apart too.
    """
    grey = np.asarray(image.convert("L").resize((32, 32), resample), np.float64)
    low = scipy.fft.dctn(grey, type=2)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


class _HashIndex:
    """Hashes of the images kept so far; answers 'how close is this image to any of them?'."""

    def __init__(self, capacity: int):
        self._hashes = np.zeros((max(capacity, 1), len(HASH_FILTERS)), dtype=np.uint64)
        self._n = 0

    @staticmethod
    def hashes(image: Image.Image) -> np.ndarray:
        grey = image.convert("L")
        return np.array([guard_hash_unnormalised_dct(grey, f) for f in HASH_FILTERS], dtype=np.uint64)

    def min_distance(self, hashes: np.ndarray) -> int:
        """Smallest Hamming distance to any kept image, under any of the hash filters."""
        if self._n == 0:
            return 64
        diff = np.bitwise_xor(self._hashes[: self._n], hashes[None, :])
        return int(np.bitwise_count(diff).min())

    def add(self, hashes: np.ndarray) -> None:
        if self._n == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[self._n] = hashes
        self._n += 1


# ---------------------------------------------------------------------------------------------
# Images: draw, encode and keep apart


@dataclasses.dataclass
class _Drawn:
    garment: Garment
    data: bytes  # encoded file contents
    ext: str  # "png" | "jpg"
    tries: int  # poses drawn until one fitted the frame and was far from all earlier images
    distance: int  # hash bits to the closest earlier image (64 for the first)


def _encode(image: Image.Image, ext: str) -> bytes:
    buf = io.BytesIO()
    if ext == "jpg":
        image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    else:
        image.save(buf, format="PNG")
    return buf.getvalue()


def _draw_distinct(style: dict, ext: str, image_size: int, rng: np.random.Generator,
                   index: _HashIndex) -> _Drawn:
    """Draws poses for `style` until the garment fits the frame and its image is no near-duplicate.

    The hash is taken of the decoded file, so JPEG artefacts are accounted for. Should the pose
    space of a garment type ever get too crowded for MAX_POSE_TRIES (far beyond 8,000 images),
    the farthest candidate seen is kept and the shortfall is logged.
    """
    best = None
    for tries in range(1, MAX_POSE_TRIES + 1):
        garment = _sample_pose(style, rng)
        outline = _outline(garment)
        if not _fits(outline, _Pose(garment, image_size)):
            continue
        data = _encode(_render(garment, outline, image_size), ext)
        value = _HashIndex.hashes(Image.open(io.BytesIO(data)))
        distance = index.min_distance(value)
        if best is None or distance > best[0]:
            best = (distance, value, _Drawn(garment, data, ext, tries, distance))
        if distance >= MIN_HASH_DISTANCE:
            break
    if best is None:
        raise RuntimeError(f"no pose of a {style['shape']} fits a {image_size}px frame")
    distance, value, drawn = best
    if distance < MIN_HASH_DISTANCE:
        log.warning("synth: a %s is only %d hash bits from an earlier image (wanted %d)",
                    style["shape"], distance, MIN_HASH_DISTANCE)
    index.add(value)
    return drawn


# ---------------------------------------------------------------------------------------------
# Users, times, likes, captions


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _users(num_users: int, rng: np.random.Generator) -> tuple:
    """Follower counts (log-normal) and posting activity shares (some users post much more)."""
    followers = np.maximum(10, np.round(np.exp(rng.normal(7.5, 1.2, num_users)))).astype(np.int64)
    activity = rng.dirichlet(np.full(num_users, 3.0))
    # Each user posts within an active window, so many of their posts are close in time.
    window = rng.uniform(*USER_ACTIVE_DAYS, num_users)
    start = rng.uniform(MIN_VALID_AGE_DAYS + window, HISTORY_DAYS)  # age of the first post
    return followers, activity, start, window


def _post_ages(user: np.ndarray, too_recent: np.ndarray, start: np.ndarray, window: np.ndarray,
               rng: np.random.Generator) -> np.ndarray:
    """Post age in days at download time: within the user's window, or very recent if broken."""
    age = start[user] - rng.uniform(0.0, 1.0, len(user)) * window[user]
    recent = rng.uniform(*TOO_RECENT_AGE_DAYS, len(user))
    # Whole seconds, so the written timestamps give back exactly these ages.
    return np.round(np.where(too_recent, recent, age) * 86400.0) / 86400.0


def _likes(intrinsic: np.ndarray, followers: np.ndarray, age_days: np.ndarray,
           rng: np.random.Generator) -> tuple:
    settled = np.log1p(-np.exp(-age_days / LIKES_SETTLE_DAYS))
    log_likes = (LIKES_BASE + FOLLOWER_ELASTICITY * np.log(followers) + INTRINSIC_WEIGHT * intrinsic
                 + settled + rng.normal(0.0, LIKES_NOISE_SD, len(intrinsic)))
    likes = np.floor(np.exp(log_likes)).astype(np.int64)
    comments = rng.poisson(likes * COMMENTS_PER_LIKE).astype(np.int64)
    return likes, comments


_WORDS = ("new", "today", "love", "this", "look", "summer", "style", "weekend", "vibes",
          "cozy", "classic", "perfect", "fit", "fresh", "casual", "favourite", "ready", "so",
          "happy", "sunday", "morning", "city", "walk", "simple", "details", "just", "in",
          "again", "finally", "here")
_TAGS = ("#ootd", "#fashion", "#style", "#outfit", "#instafashion", "#streetstyle", "#lookbook",
         "#newin", "#wiw", "#fashionista")
_HANDLES = ("@anna_styles", "@the_closet", "@marco.fits", "@lena", "@shopnorth", "@jules_wears")
_SHAPE_WORDS = {"tshirt": "tee", "tank_top": "tank", "long_dress": "dress", "skirt": "skirt",
                "trousers": "trousers", "shorts": "shorts", "jacket": "jacket",
                "hoodie": "hoodie"}


def _caption(garment: Garment, kind: Optional[str], rng: np.random.Generator) -> str:
    """A caption that passes the paper's caption rule, or breaks exactly the rule `kind` names.

    Valid: 2-6 words including 1-2 hashtags, no '@'. Too long: 7+ plain words and a hashtag,
    so it is too long however hashtags are counted.
    """
    def words(n):
        picked = [_WORDS[i] for i in rng.integers(len(_WORDS), size=n)]
        # Name the garment now and then, as people do.
        if n and rng.random() < 0.5:
            picked[rng.integers(n)] = _SHAPE_WORDS[garment.shape]
        return picked

    def tags(n):
        return [str(t) for t in rng.choice(_TAGS, size=n, replace=False)]

    if kind == reasons.FILTER_CAPTION_TOO_LONG:
        tokens = words(int(rng.integers(7, 11))) + tags(1)
    elif kind == reasons.FILTER_CAPTION_NO_HASHTAG:
        tokens = words(int(rng.integers(1, 7)))
    elif kind == reasons.FILTER_CAPTION_MENTION:
        tokens = words(int(rng.integers(1, 4))) + tags(1)
        tokens.insert(int(rng.integers(len(tokens) + 1)), str(rng.choice(_HANDLES)))
    else:
        n_tags = int(rng.integers(1, 3))
        tokens = words(int(rng.integers(1, 7 - n_tags))) + tags(n_tags)
    return " ".join(tokens)


# ---------------------------------------------------------------------------------------------
# Broken records


def _broken_plan(num_posts: int, broken_share: float, num_corrupt: int,
                 rng: np.random.Generator) -> list:
    """Reason code (or None) for each post: disjoint sets, chosen by the seeded RNG."""
    per_filter = int(round(broken_share * num_posts))
    needed = per_filter * len(FILTER_KINDS) + num_corrupt
    if needed > num_posts:
        raise ConfigError(
            f"config keys 'synth.broken_share' and 'synth.num_corrupt' ask for {needed} broken "
            f"records, more than synth.num_posts={num_posts}")
    kinds = [k for k in FILTER_KINDS for _ in range(per_filter)]
    kinds += [CORRUPT_KINDS[i % len(CORRUPT_KINDS)] for i in range(num_corrupt)]
    plan = [None] * num_posts
    for post, kind in zip(rng.permutation(num_posts)[:needed], kinds):
        plan[int(post)] = kind
    return plan


def _file_contents(drawn: _Drawn, kind: Optional[str]) -> tuple:
    """(extension, bytes or None for no file) of the image file a record points at."""
    if kind == reasons.CORRUPT_IMAGE:
        png = drawn.data
        if drawn.ext != "png":
            png = _encode(Image.open(io.BytesIO(drawn.data)), "png")
        return "png", png[: len(png) // 2]
    if kind == reasons.NOT_AN_IMAGE:
        return "jpg", _NOT_AN_IMAGE_BODY
    if kind == reasons.MISSING_FILE:
        return "png", None
    if kind == reasons.EMPTY_FILE:
        return "png", b""
    return drawn.ext, drawn.data


# ---------------------------------------------------------------------------------------------
# Writing


def _post_id(i: int) -> str:
    return f"p{i:06d}"


def _write_image(images_dir: str, post_id: str, drawn: _Drawn, kind: Optional[str]) -> str:
    """Writes the file a record points at (nothing for MISSING_FILE); returns its file name."""
    ext, data = _file_contents(drawn, kind)
    name = f"{post_id}.{ext}"
    path = os.path.join(images_dir, name)
    if data is None:
        if os.path.lexists(path):  # left by an earlier run
            os.remove(path)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return name


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _jsonl(rows: Sequence[dict]) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


_OWN_IMAGE = re.compile(r"^p\d+\.(png|jpg)$")
_OWN_FILES = ("metadata.jsonl", TRUTH_FILE, "broken.jsonl", "config.json")


def foreign_entries(output: str) -> list:
    """What `output` holds that synth does not write there (paths relative to it), sorted.

    synth replaces metadata.jsonl and removes p<N>.png/.jpg images an earlier run left behind,
    so it writes only into a folder that holds nothing else: a new one, or its own earlier output
    (with the pipeline's completion marker).
    """
    from pop_tf.pipeline import MARKER
    from pop_tf.stages.staging import RECORD

    if not os.path.isdir(output):
        return []
    own = {*_OWN_FILES, MARKER, RECORD}
    foreign = []
    for name in sorted(os.listdir(output)):
        path = os.path.join(output, name)
        if name == "images" and os.path.isdir(path) and not os.path.islink(path):
            foreign += [f"images/{n}" for n in sorted(os.listdir(path)) if not _OWN_IMAGE.match(n)]
        elif name not in own and name.removesuffix(".tmp") not in own:
            foreign.append(name)
    return foreign


def _remove_stale_images(images_dir: str, keep: set) -> None:
    """Removes images an earlier, larger run left behind, which no record points at."""
    for name in os.listdir(images_dir):
        if _OWN_IMAGE.match(name) and name not in keep:
            os.remove(os.path.join(images_dir, name))


def run(config: SynthConfig) -> dict:
    """Writes the synthetic dataset into `config.output`; returns the artifact paths.

    Returns:
      {"dataset": <output dir>, "metadata": metadata.jsonl, "truth": truth.jsonl,
       "broken": broken.jsonl, "images": images dir, "config": config.json}
    """
    if not config.output:
        raise ConfigError("config key 'synth.output': an output directory is required")
    # A SynthConfig built in code has not been through config.resolve's range checks.
    for key, value in to_dict(config).items():
        validate_value(f"synth.{key}", value)
    started = time.perf_counter()
    out = config.output
    foreign = foreign_entries(out)
    if foreign:
        from pop_tf.stages.staging import OutputFolderError
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise OutputFolderError(
            f"synth.output '{out}' holds {', '.join(repr(n) for n in foreign[:3])}{more}, which synth did not write; "
            "synth replaces metadata.jsonl and images/p*.png in its folder, so it writes only into a new folder or "
            "its own earlier output: choose another folder")
    paths = {
        "dataset": out,
        "metadata": os.path.join(out, "metadata.jsonl"),
        "truth": os.path.join(out, TRUTH_FILE),
        "broken": os.path.join(out, "broken.jsonl"),
        "images": os.path.join(out, "images"),
    }
    os.makedirs(paths["images"], exist_ok=True)
    # metadata.jsonl is written last and marks a finished dataset; drop an old one first so a
    # run killed halfway never pairs old metadata with new images.
    for key in ("metadata", "truth", "broken"):
        if os.path.exists(paths[key]):
            os.remove(paths[key])

    children = np.random.SeedSequence(config.seed).spawn(len(_STREAMS))
    streams = {name: np.random.default_rng(child) for name, child in zip(_STREAMS, children)}
    n = config.num_posts
    plan = _broken_plan(n, config.broken_share, config.num_corrupt, streams["broken"])

    followers, activity, start, window = _users(config.num_users, streams["users"])
    user = streams["users"].choice(config.num_users, size=n, p=activity)
    downloaded = FIRST_DOWNLOAD + dt.timedelta(days=int(streams["times"].integers(0, 365)))
    too_recent = np.array([kind == reasons.FILTER_TOO_RECENT for kind in plan])
    age_days = _post_ages(user, too_recent, start, window, streams["times"])
    exts = np.where(streams["formats"].random(n) < JPEG_SHARE, "jpg", "png")

    # Images are written as they are drawn, so memory stays flat for large datasets.
    index = _HashIndex(n)
    garments, names, tries, closest = [], [], 0, 64
    for i in range(n):
        style = _sample_style(streams["attributes"])
        drawn = _draw_distinct(style, str(exts[i]), config.image_size, streams["pose"], index)
        names.append(_write_image(paths["images"], _post_id(i), drawn, plan[i]))
        garments.append(drawn.garment)
        tries, closest = tries + drawn.tries, min(closest, drawn.distance)
        if (i + 1) % 500 == 0:
            log.info("synth: drew %d/%d images", i + 1, n)
    _remove_stale_images(paths["images"], set(names))

    intrinsic = np.array([intrinsic_popularity(g) for g in garments])
    likes, comments = _likes(intrinsic, followers[user], age_days, streams["likes"])

    metadata, truth, broken = [], [], []
    for i, (garment, kind) in enumerate(zip(garments, plan)):
        post_id = _post_id(i)
        posted = downloaded - dt.timedelta(seconds=int(round(age_days[i] * 86400.0)))
        metadata.append({
            "image": f"images/{names[i]}",
            "post_id": post_id,
            "likes": int(likes[i]),
            "user_id": f"u{int(user[i]):04d}",
            "followers": int(followers[user[i]]),
            "comments": int(comments[i]),
            "caption": _caption(garment, kind, streams["captions"]),
            "posted_at": _iso(posted),
            "downloaded_at": _iso(downloaded),
            "content_type": "photo",
            EXTRA_FIELD[0]: EXTRA_FIELD[1],
        })
        truth.append({"post_id": post_id, "intrinsic": round(float(intrinsic[i]), 6),
                      "user_id": f"u{int(user[i]):04d}", **garment.truth()})
        if kind is not None:
            broken.append({"post_id": post_id, "reason": kind})

    _write_atomic(paths["truth"], _jsonl(truth))
    _write_atomic(paths["broken"], _jsonl(broken))
    _write_atomic(paths["metadata"], _jsonl(metadata))
    paths["config"] = write_resolved(config, out)
    log.info("synth: %d posts (%d broken) by %d users in %s in %.1f s (%.2f poses per image, "
             "closest pair %d hash bits apart)", n, len(broken), config.num_users, out,
             time.perf_counter() - started, tries / n, closest)
    return paths
