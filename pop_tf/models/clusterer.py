"""The clusterer of "Diversifying Image Synthesis using Data Classification" (Suzuki et al. 2022).

Two halves that meet only at a feature matrix:

- `ClusterFeatures` (Keras, TensorFlow): uint8 or float images in [0, 255] of any H×W → fitted
  into the `feature_size` square the way ingest fits images (`pop_tf.preprocessing.fit_to_square`) →
  EfficientNet-B0 (include_top=False; it has its own Rescaling and expects [0, 255]) →
  7×7×1280 at 224² → mean over channels → 49-d. Another size gives (size/32)² dims.
- Pure numpy statistics: `fit_clusters` (seeded k-means and per-cluster μ_i, Σ_i, shares),
  `assign` (nearest centre) and `mahalanobis` (the masked distance of the L_m loss), with
  `ClusterStats` saved to a pickle-free `.npz`.

Per-cluster covariance (Suzuki et al. 2022, §3). A cluster with n_i members has a
sample covariance of rank at most n_i − 1, so with n_i ≤ d (d = 49) Σ_i cannot be inverted. The
paper's rule: n is the size of the SMALLEST cluster, and EVERY cluster keeps the same n − 1
features, those of largest variance within that smallest cluster (all d when n − 1 ≥ d); the
others are masked out. So every Mahalanobis distance has the same dimensionality and the L_m of
all clusters are on one scale. (An earlier version applied n_i − 1 per cluster: a 5-member
cluster got a 4-d distance and a 30-member one a 29-d distance, typically √(29/4) ≈ 2.7× larger;
on the demo's features, below, held-out distances ranged 19–41 over clusters of 11–49 kept
features, against 3.6–7.8 with the shared 11.) Ties in the smallest cluster's variances
(identical members) are broken by the training-set variance, then by feature index; of several
smallest clusters the lowest numbered one decides.

Two safeguards stay on top of the paper's rule:
- n ≤ 1. A singleton would make n − 1 = 0 features for every cluster and switch L_m off for the
  whole model, so n is taken over the clusters with at least 2 members; a singleton cluster then
  uses Σ_i = diag(training-set variance) on the shared features (one sample tells nothing about
  the cluster's own spread, so the whole set's spread stands in for it). If every cluster is a
  singleton, all d features are kept with that diagonal.
- The ridge: every Σ_i gets `covariance_epsilon × mean training-set variance` on its diagonal.
  The n − 1 rule makes Σ_i invertible only generically: the smallest cluster estimates n − 1
  dimensions from n points, the hardest case. On correlated 49-d Gaussian features its
  unregularised condition number had a median of 1.7e3 (n = 12) and 2.7e4 (n = 30), up to 1e7
  and 7e8 over 200 draws, and a duplicated image makes it exactly singular. Where Σ_i is well
  estimated the ridge hardly matters: on the demo's features (random-weight EfficientNet-B0,
  320 synthetic garments, k = 10, sizes 60…12 → 11 shared features) it moved held-out
  Mahalanobis distances by 0.16% (median; 2.8% at most) and the worst condition number from
  440 to 413. The ridge scales with the WHOLE training set's variance, so when the clusters are
  far apart compared with their spread it is relatively larger (up to 16% shorter distances on
  the hand-built clusters of tests/test_fidelity_clusters.py).

Covariances and inverses are stored as [K, d, d] with zeros outside the mask, so a masked
Mahalanobis distance is one batched einsum (`(x − μ_i)ᵀ P_i (x − μ_i)`) with no gather; the
masks stay [K, d] (every row equal) so `pop_tf.losses.mahalanobis_loss` takes them as they are.

Clusters are numbered in a canonical order (largest first, ties by centre coordinates), so
cluster 0 is the biggest and the numbering does not depend on k-means' internal label order.
"""

import csv
import dataclasses
import json
import os

import numpy as np

from pop_tf import layout, records
from pop_tf.errors import PopTfError
from pop_tf.models import backbones

# k-means restarts: fixed (not an option) so a seed alone decides the result.
KMEANS_N_INIT = 10
# 2: one shared n−1 feature mask for every cluster (the paper's rule) and `selected_from`;
# format 1 held per-cluster masks, which no longer match how L_m is defined.
STATS_FORMAT_VERSION = 2
BACKBONE_STRIDE = 32  # EfficientNet-B0's total down-sampling


class ClusterError(PopTfError):
    """Features that cannot be clustered as configured (too few images, non-finite values)."""


# ---------------------------------------------------------------------------------- features


def feature_dims(feature_size: int) -> int:
    """Dimensions of the feature at `feature_size` (49 at 224): one per backbone output pixel."""
    return (feature_size // BACKBONE_STRIDE) ** 2


def _keras_model_base():
    import keras
    return keras.Model


class ClusterFeatures(_keras_model_base()):
    """Images in [0, 255] (uint8 or float, any H×W, 3 channels) → float32 [N, (size/32)²] features.

    Args:
        weights: `imagenet`, `none`, a Keras weights file of EfficientNetB0(include_top=False),
            or `hub:<handle or module dir>` — a TF-Hub module that maps float [0, 1] images to a
            feature map [N, h, w, C] (then the feature has h·w dims).
        feature_size: the square side the backbone sees (a multiple of 32; 224 in the paper).

    Raises:
        WeightsError: weights that cannot be loaded, or a hub module that returns no feature map.

    Reference:
        Suzuki, Sakaue, Sato, VISAPP 2022, §3.1: EfficientNet-B0 7×7×1280 → channel mean → 49-d.
    """

    def __init__(self, weights="imagenet", feature_size: int = 224, **kwargs):
        super().__init__(**kwargs)
        import tensorflow as tf

        if feature_size <= 0 or feature_size % BACKBONE_STRIDE:
            raise ClusterError(f"cluster.feature_size must be a positive multiple of {BACKBONE_STRIDE}, "
                               f"got {feature_size}")
        self.feature_size = int(feature_size)
        self.weights_option = "none" if weights is None else str(weights)
        source, detail = backbones.parse_weights(weights)
        self._hub = source == "hub"
        if self._hub:
            self.backbone = backbones.HubFeatures(detail, name="hub_backbone")
        else:
            self.backbone = backbones.application("efficientnetb0", weights,
                                                  (self.feature_size, self.feature_size, 3))
        # Build now, so the variables exist before export and `dims` is known (a hub module's
        # feature map may have another spatial size than EfficientNet-B0's).
        probe = self._feature_map(tf.zeros([1, self.feature_size, self.feature_size, 3]))
        if probe.shape.rank != 4:
            raise backbones.WeightsError(
                f"The TF-Hub module {detail!r} returns shape {probe.shape.as_list()}; the clusterer needs a "
                "feature map [N, h, w, C] (an EfficientNet-B0 module's last feature map, not its pooled "
                "feature vector).")
        self.dims = int(probe.shape[1]) * int(probe.shape[2])

    def _feature_map(self, fitted):
        if self._hub:
            # TF-Hub image modules take float [0, 1]; keras.applications' EfficientNet rescales itself.
            return self.backbone(fitted / 255.0)
        return self.backbone(fitted, training=False)

    def call(self, images, training=False):
        import tensorflow as tf

        from pop_tf.preprocessing import fit_to_square

        # An image already S×S passes through fit_to_square unchanged.
        fitted = fit_to_square(images, self.feature_size)
        maps = self._feature_map(fitted)
        pooled = tf.reduce_mean(tf.cast(maps, tf.float32), axis=-1)  # [N, h, w]: mean over channels
        return tf.reshape(pooled, [-1, self.dims])

    def get_config(self):
        return {"weights": self.weights_option, "feature_size": self.feature_size, "name": self.name}


# ------------------------------------------------------------------------------- statistics


@dataclasses.dataclass
class ClusterStats:
    """k-means centres and per-cluster statistics of the training features (float64).

    Attributes:
        centers: [K, d] k-means centres; `assign` uses them.
        means: [K, d] μ_i, the mean of each cluster's members (the L_d target).
        covariances: [K, d, d] regularised Σ_i restricted to the mask (zero outside).
        inverse_covariances: [K, d, d] Σ_i⁻¹ on the mask, zero outside (the L_m metric).
        masks: [K, d] bool, the features each cluster's Σ_i covers: the same row for every
            cluster (the n−1 rule of the module docstring).
        sizes: [K] training members per cluster.
        shares: [K] sizes / N: the sampling probabilities at test time.
        feature_variance: [d] per-feature variance over the training set (breaks ties in the
            n−1 ranking, and is the fallback covariance of a cluster with n ≤ 1).
        condition_numbers: [K] of each regularised, masked Σ_i.
        covariance_epsilon: the ridge factor (× mean feature variance).
        ridge: the absolute value added to every Σ_i diagonal.
        seed: the k-means seed.
        inertia: sum of squared distances of the training features to their centres.
        selected_from: the cluster whose member variances chose the shared features (the
            smallest with n ≥ 2), or −1 when every feature is kept.
    """

    centers: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    inverse_covariances: np.ndarray
    masks: np.ndarray
    sizes: np.ndarray
    shares: np.ndarray
    feature_variance: np.ndarray
    condition_numbers: np.ndarray
    covariance_epsilon: float
    ridge: float
    seed: int
    inertia: float
    # A default keeps hand-built statistics (tests, tools) that predate the field valid.
    selected_from: int = -1

    @property
    def num_clusters(self) -> int:
        return int(self.centers.shape[0])

    @property
    def dims(self) -> int:
        return int(self.centers.shape[1])

    @property
    def reduced(self) -> np.ndarray:
        """Cluster ids whose Σ_i keeps fewer than d features: all or none (the shared n−1 rule)."""
        return np.flatnonzero(self.masks.sum(axis=1) < self.dims)

    @property
    def fallback(self) -> np.ndarray:
        """Cluster ids with n ≤ 1, whose Σ_i is the training-set variance diagonal on the mask."""
        return np.flatnonzero(self.sizes <= 1)

    def save(self, path: str) -> str:
        """Writes every field to an `.npz` of plain arrays (no pickled objects); returns `path`."""
        arrays = {f.name: np.asarray(getattr(self, f.name)) for f in dataclasses.fields(self)}
        arrays["format_version"] = np.asarray(STATS_FORMAT_VERSION)
        tmp = path + ".tmp.npz"  # np.savez appends .npz to names without it
        np.savez(tmp, **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str) -> "ClusterStats":
        """Reads a file written by `save`; refuses pickled content and other format versions."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError) as e:
            raise ClusterError(f"cannot read cluster statistics from {path}: {e}") from None
        version = int(arrays.pop("format_version", -1))
        if version == 1:
            raise ClusterError(f"{path} holds cluster statistics of format 1, whose n−1 feature rule was "
                               "applied per cluster; this pop_tf reads format "
                               f"{STATS_FORMAT_VERSION} (one feature set for every cluster, as in the paper): "
                               "run `python -m pop_tf.train clusterer` again to rewrite it")
        if version != STATS_FORMAT_VERSION:
            raise ClusterError(f"{path} holds cluster statistics of format {version}; this pop_tf reads "
                               f"format {STATS_FORMAT_VERSION}")
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in arrays:
                raise ClusterError(f"{path} lacks the cluster statistics field '{field.name}'")
            value = arrays[field.name]
            values[field.name] = value.item() if value.ndim == 0 else value
        values["masks"] = values["masks"].astype(bool)
        return cls(**values)

    def summary(self) -> dict:
        """A JSON-able overview: k, sizes, shares, which clusters use the n−1 rule, conditioning."""
        kept = self.masks.sum(axis=1)
        return {
            "k": self.num_clusters,
            "feature_dims": self.dims,
            "sizes": [int(n) for n in self.sizes],
            "shares": [float(s) for s in self.shares],
            "kept_features": [int(n) for n in kept],
            "reduced_clusters": [int(i) for i in self.reduced],
            "selected_features": [int(j) for j in np.flatnonzero(self.masks[0])] if self.num_clusters else [],
            "selected_from": int(self.selected_from),
            "fallback_clusters": [int(i) for i in self.fallback],
            "condition_numbers": [float(c) for c in self.condition_numbers],
            "covariance_epsilon": float(self.covariance_epsilon),
            "ridge": float(self.ridge),
            "seed": int(self.seed),
            "inertia": float(self.inertia),
        }

def _checked_features(features, name="features") -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[1] == 0:
        raise ClusterError(f"{name} must be a matrix [N, d] with d >= 1, got shape {list(features.shape)}")
    if not np.all(np.isfinite(features)):
        bad = int(np.count_nonzero(~np.all(np.isfinite(features), axis=1)))
        raise ClusterError(f"{bad} of {len(features)} feature vectors hold NaN or infinite values")
    return features


def _nearest(features: np.ndarray, centers: np.ndarray) -> np.ndarray:
    # ‖x − c‖² without the [N, K, d] difference tensor; ‖x‖² is the same for every centre.
    distances = (centers ** 2).sum(axis=1)[None, :] - 2.0 * features @ centers.T
    return np.argmin(distances, axis=1).astype(np.int32)


def assign(features, stats: ClusterStats) -> np.ndarray:
    """int32 [N]: the nearest k-means centre (Euclidean) of each feature vector."""
    features = _checked_features(features)
    if features.shape[1] != stats.dims:
        raise ClusterError(f"features have {features.shape[1]} dims but the clusters were fitted on {stats.dims}")
    return _nearest(features, stats.centers)


def mahalanobis(features, stats: ClusterStats, clusters) -> np.ndarray:
    """float64 [N]: squared masked Mahalanobis distance of features[n] to cluster clusters[n]."""
    features = _checked_features(features)
    clusters = np.asarray(clusters, dtype=np.int64)
    diff = (features - stats.means[clusters]) * stats.masks[clusters]
    return np.einsum("nd,nde,ne->n", diff, stats.inverse_covariances[clusters], diff)


def _shared_features(features, labels, sizes, variance):
    """(kept feature indices, the cluster whose variances chose them or −1): the paper's n−1 rule.

    n is the size of the smallest cluster with at least 2 members (a singleton would leave no
    feature for anyone); when n − 1 < d every cluster keeps the n − 1 features of largest
    variance among that cluster's members, else all d. Suzuki et al. 2022, §3.
    """
    d = features.shape[1]
    estimable = np.flatnonzero(sizes >= 2)
    if not len(estimable):
        return np.arange(d), -1
    smallest = int(estimable[np.argmin(sizes[estimable])])  # argmin: the lowest-numbered of ties
    kept = int(sizes[smallest]) - 1
    if kept >= d:
        return np.arange(d), -1
    own = features[labels == smallest].var(axis=0)
    # Largest own variance first; identical members tie at 0, so the training-set variance (then
    # the feature index) decides rather than the order of the features alone.
    ranking = np.lexsort((np.arange(d), -variance, -own))
    return np.sort(ranking[:kept]), smallest


def fit_clusters(features, num_clusters: int, seed: int = 0, covariance_epsilon: float = 1e-3) -> ClusterStats:
    """Seeded k-means on training features and the per-cluster statistics of the module docstring.

    Every cluster's Σ_i covers the same features: the n − 1 of largest variance within the
    smallest cluster (n its size), as in Suzuki et al. 2022, §3, so every Mahalanobis distance
    has n − 1 dimensions (d when n > d); see the module docstring for the n ≤ 1 case and the ridge.

    Args:
        features: [N, d] training features.
        num_clusters: K (`cluster.num_clusters`).
        seed: k-means random_state; the same seed and features give the same result.
        covariance_epsilon: ridge factor, × the mean training-set feature variance.

    Raises:
        ClusterError: K > N, fewer distinct feature vectors than K, or non-finite features.
    """
    from sklearn.cluster import KMeans

    features = _checked_features(features)
    n, d = features.shape
    if num_clusters < 1:
        raise ClusterError(f"cluster.num_clusters must be >= 1, got {num_clusters}")
    if num_clusters > n:
        raise ClusterError(f"cluster.num_clusters={num_clusters} is more than the {n} training images; "
                           "lower cluster.num_clusters or ingest more posts")
    distinct = len(np.unique(features, axis=0))
    if distinct < num_clusters:
        raise ClusterError(f"only {distinct} distinct feature vectors among the {n} training images, fewer "
                           f"than cluster.num_clusters={num_clusters}; lower cluster.num_clusters")
    if covariance_epsilon <= 0:
        raise ClusterError(f"cluster.covariance_epsilon must be > 0, got {covariance_epsilon}")

    kmeans = KMeans(n_clusters=num_clusters, n_init=KMEANS_N_INIT, random_state=seed).fit(features)
    centers = kmeans.cluster_centers_.astype(np.float64)
    # Canonical numbering: largest cluster first, ties broken by the centre's coordinates.
    labels = _nearest(features, centers)
    sizes = np.bincount(labels, minlength=num_clusters)
    order = np.lexsort(tuple(centers[:, j] for j in reversed(range(d))) + (-sizes,))
    centers = centers[order]
    # Labels from the same nearest-centre rule as `assign` (and the SavedModel), so the sizes
    # here match every later assignment of the training set.
    labels = _nearest(features, centers)
    sizes = np.bincount(labels, minlength=num_clusters)

    variance = features.var(axis=0)
    mean_variance = float(variance.mean())
    # Identical features have no scale to borrow; 1.0 keeps the ridge (and the inverse) finite.
    ridge = covariance_epsilon * (mean_variance if mean_variance > 0 else 1.0)
    keep, selected_from = _shared_features(features, labels, sizes, variance)

    means = np.zeros((num_clusters, d))
    covariances = np.zeros((num_clusters, d, d))
    inverses = np.zeros((num_clusters, d, d))
    masks = np.zeros((num_clusters, d), dtype=bool)
    masks[:, keep] = True
    conditions = np.zeros(num_clusters)
    for i in range(num_clusters):
        members = features[labels == i]
        size = len(members)
        means[i] = members.mean(axis=0) if size else centers[i]
        if size <= 1:
            sigma = np.diag(variance[keep])
        else:
            sigma = np.atleast_2d(np.cov(members[:, keep], rowvar=False, ddof=1))
        sigma = sigma + ridge * np.eye(len(keep))
        # Σ is symmetric positive definite after the ridge: eigh gives its inverse and condition
        # number from one decomposition, and keeps the inverse exactly symmetric.
        eigenvalues, eigenvectors = np.linalg.eigh(sigma)
        eigenvalues = np.maximum(eigenvalues, ridge)  # round-off cannot go below the ridge
        inverse = (eigenvectors / eigenvalues) @ eigenvectors.T
        covariances[i][np.ix_(keep, keep)] = sigma
        inverses[i][np.ix_(keep, keep)] = inverse
        conditions[i] = eigenvalues.max() / eigenvalues.min()

    inertia = float(((features - centers[labels]) ** 2).sum())
    return ClusterStats(
        centers=centers, means=means, covariances=covariances, inverse_covariances=inverses, masks=masks,
        sizes=sizes.astype(np.int64), shares=sizes / n, feature_variance=variance,
        condition_numbers=conditions, covariance_epsilon=float(covariance_epsilon), ridge=float(ridge),
        seed=int(seed), inertia=inertia, selected_from=int(selected_from))


# -- reading a cluster stage's output folder (what the translator and evaluation load) --------


def read_assignments(cluster_dir: str) -> dict:
    """{post_id: cluster id} from a cluster output folder's assignments.csv."""
    with open(os.path.join(cluster_dir, layout.ASSIGNMENTS), newline="", encoding="utf-8") as f:
        return {records.from_csv_cell(row["post_id"]): int(row["cluster"]) for row in csv.DictReader(f)}


def load_cluster_outputs(cluster_dir: str) -> tuple:
    """(ClusterStats, {post_id: cluster}, the exact feature extractor) of a cluster output folder.

    Raises:
        ClusterError: when the folder is not a complete cluster output.
    """
    needed = [os.path.join(cluster_dir, name) for name in (layout.CLUSTERS_NPZ, layout.ASSIGNMENTS, layout.CONFIG,
                                                                 layout.EXTRACTOR_WEIGHTS)]
    missing = [path for path in needed if not os.path.isfile(path)]
    if missing:
        raise ClusterError(f"{cluster_dir} is not a complete cluster output (missing {', '.join(missing)}); "
                                "run `python -m pop_tf.train clusterer` first")
    with open(os.path.join(cluster_dir, layout.CONFIG)) as f:
        config = json.load(f)
    if str(config["weights"]).startswith("hub:"):  # the module itself holds the weights
        extractor = ClusterFeatures(weights=config["weights"], feature_size=int(config["feature_size"]))
    else:
        import numpy as np

        size = int(config["feature_size"])
        extractor = ClusterFeatures(weights="none", feature_size=size)
        extractor(np.zeros([1, size, size, 3], np.float32))  # build before loading
        extractor.load_weights(os.path.join(cluster_dir, layout.EXTRACTOR_WEIGHTS))
    return ClusterStats.load(os.path.join(cluster_dir, layout.CLUSTERS_NPZ)), read_assignments(cluster_dir), extractor
