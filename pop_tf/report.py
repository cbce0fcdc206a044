"""A self-contained HTML report and the figures in it, drawn with PIL (no matplotlib).

`Report` collects headings, paragraphs, tables and images and renders one HTML page whose images
are embedded as base64 `data:` URIs and whose style is inline, so the file can be mailed,
archived or opened offline and shows the same thing everywhere: it references nothing outside
itself (no scripts, links, fonts or image files).

The figures (`histogram_png`, `bin_proportions_png`) are plain PIL drawings returned as PNG
bytes: pop_tf depends on Pillow already, and two small plots do not justify matplotlib.
"""

import base64
import html
import io
import math

import numpy as np

# Line colours of the figures' series, in order (colour-blind-safe Okabe-Ito hues).
SERIES_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233))
_AXIS = (60, 60, 60)
_GRID = (225, 225, 225)

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; margin-top: 2em; }
h3 { font-size: 1.1em; margin-top: 1.5em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: 0.3em; }
figure { margin: 1em 0; } figcaption { font-size: 0.9em; color: #444; }
img { image-rendering: pixelated; max-width: 100%; border: 1px solid #ddd; }
ul.how { font-size: 0.9em; color: #333; }
.note { background: #fff8e1; padding: 0.5em 0.8em; border-left: 3px solid #f0b400; }
.warning { background: #fdecea; padding: 0.5em 0.8em; border-left: 3px solid #c62828; font-weight: 600; }
"""


def png_bytes(image) -> bytes:
    """PNG bytes of a uint8 array [H, W, 3] (or [H, W]), a PIL image, or PNG bytes (returned as is)."""
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_uri(image) -> str:
    """A `data:image/png;base64,...` URI of an image (anything `png_bytes` takes)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


def format_value(value, digits: int = 4) -> str:
    """A table cell: floats to `digits` significant decimals, None/NaN as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            return "–"
        # Very large and very small (e.g. FID-like figures of random extractors) in exponent form.
        scientific = abs(float(value)) >= 1e4 or 0 < abs(float(value)) < 10 ** -(digits - 1)
        return f"{float(value):.{digits}g}" if scientific else f"{float(value):.{digits}f}"
    return str(value)


def table_html(headers, rows, caption: str = "") -> str:
    """An HTML table, every header and cell escaped, cells formatted by `format_value`."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# Tiles of 32-pixel images are unreadable at their own size: grids are shown enlarged by a whole
# factor so each tile is at least this many CSS pixels wide (the PNG keeps its pixels), but never
# wider than a page.
MIN_TILE_WIDTH = 96
MAX_FIGURE_WIDTH = 1060


def display_width(pixel_width: int, tile: int = None) -> int:
    """CSS width of a `pixel_width`-wide grid of `tile`-pixel tiles (see MIN_TILE_WIDTH)."""
    scale = max(1, MIN_TILE_WIDTH // max(1, int(tile))) if tile else 1
    while scale > 1 and pixel_width * scale > MAX_FIGURE_WIDTH:
        scale -= 1
    return int(pixel_width * scale)


class Report:
    """An HTML page built section by section; `render()` returns the whole document as text.

    Every piece of text is HTML-escaped, so captions and table cells may hold any characters.
    """

    def __init__(self, title: str):
        self.title = title
        self._parts = []

    def heading(self, text: str, level: int = 2) -> None:
        self._parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def paragraph(self, text: str, css_class: str = "") -> None:
        attr = f' class="{css_class}"' if css_class else ""
        self._parts.append(f"<p{attr}>{html.escape(text)}</p>")

    def bullets(self, items, css_class: str = "how") -> None:
        """A bullet list, e.g. one line per metric saying how it was computed."""
        lines = "".join(f"<li>{html.escape(item)}</li>" for item in items)
        self._parts.append(f'<ul class="{css_class}">{lines}</ul>')

    def table(self, headers, rows, caption: str = "") -> None:
        """A table; cells go through `format_value`."""
        self._parts.append(table_html(headers, rows, caption))

    def image(self, image, alt: str, caption: str = "", width: int = None) -> None:
        """An embedded PNG figure (anything `png_bytes` takes).

        `width` (CSS pixels) enlarges small image grids on screen; pixels stay crisp (no smoothing).
        """
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        size = f' style="width: {int(width)}px"' if width else ""
        self._parts.append(f'<figure><img src="{data_uri(image)}" alt="{html.escape(alt, quote=True)}"{size}>'
                           f"{cap}</figure>")

    def extend(self, other: "Report") -> None:
        """Appends another report's sections (built on the side, e.g. to be placed last)."""
        self._parts.extend(other._parts)

    def render(self) -> str:
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
                f"<h1>{html.escape(self.title)}</h1>\n" + "\n".join(self._parts) + "\n</body></html>\n")


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _font(size: int = 12):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _nice_ticks(low: float, high: float, count: int = 5) -> list:
    """About `count` round tick values covering [low, high]."""
    if not high > low:
        return [low]
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _tick_label(value: float) -> str:
    return f"{value:.3g}"


class _Axes:
    """A plotting area inside a PIL canvas that maps data coordinates to pixels."""

    def __init__(self, width, height, x_range, y_range, title, xlabel, ylabel):
        from PIL import Image, ImageDraw

        self.image = Image.new("RGB", (width, height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.font, self.title_font = _font(12), _font(14)
        self.left, self.right, self.top, self.bottom = 64, width - 16, 34, height - 46
        self.x_range, self.y_range = x_range, y_range
        self.draw.text((width // 2, 8), title, fill=_AXIS, font=self.title_font, anchor="mt")
        self.draw.text(((self.left + self.right) // 2, height - 6), xlabel, fill=_AXIS, font=self.font, anchor="mb")
        label = self._vertical_text(ylabel)
        self.image.paste(label, (4, (self.top + self.bottom - label.height) // 2))

    def _vertical_text(self, text):
        from PIL import Image, ImageDraw

        box = self.draw.textbbox((0, 0), text, font=self.font)
        canvas = Image.new("RGB", (box[2] - box[0] + 2, box[3] - box[1] + 4), "white")
        ImageDraw.Draw(canvas).text((1 - box[0], 2 - box[1]), text, fill=_AXIS, font=self.font)
        return canvas.rotate(90, expand=True)

    def x(self, value):
        low, high = self.x_range
        return self.left + (value - low) / (high - low or 1.0) * (self.right - self.left)

    def y(self, value):
        low, high = self.y_range
        return self.bottom - (value - low) / (high - low or 1.0) * (self.bottom - self.top)

    def frame(self, x_ticks=None, y_ticks=None):
        for tick in y_ticks if y_ticks is not None else _nice_ticks(*self.y_range):
            y = self.y(tick)
            self.draw.line([(self.left, y), (self.right, y)], fill=_GRID)
            self.draw.text((self.left - 4, y), _tick_label(tick), fill=_AXIS, font=self.font, anchor="rm")
        for tick in x_ticks if x_ticks is not None else _nice_ticks(*self.x_range):
            x = self.x(tick)
            self.draw.line([(x, self.bottom), (x, self.bottom + 4)], fill=_AXIS)
            self.draw.text((x, self.bottom + 6), _tick_label(tick), fill=_AXIS, font=self.font, anchor="mt")
        self.draw.rectangle([self.left, self.top, self.right, self.bottom], outline=_AXIS)

    def legend(self, names):
        if not names:
            return
        # A white box behind the entries keeps them readable over the bars or lines they cover.
        widest = max(self.draw.textlength(name, font=self.font) for name in names)
        self.draw.rectangle([self.right - 30 - widest, self.top + 3, self.right - 3, self.top + 9 + 16 * len(names)],
                            fill="white", outline=_GRID)
        y = self.top + 6
        for i, name in enumerate(names):
            colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
            width = self.draw.textlength(name, font=self.font)
            x = self.right - 8 - width
            self.draw.rectangle([x - 18, y + 3, x - 6, y + 11], fill=colour)
            self.draw.text((x, y), name, fill=_AXIS, font=self.font)
            y += 16


def histogram_png(series: dict, title: str, xlabel: str, bins: int = 20, width: int = 640,
                  height: int = 360) -> bytes:
    """Overlaid outline histograms (counts) of several value sets on shared bins, as PNG bytes.

    Args:
        series: {legend name: 1-D values}; empty sets are left out of the plot.
        title, xlabel: figure texts.
        bins: number of equal-width bins over the range of all values.
    """
    from PIL import ImageDraw

    values = {name: np.asarray(v, dtype=np.float64).reshape(-1) for name, v in series.items()}
    values = {name: v[np.isfinite(v)] for name, v in values.items() if np.isfinite(v).any()}
    everything = np.concatenate(list(values.values())) if values else np.zeros([1])
    low, high = float(everything.min()), float(everything.max())
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = {name: np.histogram(v, bins=edges)[0] for name, v in values.items()}
    top = max([int(c.max()) for c in counts.values()] + [1])
    axes = _Axes(width, height, (low, high), (0.0, top * 1.1), title, xlabel, "images")
    axes.frame(y_ticks=[t for t in _nice_ticks(0.0, top * 1.1) if float(t).is_integer()])
    draw = ImageDraw.Draw(axes.image)
    for i, (name, count) in enumerate(counts.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        points = [(axes.x(edges[0]), axes.y(0))]
        for k, c in enumerate(count):
            points += [(axes.x(edges[k]), axes.y(c)), (axes.x(edges[k + 1]), axes.y(c))]
        points.append((axes.x(edges[-1]), axes.y(0)))
        draw.line(points, fill=colour, width=2)
        mean = float(values[name].mean())
        draw.line([(axes.x(mean), axes.top), (axes.x(mean), axes.bottom)], fill=colour, width=1)
    axes.legend([f"{name} (mean {values[name].mean():.3g})" for name in counts])
    return png_bytes(axes.image)


def bin_proportions_png(train, generated, significant, title: str, width: int = 640, height: int = 320) -> bytes:
    """NDB's picture: per-bin share of training vs generated samples, significant bins marked.

    Args:
        train: [K] training proportions per bin (largest first, as `NDB` orders them).
        generated: [K] generated proportions per bin.
        significant: bin indices whose difference is statistically significant (marked in red
            under the axis).
    """
    from PIL import ImageDraw

    train, generated = np.asarray(train, np.float64), np.asarray(generated, np.float64)
    count = len(train)
    top = max(float(train.max(initial=0)), float(generated.max(initial=0)), 1e-3) * 1.15
    axes = _Axes(width, height, (0.0, float(count)), (0.0, top), title, "bin (largest training share first)",
                 "share")
    axes.frame(x_ticks=[t for t in _nice_ticks(0.0, float(count)) if float(t).is_integer()])
    draw = ImageDraw.Draw(axes.image)
    slot = (axes.right - axes.left) / count
    for k in range(count):
        for j, share in enumerate((train[k], generated[k])):
            x0 = axes.left + k * slot + slot * (0.1 + 0.4 * j)
            draw.rectangle([x0, axes.y(share), x0 + max(1.0, slot * 0.4) - 1, axes.bottom],
                           fill=SERIES_COLOURS[j])
    for k in significant:
        x = axes.left + (k + 0.5) * slot
        draw.polygon([(x, axes.bottom - 10), (x - 4, axes.bottom - 2), (x + 4, axes.bottom - 2)], fill=(200, 0, 0))
    axes.legend(["training", "generated"])
    return png_bytes(axes.image)


def side_by_side(images, gap: int = 2) -> np.ndarray:
    """uint8 images [h_i, w_i, 3] left to right on white, `gap` pixels apart (top-aligned)."""
    images = [np.asarray(i, np.uint8) for i in images]
    canvas = np.full((max(i.shape[0] for i in images), sum(i.shape[1] for i in images) + gap * (len(images) - 1), 3),
                     255, np.uint8)
    x = 0
    for image in images:
        canvas[:image.shape[0], x:x + image.shape[1]] = image
        x += image.shape[1] + gap
    return canvas


def stack_rows(rows, gap: int = 2) -> np.ndarray:
    """uint8 rows [h, w_i, 3] stacked top to bottom on white, `gap` pixels apart (left-aligned)."""
    rows = [np.asarray(r, dtype=np.uint8) for r in rows]
    height = sum(r.shape[0] for r in rows) + gap * (len(rows) - 1)
    width = max(r.shape[1] for r in rows)
    canvas = np.full((height, width, 3), 255, np.uint8)
    y = 0
    for row in rows:
        canvas[y:y + row.shape[0], :row.shape[1]] = row
        y += row.shape[0] + gap
    return canvas
