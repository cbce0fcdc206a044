"""Improved precision and recall of a generated set (Kynkäänniemi et al. 2019), on feature vectors.

Each set's manifold is the union of balls around its samples, each ball reaching the sample's
k-th nearest neighbour within the same set (k = 3 in the paper). Precision is the share of
generated samples that fall inside the real manifold (are they realistic?), recall the share of
real samples inside the generated manifold (is the real variety covered?). A point on a ball's
boundary counts as inside, as in the authors' code (`distance <= radius`).

Unlike FID, the two figures separate the two failures: a generator of noise has low precision,
one that draws a single perfect garment high precision and low recall.

Distances are Euclidean, computed in float64 blocks so memory stays O(block × N).

References:
    Kynkäänniemi, Karras, Laine, Lehtinen & Aila. "Improved Precision and Recall Metric for
    Assessing Generative Models", NeurIPS 2019 (and their `precision_recall.py`).
"""

import numpy as np

DEFAULT_K = 3
_BLOCK_ROWS = 1024


def _as_features(x, name: str) -> np.ndarray:
    x = np.asarray(x, np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, d] of feature vectors, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must hold only finite values")
    return x


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances [len(a), len(b)]; the clip removes round-off below 0 before the root."""
    squared = np.sum(a ** 2, axis=1)[:, None] + np.sum(b ** 2, axis=1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def knn_radii(features, k: int = DEFAULT_K) -> np.ndarray:
    """Distance of every sample to its k-th nearest neighbour among the *other* samples of the set.

    Args:
        features: [N, d] with N > k.
        k: which neighbour (1 = the nearest other sample).

    Returns:
        float64 [N].
    """
    x = _as_features(features, "features")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if len(x) <= k:
        raise ValueError(f"the k={k}-th nearest neighbour needs more than {k} samples, got {len(x)}")
    radii = np.empty(len(x))
    for start in range(0, len(x), _BLOCK_ROWS):
        block = _distances(x[start:start + _BLOCK_ROWS], x)
        # Index k of the sorted row: index 0 is the sample itself (distance 0).
        rows = np.arange(len(block))
        block[rows, start + rows] = -1.0  # the sample itself sorts first even when duplicates exist
        radii[start:start + len(block)] = np.partition(block, k, axis=1)[:, k]
    return radii


def coverage(manifold, radii, queries) -> np.ndarray:
    """For each query, whether it lies within `radii[j]` of some manifold sample j: bool [M]."""
    manifold, queries = _as_features(manifold, "manifold"), _as_features(queries, "queries")
    if manifold.shape[1] != queries.shape[1]:
        raise ValueError(f"manifold has {manifold.shape[1]} features per row but queries have {queries.shape[1]}")
    radii = np.asarray(radii, np.float64)
    inside = np.zeros(len(queries), bool)
    for start in range(0, len(queries), _BLOCK_ROWS):
        block = _distances(queries[start:start + _BLOCK_ROWS], manifold)
        inside[start:start + len(block)] = np.any(block <= radii[None, :], axis=1)
    return inside


def precision_recall(real, generated, k: int = DEFAULT_K) -> dict:
    """Improved precision and recall of `generated` against `real`.

    Args:
        real: [N, d] real feature vectors, N > k.
        generated: [M, d] generated feature vectors, M > k.
        k: the neighbour that sets each ball's radius (3 as in the paper).

    Returns:
        {"precision", "recall"} (floats in [0, 1]), "k", "num_real", "num_generated".
    """
    real, generated = _as_features(real, "real"), _as_features(generated, "generated")
    precision = coverage(real, knn_radii(real, k), generated).mean()
    recall = coverage(generated, knn_radii(generated, k), real).mean()
    return {"precision": float(precision), "recall": float(recall), "k": int(k), "num_real": int(len(real)),
            "num_generated": int(len(generated))}
