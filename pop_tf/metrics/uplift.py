"""Popularity uplift (docs/metrics.md): how much translation raises the ranker's popularity score.

For every translated image the uplift is `score(translated) - score(input)`, both scores from the
same popularity ranker. The summary gives the mean uplift ± its standard error, the median, the
share of images whose score went up (strictly), and the share of translated images whose score
exceeds a threshold. That threshold is on the *score*, not on the uplift: the Popularity-GAN paper
quotes the share of translated images that score above 1.0 on its ranker (an unbounded score,
roughly -1.5 to 3.1 on its data), and `share_above_1` is that figure. A ranker with another scale
needs another threshold (`threshold=`, giving `share_above_threshold`); the share above 1.0 is
still reported for comparison with the paper, and the share of *inputs* above the threshold is
the baseline to read it against.

The translation modes (style: content of an unpopular image, style of a popular one; content:
the other way round; docs/metrics.md, Popularity uplift) are compared with `compare_modes`, one
row per mode.

References:
    Popularity-GAN thesis material, baharehmn/thesis (2022), `Results.xlsx`: 21 pairs, mean
    uplift +0.28 with 2/3 of the images improving (A→B, encoded styles).
    Ding, Ma, Wang. "Intrinsic Image Popularity Assessment", ACM MM 2019 (the ranker's scale).
"""

import numpy as np

# The keys `compare_modes` copies into each row, in table order.
ROW_KEYS = ("count", "mean_before", "mean_after", "mean_uplift", "stderr", "median_uplift",
            "share_improved", "share_above_1")


def _as_scores(scores, name):
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores, one per image, got shape "
                         f"{scores.shape}.")
    if scores.size == 0:
        raise ValueError(f"{name} is empty: it needs at least one score.")
    if not np.issubdtype(scores.dtype, np.number):
        raise ValueError(f"{name} must hold numbers, got dtype {scores.dtype}.")
    scores = scores.astype(np.float64)
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(scores)))} non-finite score(s).")
    return scores


def popularity_uplift(scores_before, scores_after, threshold=1.0):
    """Summary of the score change from input images to their translations.

    Args:
        scores_before: [N] ranker scores of the input images.
        scores_after: [N] ranker scores of their translations, in the same order.
        threshold: score above which a translated image counts for `share_above_threshold`
            (1.0 by default, the paper's "above 1").

    Returns:
        A dict of Python floats (and the int `count`):
        `mean_uplift` (mean of after - before), `stderr` (its standard error, sample std with
        ddof=1 over sqrt(N); NaN when N = 1), `median_uplift`, `share_improved` (after > before),
        `share_above_1` (translated scores > 1.0), `share_above_threshold` (translated scores >
        `threshold`), `share_above_threshold_before` (the same for the inputs, the baseline),
        `threshold`, `mean_before`, `mean_after`, `count`.

    Raises:
        ValueError: on arrays that are not 1-D, are empty, differ in length, or hold non-finite
            values, or on a non-finite threshold.
    """
    before = _as_scores(scores_before, "scores_before")
    after = _as_scores(scores_after, "scores_after")
    if before.shape != after.shape:
        raise ValueError(
            f"scores_before has {before.size} scores but scores_after has {after.size}; each "
            "translated image needs the score of its input.")
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite score, got {threshold!r}.")
    uplift = after - before
    count = int(uplift.size)
    stderr = float(uplift.std(ddof=1) / np.sqrt(count)) if count > 1 else float("nan")
    return {
        "mean_uplift": float(uplift.mean()),
        "stderr": stderr,
        "median_uplift": float(np.median(uplift)),
        "share_improved": float(np.mean(after > before)),
        "share_above_1": float(np.mean(after > 1.0)),
        "share_above_threshold": float(np.mean(after > threshold)),
        "share_above_threshold_before": float(np.mean(before > threshold)),
        "threshold": threshold,
        "mean_before": float(before.mean()),
        "mean_after": float(after.mean()),
        "count": count,
    }


def compare_modes(results):
    """The content-vs-style table: one row per translation mode.

    Args:
        results: {mode name: dict returned by `popularity_uplift`}, e.g.
            {"style": ..., "content": ...}; rows keep this order.

    Returns:
        A list of dicts, each `{"mode": name}` plus the keys of `ROW_KEYS`.

    Raises:
        ValueError: when `results` is empty or a result lacks one of `ROW_KEYS`.
    """
    if not results:
        raise ValueError("results is empty: give at least one mode's popularity_uplift result.")
    rows = []
    for mode, result in results.items():
        missing = [key for key in ROW_KEYS if key not in result]
        if missing:
            raise ValueError(
                f"The result for mode {mode!r} lacks {', '.join(missing)}; pass the dicts "
                "returned by popularity_uplift.")
        rows.append({"mode": str(mode), **{key: result[key] for key in ROW_KEYS}})
    return rows
