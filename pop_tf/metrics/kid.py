"""Kernel Inception Distance (Bińkowski et al. 2018), on any feature vectors.

KID is the squared maximum mean discrepancy between two feature sets under the cubic polynomial
kernel k(x, y) = (xᵀy / d + 1)³, estimated without bias, averaged over random subsets. Unlike
FID it has an unbiased estimator, so small sets (the hundreds of images of a CPU evaluation) do
not inflate it, and two samples of the same distribution give values around 0 (slightly negative
ones included). Like FID, it is "KID" proper only on the standard Inception features; pop_tf
names it after the features it used (`kid_synth` on the attribute classifier's).

References:
    Bińkowski, Sutherland, Arbel & Gretton. "Demystifying MMD GANs", ICLR 2018 (and the
    subset scheme of their code, also used by torch-fidelity).
"""

import numpy as np

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


# Up to this many rows per set, the three kernel matrices are computed once and every subset
# indexes into them (one matrix product instead of three per subset); beyond it, per subset.
_WHOLE_KERNEL_ROWS = 4096


def _kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd_from_kernels(kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray) -> float:
    m, n = len(kxx), len(kyy)
    # The diagonals pair a sample with itself, which the unbiased estimator leaves out.
    xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² of two sets [m, d] and [n, d] (m, n ≥ 2) under (xᵀy/d + 1)³."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    return _mmd_from_kernels(_kernel(x, x), _kernel(y, y), _kernel(x, y))


def kid(real, generated, num_subsets: int = DEFAULT_SUBSETS, subset_size: int = DEFAULT_SUBSET_SIZE,
        seed: int = 0) -> dict:
    """KID of two feature sets: mean and standard deviation over random subsets.

    Args:
        real: [N, d] feature vectors, N ≥ 2.
        generated: [M, d], M ≥ 2, same d.
        num_subsets: subsets drawn (without replacement within a subset).
        subset_size: rows per subset from each set, capped at min(N, M).
        seed: the subset draws.

    Returns:
        {"mean", "std", "num_subsets", "subset_size"}.
    """
    real, generated = np.asarray(real, np.float64), np.asarray(generated, np.float64)
    if real.ndim != 2 or generated.ndim != 2 or real.shape[1] != generated.shape[1]:
        raise ValueError(f"real and generated must be [N, d] with the same d, got {real.shape} and {generated.shape}")
    if len(real) < 2 or len(generated) < 2:
        raise ValueError(f"KID needs at least 2 samples per set, got {len(real)} and {len(generated)}")
    if not (np.all(np.isfinite(real)) and np.all(np.isfinite(generated))):
        raise ValueError("real and generated must hold only finite values")
    size = min(subset_size, len(real), len(generated))
    if size == len(real) == len(generated):
        num_subsets = 1  # every subset would be both whole sets
    rng = np.random.default_rng(seed)
    draws = [(rng.choice(len(real), size, replace=False), rng.choice(len(generated), size, replace=False))
             for _ in range(num_subsets)]
    if max(len(real), len(generated)) <= _WHOLE_KERNEL_ROWS:
        kxx, kyy, kxy = _kernel(real, real), _kernel(generated, generated), _kernel(real, generated)
        values = [_mmd_from_kernels(kxx[np.ix_(i, i)], kyy[np.ix_(j, j)], kxy[np.ix_(i, j)]) for i, j in draws]
    else:
        values = [polynomial_mmd(real[i], generated[j]) for i, j in draws]
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "num_subsets": int(num_subsets),
            "subset_size": int(size)}
