"""NDB and JSD: Number of statistically Different Bins (Richardson & Weiss 2018), docs/metrics.md.

Training samples are split into K bins by k-means; generated samples are assigned to the nearest
bin centre. A bin whose share of generated samples differs significantly from its share of
training samples (two-proportion pooled z-test at level alpha) counts towards NDB; a model that
drops or over-produces modes raises NDB. JSD is the Jensen-Shannon divergence (nats) between the
two bin histograms.

Faithful to the authors' `ndb.py` (eitanrich/gans-n-gmms, `utils/ndb.py`) — optional per-dimension
whitening with the training mean and std (+1e-6), k-means with at most 100 iterations, bins
ordered by training proportion (largest first), nearest-centre assignment by L2, the same z-test
and JSD — with these deliberate differences:

- **Seeded.** The original k-means and its random subset of dimensions were unseeded, so two runs
  gave different bins. Here both come from `seed`, and the same inputs and seed give the same
  result.
- **No `n_jobs`.** The original passed `n_jobs=-1` to `KMeans`, which modern scikit-learn
  rejects (TypeError); parallelism now comes from scikit-learn's own threads.
- **Training proportions** are measured with the same nearest-centre rule as generated samples
  (the original used the k-means labels, which agree once k-means has converged).
- **A bin empty in both sets** (possible when a k-means centre ends up with no nearest training
  sample) gets z = 0 and p-value 1 instead of a NaN from 0/0.
- No on-disk cache of the bins: keep an `NDB` object to reuse them.

Like the original, for data with more than 1000 dimensions (raw pixels) k-means and the
assignment use a random subset of d // 6 dimensions, for speed; `max_dims` overrides the size.

References:
    Richardson & Weiss. "On GANs and GMMs", NeurIPS 2018 (defines NDB and this JSD).
    Lin. "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1), 1991
    (Jensen-Shannon divergence).
"""

import numpy as np
import scipy.stats
from sklearn.cluster import KMeans

# Added to the per-dimension training std before whitening, as in the original, so constant
# dimensions (e.g. a border that is always white) do not divide by zero.
WHITEN_EPS = 1e-6
# Above this many dimensions, bins are fitted on a random subset of them (the original rule).
SUBSET_ABOVE_DIMS = 1000
# Rows per block when computing sample-to-centre distances, to bound memory on large sets.
_ASSIGN_BLOCK_ROWS = 4096


def _as_matrix(samples, name):
    """Flattens [N, ...] samples to a float [N, D] matrix, checking it is usable."""
    x = np.asarray(samples)
    if x.ndim < 2:
        raise ValueError(
            f"{name} must be an array [N, ...] with one sample per row, got shape {x.shape}.")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one sample.")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] == 0:
        raise ValueError(f"{name} has samples with 0 values; each sample needs at least one.")
    # float32 is enough for pixel values and halves the memory of large raw-pixel sets; float64
    # inputs keep their precision.
    x = x.astype(np.float64 if x.dtype == np.float64 else np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must hold only finite values.")
    return x


def two_proportion_z_test(p1, n1, p2, n2):
    """Two-tailed pooled two-proportion z-test, element-wise over bins.

    p = (p1·n1 + p2·n2) / (n1 + n2), se = sqrt(p (1 − p) (1/n1 + 1/n2)), z = (p1 − p2) / se,
    p-value = 2 Φ(−|z|). Where se = 0 (both proportions 0, or both 1) there is no evidence of a
    difference: z = 0, p-value = 1.

    Args:
        p1: proportions in the first sample (array-like, one per bin), e.g. training.
        n1: size of the first sample.
        p2: proportions in the second sample, same shape as p1, e.g. generated.
        n2: size of the second sample.

    Returns:
        (z, p_values): float64 arrays shaped like p1. Positive z means the bin is more frequent
        in the first sample (under-represented in the second).

    References:
        Richardson & Weiss 2018, §4 (NDB); any statistics text on the pooled two-proportion test.
    """
    p1 = np.asarray(p1, dtype=np.float64)
    p2 = np.asarray(p2, dtype=np.float64)
    if p1.shape != p2.shape:
        raise ValueError(f"p1 and p2 must have the same shape, got {p1.shape} and {p2.shape}.")
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"sample sizes must be positive, got n1={n1} and n2={n2}.")
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2))
    z = np.divide(p1 - p2, se, out=np.zeros_like(se), where=se > 0)
    p_values = 2.0 * scipy.stats.norm.cdf(-np.abs(z))
    return z, p_values


def jensen_shannon_divergence(p, q):
    """Jensen-Shannon divergence between two histograms, in nats.

    JSD = ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q) / 2, natural log, with 0·log 0 = 0. The
    histograms are normalised to sum to 1 first. The result lies in [0, ln 2].

    Args:
        p: non-negative counts or proportions, 1-D.
        q: non-negative counts or proportions, same shape as p.

    Returns:
        The divergence as a Python float.

    References:
        Lin 1991; Richardson & Weiss 2018.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.ndim != 1 or p.shape != q.shape:
        raise ValueError(
            f"p and q must be 1-D histograms of the same length, got shapes {p.shape} and "
            f"{q.shape}.")
    if np.any(p < 0) or np.any(q < 0) or p.sum() <= 0 or q.sum() <= 0:
        raise ValueError("p and q must be non-negative with a positive sum.")
    p = p / p.sum()
    q = q / q.sum()
    m = 0.5 * (p + q)

    def kl_to_m(a):
        # Terms with a = 0 contribute 0 (0·log 0 = 0); where a > 0, m > 0 too.
        nonzero = a > 0
        return float(np.sum(a[nonzero] * np.log(a[nonzero] / m[nonzero])))

    # max(): the exact value is ≥ 0; round-off can leave -1e-17.
    return max(0.5 * kl_to_m(p) + 0.5 * kl_to_m(q), 0.0)


class NDB:
    """K-means bins fitted once on training samples, to score any number of generated sets.

    Args:
        train_samples: array [N, ...] (raw pixels or features), flattened to [N, D];
            N ≥ num_bins.
        num_bins: number of k-means bins K (the paper uses 50-300).
        whiten: standardise every dimension with the training mean and std (+1e-6) first (the
            paper does so for CelebA pixels, not for MNIST).
        seed: seeds k-means and the choice of the dimension subset.
        max_dims: fit and assign on a random subset of this many dimensions. None: all
            dimensions up to 1000, and d // 6 of them above 1000 (the original rule).
        n_init: k-means restarts (the best inertia is kept); 10 as in the scikit-learn default
            the original relied on.
        max_iter: k-means iterations per restart (100 as in the original).

    Attributes:
        train_proportions: share of training samples in each bin, largest first.
        train_size: N.
        dims: indices of the dimensions the bins live on.

    References:
        Richardson & Weiss, "On GANs and GMMs", NeurIPS 2018.
    """

    def __init__(self, train_samples, num_bins=100, whiten=False, seed=0, max_dims=None,
                 n_init=10, max_iter=100):
        x = _as_matrix(train_samples, "train_samples")
        if not isinstance(num_bins, (int, np.integer)) or num_bins < 2:
            raise ValueError(f"num_bins must be an integer ≥ 2, got {num_bins!r}.")
        if x.shape[0] < num_bins:
            raise ValueError(
                f"train_samples has {x.shape[0]} samples, fewer than num_bins={num_bins}; "
                "k-means needs at least one training sample per bin (and many more for a "
                "meaningful test).")
        if max_dims is not None and (not isinstance(max_dims, (int, np.integer)) or max_dims < 1):
            raise ValueError(f"max_dims must be None or a positive integer, got {max_dims!r}.")
        self.num_bins = int(num_bins)
        self.whiten = bool(whiten)
        self.seed = int(seed)
        self.num_features = x.shape[1]

        if self.whiten:
            self._mean = x.mean(axis=0)
            self._std = x.std(axis=0) + WHITEN_EPS
            x = (x - self._mean) / self._std

        d = self.num_features
        if max_dims is None and d > SUBSET_ABOVE_DIMS:
            max_dims = d // 6
        rng = np.random.default_rng(self.seed)
        if max_dims is not None and max_dims < d:
            self.dims = np.sort(rng.choice(d, size=int(max_dims), replace=False))
        else:
            self.dims = np.arange(d)
        self.max_dims = None if max_dims is None else int(max_dims)

        x = x[:, self.dims]
        kmeans = KMeans(n_clusters=self.num_bins, n_init=n_init, max_iter=max_iter,
                        random_state=self.seed)
        kmeans.fit(x)
        centres = kmeans.cluster_centers_

        # Largest training bin first, as in the original, so bin indices read like a ranking.
        counts = np.bincount(self._nearest(x, centres), minlength=self.num_bins)
        order = np.argsort(-counts, kind="stable")
        self._centres = centres[order]
        self.train_size = x.shape[0]
        self.train_proportions = counts[order] / self.train_size

    @staticmethod
    def _nearest(x, centres):
        """Index of the nearest centre (L2) for every row of x, computed in blocks of rows."""
        centre_sq = np.sum(centres.astype(np.float64) ** 2, axis=1)
        labels = np.empty(x.shape[0], dtype=np.int64)
        for start in range(0, x.shape[0], _ASSIGN_BLOCK_ROWS):
            block = x[start:start + _ASSIGN_BLOCK_ROWS].astype(np.float64)
            # ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖², and ‖x‖² is the same for every centre, so the
            # nearest centre minimises ‖c‖² − 2 x·c.
            distances = centre_sq[np.newaxis, :] - 2.0 * block @ centres.T.astype(np.float64)
            labels[start:start + len(block)] = np.argmin(distances, axis=1)
        return labels

    def assign(self, samples):
        """Bin index of every sample, in the same (whitened, subset) space as the bins.

        Args:
            samples: array [M, ...] with the same number of values per sample as training.

        Returns:
            int64 array [M] of bin indices in [0, num_bins).
        """
        return self._assign(samples, "samples")

    def _assign(self, samples, name):
        x = _as_matrix(samples, name)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name} have {x.shape[1]} values each but the training samples had "
                f"{self.num_features}; both must be the same kind of data (same image size or "
                "feature extractor).")
        if self.whiten:
            x = (x - self._mean) / self._std
        return self._nearest(x[:, self.dims], self._centres)

    def evaluate(self, generated_samples, alpha=0.05):
        """NDB and JSD of a generated set against the training bins.

        Args:
            generated_samples: array [M, ...], same values per sample as training, M ≥ 1.
            alpha: significance level of the two-tailed per-bin test (0.05 in the paper).

        Returns:
            dict with `ndb` (int: bins whose proportions differ significantly), `ndb_ratio`
            (ndb / num_bins), `jsd` (nats), `num_bins`, `alpha`, `whiten`, `seed`, `max_dims`,
            `num_dims_used`, `num_train`, `num_generated`, `train_proportions`,
            `generated_proportions`, `significant_bins` (bin indices), `z_scores` (positive: the
            bin is under-represented in the generated set) and `p_values` (lists of floats).
        """
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha!r}.")
        labels = self._assign(generated_samples, "generated_samples")
        num_generated = labels.shape[0]
        generated_proportions = np.bincount(labels, minlength=self.num_bins) / num_generated
        z, p_values = two_proportion_z_test(
            self.train_proportions, self.train_size, generated_proportions, num_generated)
        significant = np.flatnonzero(p_values < alpha)
        return {
            "ndb": int(significant.size),
            "ndb_ratio": float(significant.size / self.num_bins),
            "jsd": jensen_shannon_divergence(self.train_proportions, generated_proportions),
            "num_bins": self.num_bins,
            "alpha": float(alpha),
            "whiten": self.whiten,
            "seed": self.seed,
            "max_dims": self.max_dims,
            "num_dims_used": int(self.dims.size),
            "num_train": int(self.train_size),
            "num_generated": int(num_generated),
            "train_proportions": self.train_proportions.tolist(),
            "generated_proportions": generated_proportions.tolist(),
            "significant_bins": significant.tolist(),
            "z_scores": z.tolist(),
            "p_values": p_values.tolist(),
        }


def ndb_jsd(train_samples, generated_samples, num_bins=100, alpha=0.05, whiten=False, seed=0,
            max_dims=None):
    """NDB and JSD of generated samples against k-means bins of training samples, in one call.

    Fits an `NDB` on `train_samples` and evaluates `generated_samples`; to score several
    generated sets against the same bins, build one `NDB` and call `evaluate` on each.

    Args:
        train_samples: array [N, ...] (raw pixels or features), N ≥ num_bins.
        generated_samples: array [M, ...] with the same values per sample.
        num_bins: number of k-means bins K.
        alpha: significance level of the per-bin two-tailed z-test.
        whiten: standardise dimensions with the training mean/std first.
        seed: fixes k-means and the dimension subset; same inputs + seed → same result.
        max_dims: size of the random dimension subset (default: all up to 1000 dims, else d // 6).

    Returns:
        The dict of `NDB.evaluate`: `ndb`, `ndb_ratio`, `jsd`, `num_bins`, `alpha`, `whiten`,
        `seed`, `train_proportions`, `generated_proportions`, `significant_bins`, `z_scores`, ...

    References:
        Richardson & Weiss, "On GANs and GMMs", NeurIPS 2018.
    """
    bins = NDB(train_samples, num_bins=num_bins, whiten=whiten, seed=seed, max_dims=max_dims)
    return bins.evaluate(generated_samples, alpha=alpha)
