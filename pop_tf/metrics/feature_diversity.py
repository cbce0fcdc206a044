"""Perceptual diversity as a distance in a feature space: how different the samples of one input are.

For N inputs with M samples each, the figure is the mean distance over all M(M−1)/2 pairs of
samples of the *same* input (the protocol of DMIT / MSGAN diversity, never input vs output).
Features are L2-normalised first, so the distance lies in [0, 2] whatever the feature scale
(√(2 − 2 cos θ)). The reference is the same distance between distinct real images
(`real_pairs_distance`): a generator whose samples of one input differ as much as two real
garments do scores about that value, and one that ignores its noise scores 0.

A feature space that does not react to pixel noise is what makes this a *perceptual* figure:
in raw pixels (or random-weight networks) noise itself looks like diversity.
"""

import numpy as np


def _normalised(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=-1, keepdims=True)
    # An all-zero feature vector (a ReLU layer silent on an odd input) stays at the origin.
    return np.divide(features, norms, out=np.zeros_like(features), where=norms > 0)


def diversity(features) -> dict:
    """Mean pairwise distance between the samples of each input.

    Args:
        features: [N, M, d] feature vectors, M ≥ 2 samples per input.

    Returns:
        {"mean", "stderr" (over the N per-input means; None for N = 1), "per_input" [N], "num_inputs",
         "samples_per_input", "num_pairs"}.
    """
    x = np.asarray(features, np.float64)
    if x.ndim != 3 or x.shape[1] < 2:
        raise ValueError(f"features must be [N, M, d] with M >= 2 samples per input, got shape {x.shape}")
    x = _normalised(x)
    n, m = x.shape[:2]
    rows, cols = np.triu_indices(m, k=1)
    distances = np.linalg.norm(x[:, rows] - x[:, cols], axis=-1)  # [N, pairs]
    per_input = distances.mean(axis=1)
    return {"mean": float(per_input.mean()),
            "stderr": float(per_input.std(ddof=1) / np.sqrt(n)) if n > 1 else None,
            "per_input": per_input.tolist(), "num_inputs": int(n), "samples_per_input": int(m),
            "num_pairs": int(n * len(rows))}


def real_pairs_distance(features) -> dict:
    """The reference: mean distance between real images 2k and 2k+1 (distinct images), same space.

    Args:
        features: [N, d] real feature vectors, N ≥ 2.

    Returns:
        {"mean", "stderr" (None for one pair), "num_pairs"}.
    """
    x = _normalised(np.asarray(features, np.float64))
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"features must be [N, d] with N >= 2, got shape {x.shape}")
    pairs = len(x) // 2
    distances = np.linalg.norm(x[0:2 * pairs:2] - x[1:2 * pairs:2], axis=-1)
    return {"mean": float(distances.mean()),
            "stderr": float(distances.std(ddof=1) / np.sqrt(pairs)) if pairs > 1 else None,
            "num_pairs": int(pairs)}
