"""Fréchet Inception Distance: the maths, and the Inception feature extractor.

The maths (`frechet_distance`, `activation_statistics`, `fid_from_activations`) needs only numpy
and scipy and works on any feature vectors. The extractor (`InceptionFeatures`) loads TensorFlow
lazily, on construction, so importing this module stays cheap.

Comparability: published FID numbers use the 2015-12-05 TensorFlow Inception graph, which is
not `keras.applications.InceptionV3`: another training run, and a slightly different network
(`pop_tf.metrics.fid_inception`). The extractor runs either network. Every result carries a
metric name, `"fid"` only for the FID graph with weights converted from pytorch-fid's published
file (`pop_tf.metrics.fid_convert`), else `"fid_like"`: distances that rank models against each
other within pop_tf, never comparable with a paper.

Protocol (docs/metrics.md, FID and FID-like): 2048-d average-pool features at 299×299,
statistics and distance in float64, generated images compared with real *test* images of the
target domain (not with the images they were translated from).

References:
    Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter. "GANs Trained by a Two Time-Scale Update
    Rule Converge to a Local Nash Equilibrium", NeurIPS 2017 (defines FID).
    Dowson & Landau. "The Fréchet distance between multivariate normal distributions", Journal of
    Multivariate Analysis 12(3), 1982 (the closed form used here).
    Szegedy, Vanhoucke, Ioffe, Shlens, Wojna. "Rethinking the Inception Architecture for Computer
    Vision", CVPR 2016 (InceptionV3).
    Seitzer, pytorch-fid (mseitzer/pytorch-fid): the FID graph in PyTorch and its weights.
"""

import os
import warnings

import numpy as np
import scipy.linalg

from pop_tf.errors import PopTfError

INCEPTION_INPUT_SIZE = 299
FEATURE_DIM = 2048
# The file keras.applications.InceptionV3(include_top=False, weights="imagenet") looks for in its
# cache before downloading it.
KERAS_NOTOP_WEIGHTS_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
# Ridge added to both covariances when the square root of their product fails; the value used by
# the reference FID implementations, small against any real feature variance.
SQRTM_EPS = 1e-6
# Largest imaginary part tolerated on the diagonal of the square root (only the trace is used).
# Round-off on a product of two PSD matrices leaves parts far below this; anything above it means
# the statistics are broken, not that the matrices are merely ill-conditioned.
IMAGINARY_TOLERANCE = 1e-3
# The extractor's networks: keras.applications.InceptionV3, the 2015-12-05 FID graph, or chosen
# by the weights file.
NETWORKS = ("auto", "keras", "fid")


class InceptionWeightsError(PopTfError):
    """InceptionV3 weights that cannot be downloaded, found or loaded; the message says what to do.
    """


# ---------------------------------------------------------------------------------------------
# The maths
# ---------------------------------------------------------------------------------------------


def _checked_statistics(mu, sigma, which):
    """Returns `mu`, `sigma` as float64 after checking they describe one d-dimensional Gaussian."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim != 1 or mu.shape[0] == 0:
        raise ValueError(
            f"mu{which} must be a non-empty 1-D mean vector of length d, got shape {mu.shape}.")
    d = mu.shape[0]
    if sigma.shape != (d, d):
        raise ValueError(
            f"sigma{which} must be a {d}x{d} covariance matrix to match mu{which} of length {d}, "
            f"got shape {sigma.shape}.")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{which} and sigma{which} must hold only finite values.")
    return mu, sigma


def _has_small_imaginary_diagonal(matrix):
    if not np.iscomplexobj(matrix):
        return True
    return float(np.max(np.abs(np.diagonal(matrix).imag))) <= IMAGINARY_TOLERANCE


def _sqrt_of_covariance_product(sigma1, sigma2, eps):
    """The principal square root of `sigma1 @ sigma2`, real, made robust to singular covariances.

    `sigma1 @ sigma2` is similar to a PSD matrix, so its square root is real in exact arithmetic.
    With fewer samples than dimensions the covariances are singular and the Schur-based `sqrtm`
    can return non-finite values or sizeable imaginary parts. The standard remedy (used by the
    reference TTUR and pytorch-fid implementations) is to retry once with `eps * I` added to both
    covariances, which makes them positive definite while moving the distance by O(eps * d).
    """
    with warnings.catch_warnings():
        # scipy warns on every singular product; the checks below decide what to do about it.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
        if not (np.all(np.isfinite(covmean)) and _has_small_imaginary_diagonal(covmean)):
            offset = eps * np.eye(sigma1.shape[0])
            covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if not np.all(np.isfinite(covmean)):
        raise ValueError(
            "The matrix square root of sigma1 @ sigma2 is not finite even after adding "
            f"{eps:g}*I to both covariances; check the activations for non-finite or huge values.")
    if np.iscomplexobj(covmean):
        largest = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if largest > IMAGINARY_TOLERANCE:
            raise ValueError(
                f"The matrix square root of sigma1 @ sigma2 has an imaginary component of "
                f"{largest:.3g} (tolerance {IMAGINARY_TOLERANCE:g}), so the covariances are not "
                "valid (symmetric positive semi-definite) covariance matrices.")
        # Only round-off remains in the imaginary part: drop it.
        covmean = covmean.real
    return covmean


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=SQRTM_EPS):
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2).

    d² = ‖mu1 − mu2‖² + Tr(sigma1 + sigma2 − 2 (sigma1 sigma2)^½), computed in float64.

    Args:
        mu1: mean of the first Gaussian, array-like of shape [d].
        sigma1: covariance of the first Gaussian, array-like of shape [d, d].
        mu2: mean of the second Gaussian, shape [d].
        sigma2: covariance of the second Gaussian, shape [d, d].
        eps: ridge added to both covariances when the matrix square root fails (see
            `_sqrt_of_covariance_product`); only used on that retry.

    Returns:
        The squared Fréchet distance as a Python float (≥ 0; tiny negative round-off is clipped
        to 0, since the exact value cannot be negative).

    Raises:
        ValueError: on inconsistent shapes, non-finite values, or covariances whose product has
            no real square root even after the eps retry.

    References:
        Dowson & Landau 1982; Heusel et al. 2017 (see the module docstring).
    """
    mu1, sigma1 = _checked_statistics(mu1, sigma1, "1")
    mu2, sigma2 = _checked_statistics(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(
            f"mu1 has length {mu1.shape[0]} but mu2 has length {mu2.shape[0]}; both statistics "
            "must come from the same feature space.")
    diff = mu1 - mu2
    covmean = _sqrt_of_covariance_product(sigma1, sigma2, eps)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def activation_statistics(activations):
    """Mean and (unbiased, ddof=1) covariance of a set of feature vectors, in float64.

    Args:
        activations: array-like of shape [N, d] with N ≥ 2 (one feature vector per row).

    Returns:
        (mu, sigma): arrays of shapes [d] and [d, d], float64.

    Raises:
        ValueError: if the input is not 2-D, has fewer than 2 rows, or holds non-finite values.
    """
    act = np.asarray(activations, dtype=np.float64)
    if act.ndim != 2:
        raise ValueError(
            f"activations must be a 2-D array [N, d] (one feature vector per row), got shape "
            f"{act.shape}.")
    if act.shape[0] < 2:
        raise ValueError(
            f"activations need at least 2 rows to estimate a covariance, got {act.shape[0]}.")
    if act.shape[1] == 0:
        raise ValueError("activations have 0 features per row; d must be at least 1.")
    if not np.all(np.isfinite(act)):
        raise ValueError("activations must hold only finite values.")
    mu = act.mean(axis=0)
    # atleast_2d: np.cov returns a 0-d array when d == 1.
    sigma = np.atleast_2d(np.cov(act, rowvar=False))
    return mu, sigma


def fid_from_activations(act1, act2):
    """Fréchet distance between Gaussian fits of two sets of feature vectors.

    Args:
        act1: array-like [N1, d], N1 ≥ 2 (e.g. features of real test images).
        act2: array-like [N2, d], N2 ≥ 2 (e.g. features of generated images).

    Returns:
        The distance as a Python float. It is FID proper only when the features are the standard
        Inception pool features (see `InceptionFeatures.metric_name`).

    Raises:
        ValueError: on bad shapes, too few rows, mismatched feature sizes or non-finite values.
    """
    act1 = np.asarray(act1)
    act2 = np.asarray(act2)
    if act1.ndim == 2 and act2.ndim == 2 and act1.shape[1] != act2.shape[1]:
        raise ValueError(
            f"act1 has {act1.shape[1]} features per row but act2 has {act2.shape[1]}; both must "
            "come from the same feature extractor.")
    mu1, sigma1 = activation_statistics(act1)
    mu2, sigma2 = activation_statistics(act2)
    if min(len(act1), len(act2)) >= mu1.shape[0]:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    return _frechet_distance_low_rank(np.asarray(act1, np.float64), np.asarray(act2, np.float64), mu1, mu2)


def _frechet_distance_low_rank(act1, act2, mu1, mu2):
    """The Fréchet distance from activations when a set has fewer rows N than features d.

    With Σᵢ = AᵢᵀAᵢ/(Nᵢ−1) (Aᵢ the centred activations), the non-zero eigenvalues of Σ₁Σ₂ are
    those of MMᵀ/((N₁−1)(N₂−1)) with M = A₁A₂ᵀ [N₁, N₂], so Tr((Σ₁Σ₂)^½) is the sum of M's
    singular values / √((N₁−1)(N₂−1)): exact, and an N×N SVD instead of a d×d `sqrtm` that is
    singular anyway (2048×2048 takes seconds, and evaluations usually have hundreds of images).
    """
    centred1, centred2 = act1 - mu1, act2 - mu2
    scale = np.sqrt((len(act1) - 1) * (len(act2) - 1))
    trace_sqrt = np.linalg.svd(centred1 @ centred2.T, compute_uv=False).sum() / scale
    trace1 = np.sum(centred1 ** 2) / (len(act1) - 1)
    trace2 = np.sum(centred2 ** 2) / (len(act2) - 1)
    diff = mu1 - mu2
    return float(max(diff @ diff + trace1 + trace2 - 2.0 * trace_sqrt, 0.0))


# ---------------------------------------------------------------------------------------------
# The feature extractor
# ---------------------------------------------------------------------------------------------


def prepare_images(images):
    """[N, H, W, 3] float pixels in [0, 255] → the network's [N, 299, 299, 3] input in [-1, 1].

    Bilinear with half-pixel centres and no antialiasing, pytorch-fid's
    `F.interpolate(x, (299, 299), mode="bilinear", align_corners=False)`, then its 2 · (x / 255) − 1
    (which is also `keras.applications.inception_v3.preprocess_input`).
    """
    import tensorflow as tf

    size = (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE)
    images = tf.image.resize(images, size, method="bilinear", antialias=False)
    return images / 127.5 - 1.0


class InceptionFeatures:
    """Inception 2048-d average-pool features of images, the input of FID.

    Images of any size are resized to 299×299 (bilinear, half-pixel centres, no antialiasing:
    pytorch-fid's `F.interpolate(..., align_corners=False)`) and scaled from [0, 255] to [-1, 1].

    Networks (`network`):
        - `"keras"`: `keras.applications.InceptionV3(include_top=False, pooling="avg")`.
        - `"fid"`: the 2015-12-05 FID graph (`pop_tf.metrics.fid_inception`), which max-pools in
          its last block and has batch-norm scales; the network of published FID.
        - `"auto"` (default): `"fid"` for a file written by `pop_tf.metrics.fid_convert`,
          `"keras"` otherwise.

    Weights (`weights`):
        - `"imagenet"`: the Keras ImageNet weights (keras network only), downloaded by Keras into
          its cache on first use. Offline, place
          `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5` in `~/.keras/models/` (or
          `$KERAS_HOME/models/`).
        - `"none"` (or None): random initialisation, for tests and smoke runs only.
        - a path: a Keras weights file for the network: for `"keras"` a `.weights.h5` or legacy
          `.h5` (such as the cache file above) of `InceptionV3(include_top=False)`, for `"fid"`
          the output of `python -m pop_tf.metrics.fid_convert`.

    Published FID: the figure is named `"fid"` (`metric_name`, `standard`) only for the FID graph
    with a file that `fid_convert` wrote from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
    (it records the source's SHA-256); every other combination is `"fid_like"`. That is then
    pytorch-fid's FID, which its author reports to differ slightly from the TTUR TensorFlow code's
    (image interpolation and library backends; 0.08 absolute on LSUN with ProGAN images).

    Args:
        weights: `"imagenet"`, `"none"`/None, or the path of a weights file (see above).
        standard: True demands published FID: construction fails unless the figure is `"fid"`,
            so that a run meant for a paper cannot silently report an FID-like number.
        network: `"auto"`, `"keras"` or `"fid"` (see above).

    Raises:
        InceptionWeightsError: when the ImageNet weights cannot be downloaded, the path does not
            exist or cannot be loaded into the network, the network and weights do not go
            together, or `standard=True` and the weights are not the converted published file.

    References:
        Szegedy et al. 2016 (InceptionV3); Heusel et al. 2017 (FID); pytorch-fid.
    """

    def __init__(self, weights="imagenet", standard=False, network="auto"):
        from pop_tf.metrics import fid_inception

        if network not in NETWORKS:
            raise InceptionWeightsError(
                f"network must be one of {', '.join(NETWORKS)}, got {network!r}.")
        if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
            source = "none"
        elif isinstance(weights, str) and weights.lower() == "imagenet":
            source = "imagenet"
        elif isinstance(weights, (str, os.PathLike)):
            source = "path"
            weights = os.fspath(weights)
        else:
            raise InceptionWeightsError(
                f"weights must be 'imagenet', 'none' or the path of a weights file, got "
                f"{weights!r}.")
        if source == "path" and not os.path.isfile(weights):
            raise InceptionWeightsError(
                f"The InceptionV3 weights file {weights} does not exist; pass the path of an "
                "existing .weights.h5 file, weights=imagenet or weights=none.")
        provenance = fid_inception.read_provenance(weights) if source == "path" else {}
        converted = provenance.get("network") == fid_inception.NETWORK_NAME
        if network == "auto":
            network = "fid" if converted else "keras"
        if network == "fid" and source == "imagenet":
            raise InceptionWeightsError(
                "The FID Inception graph has no Keras ImageNet weights: convert pytorch-fid's "
                f"{fid_inception.PUBLISHED_FILE} with `python -m pop_tf.metrics.fid_convert "
                "--output fid_inception.weights.h5` and pass weights=<that file>, or use "
                "network=keras.")
        if network == "keras" and converted:
            raise InceptionWeightsError(
                f"{weights} holds the FID Inception graph (written by pop_tf.metrics.fid_convert), "
                "not keras.applications.InceptionV3: use network=fid or network=auto.")
        published = network == "fid" and fid_inception.is_published(provenance)
        if standard and not published:
            raise InceptionWeightsError(
                "standard=True demands published FID, which needs the FID Inception graph with "
                f"weights converted from pytorch-fid's {fid_inception.PUBLISHED_FILE}: run `python "
                "-m pop_tf.metrics.fid_convert --input <that file> --output "
                f"fid_inception.weights.h5` and pass weights=<that file> (got weights={weights!r}, "
                f"network={network}); or drop standard=True for an FID-like figure.")
        self.weights = weights if source == "path" else source
        self.network = network
        self.standard = published
        self._model = self._build_model(source, weights, network)
        self._forward = self._make_forward()

    @staticmethod
    def _build_model(source, path, network):
        import keras

        from pop_tf.metrics import fid_inception
        from pop_tf.models.backbones import keras_models_dir_for_humans

        shape = (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE, 3)
        if network == "fid":
            model = fid_inception.fid_inception()
            expected = "a weights file written by `python -m pop_tf.metrics.fid_convert`"
        elif source == "imagenet":
            try:
                return keras.applications.InceptionV3(
                    include_top=False, weights="imagenet", pooling="avg", input_shape=shape)
            except Exception as exc:
                # Keras raises a bare Exception ("URL fetch failure on ...") when offline, so
                # nothing narrower identifies the failure; the cause is kept in the sentence.
                raise InceptionWeightsError(
                    f"Could not get the Keras ImageNet InceptionV3 weights ({exc}): place "
                    f"{KERAS_NOTOP_WEIGHTS_FILE} in {keras_models_dir_for_humans()}, or pass "
                    "weights=<path to a .weights.h5 file> or weights=none.") from exc
        else:
            model = keras.applications.InceptionV3(
                include_top=False, weights=None, pooling="avg", input_shape=shape)
            expected = ("a Keras weights file whose layers match "
                        "keras.applications.InceptionV3(include_top=False)")
        if source == "path":
            try:
                model.load_weights(path)
            except Exception as exc:
                raise InceptionWeightsError(
                    f"Could not load {network} InceptionV3 weights from {path} ({exc}); the file "
                    f"must be {expected}.") from exc
        return model

    def _make_forward(self):
        import tensorflow as tf

        model = self._model

        # One traced graph for every batch size and image size: resizing, scaling and the network
        # run together without per-op eager overhead.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def forward(images):
            # float32 whatever the model computes in (a mixed policy): the statistics need it.
            return tf.cast(model(prepare_images(images), training=False), tf.float32)

        return forward

    @property
    def metric_name(self):
        """`"fid"` for the FID graph with the converted published weights, else `"fid_like"`."""
        return "fid" if self.standard else "fid_like"

    @property
    def name(self):
        """Alias of `metric_name`."""
        return self.metric_name

    def __call__(self, images, batch_size=32):
        """Pool features of a set of images.

        Args:
            images: array-like [N, H, W, 3] (or [N, H, W, 1] / [N, H, W] grayscale, repeated to
                three channels), uint8 or float with values in [0, 255], any H and W.
            batch_size: images per forward pass.

        Returns:
            np.ndarray of shape [N, 2048], float32.

        Raises:
            ValueError: on a bad shape, an empty set, a bad batch size, or values outside
                [0, 255] (e.g. images still scaled to [-1, 1]).
        """
        images = np.asarray(images)
        if images.ndim == 3:
            images = images[..., np.newaxis]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must have shape [N, H, W, 3] (or [N, H, W, 1] / [N, H, W]), got "
                f"{images.shape}.")
        if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
            raise ValueError(f"images must not be empty, got shape {images.shape}.")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        features = np.empty((images.shape[0], FEATURE_DIM), dtype=np.float32)
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].astype(np.float32)
            low, high = float(batch.min()), float(batch.max())
            if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0 or high > 255.0:
                raise ValueError(
                    f"images must hold pixel values in [0, 255], found values in [{low:g}, "
                    f"{high:g}]; rescale [-1, 1] or [0, 1] images to [0, 255] first.")
            if batch.shape[-1] == 1:
                batch = np.repeat(batch, 3, axis=-1)
            features[start:start + len(batch)] = self._forward(batch).numpy()
        return features


def fid(real_images, generated_images, extractor, batch_size=32):
    """FID (or FID-like distance) between real and generated images.

    Args:
        real_images: [N, H, W, 3] images in [0, 255]; in pop_tf's protocol, real *test* images of the
            target domain. N ≥ 2 (thousands for a stable estimate).
        generated_images: [M, H, W, 3] images in [0, 255], M ≥ 2.
        extractor: an `InceptionFeatures` (or any callable `(images, batch_size) -> [N, d]` with a
            `metric_name` attribute).
        batch_size: images per forward pass.

    Returns:
        {"value": float, "metric": "fid" | "fid_like", "num_real": N, "num_generated": M}.
    """
    real = extractor(real_images, batch_size=batch_size)
    generated = extractor(generated_images, batch_size=batch_size)
    return {
        "value": fid_from_activations(real, generated),
        "metric": extractor.metric_name,
        "num_real": int(real.shape[0]),
        "num_generated": int(generated.shape[0]),
    }
