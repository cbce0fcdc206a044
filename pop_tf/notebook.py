"""Helpers for the notebooks in `notebooks/`: find a work folder's artifacts, read a few held-out
posts, and display images and tables without matplotlib or pandas.

The notebooks only import and display, so what they need beyond the stages' own functions lives
here, where the tests reach it. Images are shown as PNG bytes (`IPython.display.Image`) and tables
as plain HTML, formatted like the evaluate report (`pop_tf.report.format_value`).
"""

import html
import io
import json
import os

import numpy as np

from pop_tf import contracts, layout
from pop_tf.errors import PopTfError

WORKDIR_ENV = "POP_TF_WORKDIR"
SAVED_MODELS_ENV = "POP_TF_SAVED_MODELS"


def workdir(given: str) -> str:
    """`given` (the notebook's WORKDIR parameter) as an absolute path to an existing folder.

    Raises:
        PopTfError: when it is not a folder, naming the path it was resolved to (a relative path
            is taken from the kernel's folder, which `jupyter execute` sets to the notebook's).
    """
    path = os.path.abspath(os.path.expanduser(given))
    if not os.path.isdir(path):
        raise PopTfError(f"work folder {given!r} (resolved to {path}) does not exist: run `pop-tf run --preset demo "
                         f"--workdir demo` first, and set {WORKDIR_ENV} to an absolute path")
    return path


def read_json(path: str, needed_for: str = ""):
    """The parsed JSON file, or None when it does not exist (an optional stage not run).

    With `needed_for` (what the file is needed for), a missing file is a PopTfError instead.
    """
    if not os.path.isfile(path):
        if needed_for:
            raise PopTfError(f"{path} does not exist, but {needed_for} needs it: run its stage first")
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _newest_version(base: str):
    versions = [int(n) for n in os.listdir(base) if n.isdigit()] if os.path.isdir(base) else []
    return os.path.join(base, str(max(versions))) if versions else None


def saved_model_dir(work: str, model: str, saved_models: str = None) -> str:
    """The SavedModel folder of `model` ("ranker", "clusterer" or "translator") for a work folder.

    Looks, in order, at the training stage's own `<work>/<stage>/saved_model`, at the version the
    export stage recorded in `<work>/export/exported.json`, and at the newest `<saved_models>/
    <model>/<v>` (`saved_models` defaults to `$POP_TF_SAVED_MODELS`), so a work folder whose stage
    folders were cleaned up still finds its exported models.

    Raises:
        PopTfError: when none holds the model (or `model` is not one of the three).
    """
    from pop_tf.stages import export

    if model not in export.SOURCES:
        raise PopTfError(f"unknown model {model!r}; use one of {', '.join(export.SOURCES)}")
    candidates = [os.path.join(contracts.folder(work, export.SOURCES[model][0]), "saved_model")]
    exported = read_json(os.path.join(contracts.folder(work, export.STAGE), "exported.json")) or {}
    if exported.get(model):
        candidates.append(exported[model])
    saved_models = saved_models or os.environ.get(SAVED_MODELS_ENV)
    if saved_models:
        candidates.append(_newest_version(os.path.join(saved_models, model)))
    for candidate in candidates:
        if candidate and os.path.isdir(candidate):
            return candidate
    raise PopTfError(f"no {model} SavedModel for {work}: looked at {', '.join(c for c in candidates if c)}; run the "
                     f"{export.SOURCES[model][0]} stage (or set {SAVED_MODELS_ENV} to an export folder)")


def held_out_posts(work: str, count: int, domain: str = None) -> dict:
    """The first `count` test-split posts of the score stage, optionally of one popularity domain.

    Returns numpy arrays in file order: `image`, `edge` uint8 [n, S, S, 3] (S the stored size),
    `score` float32 [n], and `post_id`, `domain` as lists of str (domain "" for the undecided
    middle). n < `count` when the split holds fewer such posts.
    """
    import tensorflow as tf

    from pop_tf import data

    scored = contracts.folder(work, "score")
    stats = read_json(os.path.join(scored, layout.STATS), needed_for="reading held-out posts")
    pattern = layout.shard_pattern(scored, "test")
    posts = data.post_dataset(pattern, int(stats["image_size"]), batch_size=64, scored=True).unbatch()
    if domain is not None:
        posts = posts.filter(lambda post: tf.equal(post["domain"], domain))
    rows = list(posts.take(count).as_numpy_iterator())
    size = int(stats["image_size"])
    return {
        "image": np.stack([r["image"] for r in rows]) if rows else np.zeros([0, size, size, 3], np.uint8),
        "edge": np.stack([r["edge"] for r in rows]) if rows else np.zeros([0, size, size, 3], np.uint8),
        "score": np.asarray([r["score"] for r in rows], np.float32),
        "post_id": [r["post_id"].decode("utf-8") for r in rows],
        "domain": [r["domain"].decode("utf-8") for r in rows],
    }


def strip(images, gap: int = 2) -> np.ndarray:
    """uint8 images [n, h, w, 3] side by side on white, `gap` pixels apart (one row of a grid)."""
    from pop_tf.report import side_by_side

    return side_by_side(images, gap)


def show_image(image, caption: str = "", tile: int = None):
    """Displays an image (uint8 array, PIL image or PNG bytes, unchanged) with an optional caption.

    `tile`: the side of the image's tiles, to enlarge small-image grids on screen.
    """
    from IPython.display import HTML, Image, display
    from PIL import Image as PILImage

    from pop_tf.report import display_width, png_bytes

    png = png_bytes(image)
    with PILImage.open(io.BytesIO(png)) as decoded:
        width = decoded.size[0]
    display(Image(data=png, format="png", width=display_width(width, tile)))
    if caption:
        display(HTML(f"<p><em>{html.escape(caption)}</em></p>"))


def show_file(path: str, caption: str = "", tile: int = None) -> bool:
    """Displays a PNG file as it is on disk; a note instead when it is missing. True when shown."""
    from IPython.display import HTML, display

    if not os.path.isfile(path):
        display(HTML(f"<p>No <code>{html.escape(path)}</code> (its stage has not written it).</p>"))
        return False
    with open(path, "rb") as f:
        show_image(f.read(), caption or os.path.basename(path), tile)
    return True


def show_table(headers, rows, caption: str = "") -> None:
    from IPython.display import HTML, display

    from pop_tf.report import table_html

    display(HTML(table_html(headers, rows, caption)))


def note(text: str) -> None:
    """Displays one paragraph of plain text (escaped), e.g. why a section is empty."""
    from IPython.display import HTML, display

    display(HTML(f"<p>{html.escape(text)}</p>"))


def _label(metric: str) -> str:
    # The evaluate stage names figures from non-published weights *_like; keep that visible here.
    return {"fid": "FID", "fid_like": "FID-like", "lpips": "LPIPS", "lpips_like": "LPIPS-like"}.get(metric, metric)


def evaluate_headlines(metrics: dict) -> list:
    """[figure, value] rows of an evaluate `metrics.json`: uplift, FID, diversity, ranker fit, NDB.

    Figures the evaluation did not produce (no translator, no truth, no pix2pix) are left out.
    """
    rows = []
    ranker = metrics.get("ranker") or {}
    if "kendall_tau" in ranker:
        rows += [["ranker Kendall τ vs hidden truth", ranker["kendall_tau"]],
                 ["ranker Spearman ρ vs hidden truth", ranker["spearman"]]]
    translator = metrics.get("translator") or {}
    if translator:
        rows.append(["unpopular test images translated", translator["inputs"]])
        for mode in ("style", "content"):
            result = translator["uplift"][mode]
            rows += [[f"{mode} translation: mean popularity uplift", result["mean_uplift"]],
                     [f"{mode} translation: uplift standard error", result["stderr"]],
                     [f"{mode} translation: share of images improved", result["share_improved"]]]
        fid = translator["fid"]
        for mode in ("style", "content"):
            rows.append([f"{mode} translation: {_label(fid['metric'])} vs real popular", fid[mode]])
        diversity = translator["lpips_diversity"]
        rows.append([f"{_label(diversity['metric'])} diversity, colour → colour",
                     diversity["colour_to_colour"]["mean"]])
    for row in (metrics.get("pix2pix") or {}).get("table", []):
        rows += [[f"pix2pix {row['variant']}: NDB", row["ndb"]], [f"pix2pix {row['variant']}: JSD", row["jsd"]]]
    return rows


def diversity_rows(metrics: dict) -> tuple:
    """(headers, rows) of the translator's random-style diversity (the paper-1 Table 2 layout).

    One row per task (colour → colour, edge → colour) and one for distinct real popular images,
    the reference value; no rows without a translator evaluation.
    """
    translator = metrics.get("translator") or {}
    if not translator:
        return [], []
    diversity = translator["lpips_diversity"]
    name = _label(diversity["metric"])
    headers = ["task", f"{name} diversity ↑", "± s.e.", "pairs", "inputs × samples",
               f"{_label(translator['fid']['metric'])} ↓"]
    rows = []
    for task, key in (("colour → colour", "colour_to_colour"), ("edge → colour", "edge_to_colour")):
        result = diversity[key]
        rows.append([task, result["mean"], result["stderr"], result["num_pairs"],
                     f"{result['num_inputs']} × {result['outputs_per_input']}", result["fid"]])
    real = diversity.get("real_pairs")
    if real:
        rows.append(["real popular images (distinct pairs)", real["mean"], real["stderr"], real["num_pairs"], None,
                     None])
    return headers, rows


def ndb_rows(metrics: dict) -> tuple:
    """(headers, rows) of the pix2pix diversity ablation (the paper-2 Table 1 layout); no rows without one."""
    pix2pix = metrics.get("pix2pix") or {}
    if not pix2pix:
        return [], []
    settings = metrics.get("settings", {})
    fid, lpips = _label(settings.get("fid", {}).get("metric", "fid")), _label(settings.get("lpips", {}).get(
        "metric", "lpips"))
    headers = ["method", f"{fid} ↓", "NDB ↓", "JSD ↓", f"{lpips} ↑", "± s.e."]
    return headers, [[r["variant"], r["fid"], r["ndb"], r["jsd"], r["lpips"], r["lpips_stderr"]]
                     for r in pix2pix["table"]]
