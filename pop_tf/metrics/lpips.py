"""LPIPS (Zhang et al. 2018) on a Keras VGG16 or AlexNet, and the LPIPS-diversity protocol
(docs/metrics.md).

The network is built as in the published `lpips` v0.1 package (`LPIPS(net="vgg")` or
`LPIPS(net="alex")`, the package's default):

1. images in [-1, 1] (RGB), prepared for the backbone (see "Backbone input" below);
2. the backbone tapped after the ReLU of five convolutions:
   - `net="vgg"`: VGG16 (`keras.applications.VGG16(include_top=False)`) at relu1_2, relu2_2,
     relu3_3, relu4_3, relu5_3, the Keras layers `block1_conv2, block2_conv2, block3_conv3,
     block4_conv3, block5_conv3` (Keras fuses the ReLU into the convolution), with 64, 128, 256,
     512 and 512 channels;
   - `net="alex"`: torchvision's AlexNet features (`alexnet_features()`: conv 11×11/4 with
     padding 2, 3×3/2 max pool, conv 5×5, max pool, three 3×3 convs) at relu1 … relu5, the Keras
     layers `conv1` … `conv5`, with 64, 192, 384, 256 and 256 channels;
3. every feature map divided by its L2 norm over channels, `f / (‖f‖ + 1e-10)` at each pixel;
4. the squared difference of the two normalised maps;
5. a learned 1×1 linear layer with non-negative weights (one output channel, no bias);
6. the spatial mean, then the sum over the five layers.

Backbone input. The published linear weights were trained on *torchvision* features, and
torchvision's VGG16 and AlexNet expect RGB normalised with the ImageNet mean and std, which is
exactly what the LPIPS ScalingLayer does to [-1, 1] input: `(x - shift) / scale` with shift
[-.030, -.088, -.188] = 2·mean - 1 and scale [.458, .448, .450] = 2·std. The Keras ImageNet VGG16
weights are a different network: converted from Caffe, they expect BGR pixels in [0, 255] minus
the Caffe mean. Feeding each network what it was trained on is the only sensible choice, so the
preparation follows the weights (`preprocessing="auto"`):

- `weights="imagenet"` (Keras/Caffe VGG16) → `"caffe"`: x ↦ (x + 1)·127.5, RGB → BGR, minus the
  Caffe mean (`keras.applications.vgg16.preprocess_input`).
- `weights=<path>` (assumed to be a conversion of torchvision's network, see `lpips_convert`) and
  `weights="none"` (random, tests only) → `"lpips"`: the ScalingLayer on RGB, as published.
  Pass `preprocessing="caffe"` for a Keras-format file of the Caffe VGG16 weights (e.g. the Keras
  cache file `vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5`).

Keras ships no AlexNet, so `net="alex"` takes `weights="none"` or a file converted from
torchvision's `alexnet-owt-7be5be79.pth` (`python -m pop_tf.metrics.lpips_convert --alex`).

Published LPIPS versus LPIPS-like. The number equals published LPIPS (v0.1) only when the backbone
is a faithful conversion of torchvision's ImageNet VGG16 or AlexNet *and* the linear weights are a
conversion of the published `weights/v0.1/vgg.pth` or `alex.pth` (which the `lpips` wheel
ships), with the ScalingLayer preparation. pop_tf cannot check what a backbone file holds, so
`standard=True` is the user's statement that both files are such conversions; only then is
`metric_name` `"lpips"`. Everything else is `"lpips_like"`: Keras ImageNet weights (different
features, so the published linear weights do not fit them), random weights, or no linear file.
Without a linear file every weight is 1: the distance is the `lpips=False` "baseline" of the
`lpips` package (the plain sum over channels), each layer adds a value in [0, 4] and the total
lies in [0, 20]. (Weights of 1/C would turn each layer into a channel mean and make the deep, wide
layers count 512 times less; the baseline is the variant the LPIPS paper reports, so pop_tf uses
it.) LPIPS-like numbers rank pop_tf models against each other; they are not comparable with
figures in papers.

Inputs. Float images are taken to be in [-1, 1], as in `lpips`; uint8 images are taken to be in
[0, 255] and mapped to [-1, 1]. Float images in [0, 1] cannot be told apart from [-1, 1] ones:
rescale them (2x - 1) first. Images must be at least 16×16 for VGG16 (relu5_3 comes after four
2×2 poolings) and 31×31 for AlexNet (relu5 follows a stride-4 convolution and two 3×3 stride-2
poolings); anything smaller gives an empty map (the published code fails there too). Distances
between images this small are dominated by the first layers; 64×64 and up are the sizes LPIPS
was calibrated on.

References:
    Zhang, Isola, Efros, Shechtman, Wang. "The Unreasonable Effectiveness of Deep Features as a
    Perceptual Metric", CVPR 2018 (LPIPS; code: richzhang/PerceptualSimilarity, pypi `lpips`).
    Simonyan & Zisserman. "Very Deep Convolutional Networks for Large-Scale Image Recognition",
    ICLR 2015 (VGG16).
    Krizhevsky. "One weird trick for parallelizing convolutional neural networks", arXiv
    1404.5997, 2014 (the AlexNet variant torchvision implements).
    Zhu et al. "Toward Multimodal Image-to-Image Translation", NeurIPS 2017 (BicycleGAN: LPIPS
    over all pairs of outputs of one input as a diversity measure).
"""

import os

import numpy as np

from pop_tf.errors import PopTfError

# (Keras layer, name in the LPIPS code, channels), in network order, per backbone.
TAPPED_LAYERS = (
    ("block1_conv2", "relu1_2", 64),
    ("block2_conv2", "relu2_2", 128),
    ("block3_conv3", "relu3_3", 256),
    ("block4_conv3", "relu4_3", 512),
    ("block5_conv3", "relu5_3", 512),
)
ALEX_TAPPED_LAYERS = (
    ("conv1", "relu1", 64),
    ("conv2", "relu2", 192),
    ("conv3", "relu3", 384),
    ("conv4", "relu4", 256),
    ("conv5", "relu5", 256),
)
NET_LAYERS = {"vgg": TAPPED_LAYERS, "alex": ALEX_TAPPED_LAYERS}
NETS = tuple(NET_LAYERS)
NET_CHANNELS = {net: tuple(channels for _, _, channels in layers) for net, layers in NET_LAYERS.items()}
LAYER_CHANNELS = NET_CHANNELS["vgg"]
BACKBONE_NAMES = {"vgg": "vgg16", "alex": "alexnet"}
# The key of each layer's weights in a linear-weights .npz file.
LINEAR_KEYS = tuple(f"lin{k}" for k in range(len(TAPPED_LAYERS)))
# The LPIPS v0.1 ScalingLayer: [-1, 1] RGB → torchvision's ImageNet normalisation.
SCALING_SHIFT = (-0.030, -0.088, -0.188)
SCALING_SCALE = (0.458, 0.448, 0.450)
# Added to the channel norm (not under the square root), as `lpips.normalize_tensor` does.
NORMALIZE_EPS = 1e-10
# The smallest side that leaves the last tapped layer one pixel: VGG16's relu5_3 follows four 2×2
# poolings; AlexNet's relu5 an 11×11 stride-4 convolution (padding 2) and two 3×3 stride-2 pools.
MIN_IMAGE_SIZE = 16
MIN_IMAGE_SIZES = {"vgg": MIN_IMAGE_SIZE, "alex": 31}
PREPROCESSINGS = ("auto", "lpips", "caffe")
# Float pixels may overshoot [-1, 1] by this much (round-off from resizing or colour conversion).
_RANGE_TOLERANCE = 1e-4


class LinearWeightsError(PopTfError, ValueError):
    """A linear-weights file or mapping that is missing, malformed or has negative weights."""


# ---------------------------------------------------------------------------------------------
# Linear weights
# ---------------------------------------------------------------------------------------------


def _check_net(net):
    if net not in NET_LAYERS:
        raise ValueError(f"net must be one of {', '.join(NETS)}, got {net!r}.")


def _other_net(shapes, net):
    """The other backbone whose channel counts `shapes` are, for error messages; None if none."""
    return next((other for other, channels in NET_CHANNELS.items()
                 if other != net and shapes == [(c,) for c in channels]), None)


def check_linear_weights(weights, source="linear weights", net="vgg"):
    """Validates the five per-layer weight vectors of the 1×1 linear layers.

    Args:
        weights: a mapping with keys `lin0` … `lin4` (extra keys are an error), or a sequence of
            five arrays; `lin<k>` has shape [C_k], C = (64, 128, 256, 512, 512) for VGG16 and
            (64, 192, 384, 256, 256) for AlexNet.
        source: what to call the weights in error messages (e.g. a file name).
        net: the backbone, `"vgg"` or `"alex"`.

    Returns:
        A list of five float32 arrays of the backbone's channel counts.

    Raises:
        LinearWeightsError: on missing or extra keys, a wrong shape (naming the other backbone
            when the shapes are its), a non-finite or a negative weight (LPIPS clamps its linear
            weights to ≥ 0 while training, so a negative one means the file is not LPIPS weights).
    """
    _check_net(net)
    if isinstance(weights, dict) or hasattr(weights, "keys"):
        keys = set(weights.keys())
        missing = [k for k in LINEAR_KEYS if k not in keys]
        extra = sorted(keys - set(LINEAR_KEYS))
        if missing or extra:
            raise LinearWeightsError(
                f"{source} must hold exactly the keys {', '.join(LINEAR_KEYS)}; missing: "
                f"{', '.join(missing) or 'none'}, unexpected: {', '.join(extra) or 'none'}.")
        arrays = [weights[k] for k in LINEAR_KEYS]
    else:
        arrays = list(weights)
        if len(arrays) != len(LINEAR_KEYS):
            raise LinearWeightsError(
                f"{source} must hold {len(LINEAR_KEYS)} weight vectors (one per tapped layer), "
                f"got {len(arrays)}.")
    other = _other_net([np.shape(a) for a in arrays], net)
    if other is not None:
        raise LinearWeightsError(
            f"{source} holds the linear layers of LPIPS on {BACKBONE_NAMES[other]} (channels "
            f"{', '.join(map(str, NET_CHANNELS[other]))}), not {BACKBONE_NAMES[net]}; pass "
            f"net={other} or the {net} weights.")
    checked = []
    for key, channels, array in zip(LINEAR_KEYS, NET_CHANNELS[net], arrays):
        array = np.asarray(array)
        if array.shape != (channels,):
            raise LinearWeightsError(
                f"{source}: {key} must have shape [{channels}], got {list(array.shape)}.")
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.isfinite(array)):
            raise LinearWeightsError(f"{source}: {key} must hold finite numbers.")
        if np.any(array < 0):
            raise LinearWeightsError(
                f"{source}: {key} has {int(np.sum(array < 0))} negative weight(s) (smallest "
                f"{float(array.min()):g}); LPIPS linear weights are non-negative.")
        checked.append(array.astype(np.float32))
    return checked


def save_linear_weights(path, weights, net="vgg"):
    """Writes validated linear weights to an .npz file with keys `lin0` … `lin4`.

    Args:
        path: the output file (numpy appends `.npz` when it is missing).
        weights: as for `check_linear_weights`.
        net: the backbone they belong to, `"vgg"` or `"alex"`.

    Raises:
        LinearWeightsError: when the weights do not validate.
    """
    checked = check_linear_weights(weights, net=net)
    np.savez(path, **dict(zip(LINEAR_KEYS, checked)))


def load_linear_weights(path, net="vgg"):
    """Reads and validates an .npz file of linear weights (keys `lin0` … `lin4`, shapes [C]).

    Returns:
        A list of five float32 arrays.

    Raises:
        LinearWeightsError: when the file is missing, unreadable or its weights do not validate
            for `net`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise LinearWeightsError(
            f"The linear-weights file {path} does not exist; create it with `python -m "
            f"pop_tf.metrics.lpips_convert --net {net} --output lpips_{net}.npz` (from the "
            "installed lpips package) or pass linear_weights=None.")
    try:
        with np.load(path, allow_pickle=False) as data:
            contents = {key: data[key] for key in data.files}
    except Exception as exc:
        # np.load raises ValueError, OSError, zipfile.BadZipFile... depending on how the file is
        # broken; all of them mean the same thing to the user.
        raise LinearWeightsError(
            f"Could not read {path} as an .npz file of linear weights ({exc}).") from exc
    return check_linear_weights(contents, source=path, net=net)


# ---------------------------------------------------------------------------------------------
# The distance maths (TensorFlow ops; they also take numpy arrays)
# ---------------------------------------------------------------------------------------------


def normalize_channels(features, eps=NORMALIZE_EPS):
    """Divides every feature vector (last axis) by its L2 norm plus eps, as `lpips` does.

    Args:
        features: tensor or array [N, H, W, C].
        eps: added to the norm, so all-zero vectors (dead ReLUs) stay zero instead of NaN.

    Returns:
        A tensor of the same shape and dtype.
    """
    import tensorflow as tf

    features = tf.convert_to_tensor(features)
    norm = tf.sqrt(tf.reduce_sum(tf.square(features), axis=-1, keepdims=True))
    return features / (norm + tf.cast(eps, features.dtype))


def layer_distance(features_a, features_b, weights, eps=NORMALIZE_EPS):
    """One layer's LPIPS term: weighted squared difference of unit-normalised features, averaged
    over pixels.

    d = mean over (h, w) of Σ_c weights[c] · (â[h, w, c] - b̂[h, w, c])², â = a / (‖a‖ + eps).

    Args:
        features_a: tensor or array [N, H, W, C].
        features_b: same shape.
        weights: [C] non-negative weights of the 1×1 linear layer.
        eps: see `normalize_channels`.

    Returns:
        A tensor [N] in the dtype of the features.
    """
    import tensorflow as tf

    a = normalize_channels(features_a, eps)
    b = normalize_channels(features_b, eps)
    weights = tf.cast(tf.convert_to_tensor(weights), a.dtype)
    weighted = tf.tensordot(tf.square(a - b), weights, axes=[[3], [0]])
    return tf.reduce_mean(weighted, axis=[1, 2])


# ---------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------


def _weights_source(weights):
    from pop_tf.models.backbones import parse_weights

    source, _ = parse_weights(weights)
    return source


_SIZE_REASONS = {
    "vgg": "relu5_3 comes after four 2x2 poolings",
    "alex": "relu5 comes after an 11x11 stride-4 convolution and two 3x3 stride-2 poolings",
}


def alexnet_features(name="alexnet_features"):
    """torchvision's `alexnet().features` up to relu5 as a Keras model: [N, H, W, 3] → relu5.

    Layer for layer: conv1 (64, 11×11, stride 4, padding 2), 3×3/2 max pool, conv2 (192, 5×5,
    padding 2), max pool, conv3 (384), conv4 (256) and conv5 (256), all 3×3 with padding 1, each
    convolution followed by a ReLU (fused into the Keras layer, as in keras.applications' VGG16).
    conv1 pads explicitly: TF's "same" padding of a stride-4 convolution is not torch's 2 on every
    side. torch's max pools pad nothing and floor, as Keras's "valid" ones. The last max pool
    (features[12]) is left out: LPIPS taps relu5 before it. Randomly initialised; fill it with a
    file written by `pop_tf.metrics.lpips_convert --alex`.
    """
    import keras

    layers = keras.layers
    inputs = keras.Input((None, None, 3), name="images")
    x = layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv4")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    return keras.Model(inputs, x, name=name)


def _as_signed_unit_images(images, name, net="vgg"):
    """Validates a batch of images and returns it as float32 in [-1, 1]."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"{name} must have shape [N, H, W, 3] (or [N, H, W, 1]), got {images.shape}.")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty: it needs at least one image.")
    smallest = MIN_IMAGE_SIZES[net]
    if min(images.shape[1], images.shape[2]) < smallest:
        raise ValueError(
            f"{name} are {images.shape[1]}x{images.shape[2]} pixels, but LPIPS on "
            f"{'VGG16' if net == 'vgg' else 'AlexNet'} needs at least {smallest}x{smallest} "
            f"({_SIZE_REASONS[net]}).")
    if images.dtype == np.uint8:
        images = images.astype(np.float32) / 127.5 - 1.0
    elif np.issubdtype(images.dtype, np.floating):
        images = images.astype(np.float32)
        low, high = float(images.min()), float(images.max())
        in_range = low >= -1.0 - _RANGE_TOLERANCE and high <= 1.0 + _RANGE_TOLERANCE
        if not (np.isfinite(low) and np.isfinite(high) and in_range):
            raise ValueError(
                f"{name} are float with values in [{low:g}, {high:g}], but float images must be "
                "in [-1, 1]; pass uint8 for [0, 255] pixels or rescale first.")
    else:
        raise ValueError(
            f"{name} must be uint8 in [0, 255] or float in [-1, 1], got dtype {images.dtype}.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return images


class LPIPS:
    """LPIPS distance between pairs of images, on a Keras VGG16 or AlexNet (see the module docstring).

    Args:
        weights: the backbone: `"imagenet"` (VGG16 only: Keras ImageNet weights, Caffe
            conversion; downloaded on first use), `"none"` (random, for tests), or the path of a
            Keras weights file: for `keras.applications.VGG16(include_top=False)`, such as a
            torchvision conversion written by `pop_tf.metrics.lpips_convert --vgg`, or for
            `alexnet_features()`, written by `lpips_convert --alex`.
        linear_weights: None (every weight 1, the `lpips` "baseline") or the path of an .npz
            file with keys `lin0` … `lin4` of the backbone's channel counts, all ≥ 0, e.g. written
            by `pop_tf.metrics.lpips_convert --net vgg|alex --output FILE`.
        preprocessing: how [-1, 1] RGB images are prepared for the backbone: `"lpips"` (the
            ScalingLayer, RGB; for torchvision weights), `"caffe"` (BGR, [0, 255] minus the Caffe
            mean; for Keras ImageNet VGG16 weights) or `"auto"` (`"caffe"` for weights="imagenet",
            `"lpips"` otherwise).
        standard: True states that `weights` is a faithful conversion of torchvision's ImageNet
            backbone and `linear_weights` one of the published LPIPS v0.1 linear layers of the
            same net; it requires both paths and the `"lpips"` preparation, and makes
            `metric_name` `"lpips"`.
        net: the backbone, `"vgg"` (VGG16) or `"alex"` (AlexNet, the `lpips` package's default).

    Raises:
        pop_tf.models.backbones.WeightsError: when the backbone weights cannot be downloaded,
            found or loaded.
        LinearWeightsError: when the linear-weights file is missing or invalid for `net`.
        ValueError: on an unknown `net` or `preprocessing`, ImageNet or Caffe weights for
            AlexNet, or `standard=True` without its conditions.

    References:
        Zhang et al., CVPR 2018 (see the module docstring).
    """

    def __init__(self, weights="imagenet", linear_weights=None, preprocessing="auto",
                 standard=False, net="vgg"):
        _check_net(net)
        if preprocessing not in PREPROCESSINGS:
            raise ValueError(
                f"preprocessing must be one of {', '.join(PREPROCESSINGS)}, got "
                f"{preprocessing!r}.")
        source = _weights_source(weights)
        if source == "hub":
            raise ValueError(
                f"LPIPS needs the {BACKBONE_NAMES[net]} layers {', '.join(n for _, n, _ in NET_LAYERS[net])}, "
                "which a TF-Hub feature-vector module does not expose; pass weights=imagenet, none "
                "or a weights file.")
        if net == "alex" and source == "imagenet":
            raise ValueError(
                "Keras ships no ImageNet AlexNet: convert torchvision's alexnet-owt-7be5be79.pth "
                "with `python -m pop_tf.metrics.lpips_convert --alex alexnet-owt-7be5be79.pth "
                "--alex-output alexnet_torchvision.weights.h5` and pass weights=<that file>, or "
                "weights=none (random, tests only), or net=vgg.")
        if net == "alex" and preprocessing == "caffe":
            raise ValueError("preprocessing='caffe' is for Keras's Caffe VGG16 weights; AlexNet takes "
                             "the LPIPS ScalingLayer ('lpips' or 'auto').")
        if preprocessing == "auto":
            preprocessing = "caffe" if source == "imagenet" else "lpips"
        if standard and not (source == "path" and linear_weights is not None
                             and preprocessing == "lpips"):
            raise ValueError(
                "standard=True states that the numbers are published LPIPS, which needs "
                f"weights=<converted torchvision {BACKBONE_NAMES[net]} file>, linear_weights="
                f"<converted v0.1 {net}.pth> and the 'lpips' preprocessing.")
        if linear_weights is None:
            self._linear = [np.ones(c, dtype=np.float32) for c in NET_CHANNELS[net]]
            self.linear_weights_path = None
        else:
            self._linear = load_linear_weights(linear_weights, net=net)
            self.linear_weights_path = os.fspath(linear_weights)
        self.net = net
        self.weights = os.fspath(weights) if source == "path" else source
        self.preprocessing = preprocessing
        self.standard = bool(standard)
        self._features = self._build_features(weights, net)
        self._forward = self._make_forward()

    @staticmethod
    def _build_features(weights, net):
        import keras

        from pop_tf.models.backbones import WeightsError, application

        if net == "alex":
            backbone = alexnet_features()
            if _weights_source(weights) == "path":
                try:
                    backbone.load_weights(os.fspath(weights))
                except Exception as exc:
                    raise WeightsError(
                        f"Could not load AlexNet weights from {os.fspath(weights)} ({exc}); the file "
                        "must be a Keras weights file of pop_tf.metrics.lpips.alexnet_features(), "
                        "written by `python -m pop_tf.metrics.lpips_convert --alex`.") from exc
        else:
            backbone = application("vgg16", weights, (None, None, 3))
        backbone.trainable = False
        outputs = [backbone.get_layer(name).output for name, _, _ in NET_LAYERS[net]]
        # Stopping at relu5 leaves the last pooling out (block5_pool would need a 32x32 input).
        return keras.Model(backbone.input, outputs, name=f"lpips_{BACKBONE_NAMES[net]}_features")

    def _prepare(self, images):
        import keras
        import tensorflow as tf

        if self.preprocessing == "caffe":
            return keras.applications.vgg16.preprocess_input((images + 1.0) * 127.5)
        shift = tf.constant(SCALING_SHIFT, tf.float32)
        scale = tf.constant(SCALING_SCALE, tf.float32)
        return (images - shift) / scale

    def _make_forward(self):
        import tensorflow as tf

        features_model = self._features
        linear = [tf.constant(w) for w in self._linear]
        spec = tf.TensorSpec([None, None, None, 3], tf.float32)

        # One traced graph for every batch and image size. Both images of a pair go through the
        # backbone in one batch, which halves the number of (expensive) backbone calls.
        @tf.function(input_signature=[spec, spec])
        def forward(images_a, images_b):
            count = tf.shape(images_a)[0]
            both = self._prepare(tf.concat([images_a, images_b], axis=0))
            total = tf.zeros([count], tf.float32)
            for features, weights in zip(features_model(both, training=False), linear):
                # Normalised and compared in float32 whatever the backbone computes in (a mixed policy).
                features = tf.cast(features, tf.float32)
                total += layer_distance(features[:count], features[count:], weights)
            return total

        return forward

    @property
    def metric_name(self):
        """`"lpips"` for converted published weights (`standard=True`), else `"lpips_like"`."""
        return "lpips" if self.standard else "lpips_like"

    @property
    def name(self):
        """Alias of `metric_name`."""
        return self.metric_name

    @property
    def layers(self):
        """The tapped layers as (Keras layer, LPIPS name, channels), in network order."""
        return NET_LAYERS[self.net]

    @property
    def linear_weights(self):
        """Copies of the five per-layer linear weight vectors, float32 [C]."""
        return [w.copy() for w in self._linear]

    @property
    def feature_model(self):
        """The Keras model mapping prepared images to the five tapped feature maps."""
        return self._features

    @property
    def settings(self):
        """What produced the numbers, for metrics.json."""
        return {
            "metric": self.metric_name,
            "net": self.net,
            "backbone": BACKBONE_NAMES[self.net],
            "weights": self.weights,
            "linear_weights": self.linear_weights_path or "uniform (1, lpips baseline)",
            "preprocessing": self.preprocessing,
            "standard": self.standard,
            "layers": [lpips_name for _, lpips_name, _ in NET_LAYERS[self.net]],
        }

    def __call__(self, images_a, images_b, batch_size=8):
        """LPIPS distance between images_a[i] and images_b[i] for every i.

        Args:
            images_a: [N, H, W, 3] (or [N, H, W, 1]), float in [-1, 1] or uint8 in [0, 255];
                H, W ≥ 16 (VGG16) or 31 (AlexNet).
            images_b: the same shape; its own dtype rule applies.
            batch_size: pairs per forward pass (each pass runs 2·batch_size images through
                the backbone; keep it small for large images on a CPU).

        Returns:
            float32 numpy array [N] of distances (≥ 0; 0 for identical images).

        Raises:
            ValueError: on bad shapes, mismatched pairs, images below the backbone's smallest
                size, values out of range or a bad batch size.
        """
        a = _as_signed_unit_images(images_a, "images_a", self.net)
        b = _as_signed_unit_images(images_b, "images_b", self.net)
        if a.shape != b.shape:
            raise ValueError(
                f"images_a and images_b must have the same shape (one pair per row), got "
                f"{np.shape(images_a)} and {np.shape(images_b)}.")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
        distances = np.empty(a.shape[0], dtype=np.float32)
        for start in range(0, a.shape[0], batch_size):
            stop = start + batch_size
            distances[start:stop] = self._forward(a[start:stop], b[start:stop]).numpy()
        return distances


# ---------------------------------------------------------------------------------------------
# Diversity (docs/metrics.md, LPIPS and LPIPS diversity)
# ---------------------------------------------------------------------------------------------


def diversity(distance, outputs, batch_size=8):
    """LPIPS diversity: mean distance over all pairs of outputs of the same input.

    For each of N inputs, all M(M-1)/2 pairs of its M outputs (random styles) are scored, as in
    BicycleGAN's protocol and the `lpips_1dir_allpairs.py --all-pairs` script; the result is the
    mean over the N·M(M-1)/2 pair distances ± their standard error, computed as that script does:
    np.std (ddof=0) / sqrt(number of pairs), so the figures read like published ones. Pairs that
    share an output or an input are not independent, so the standard error is optimistic; it
    says how stable the mean is for these inputs, not across datasets.

    Args:
        distance: an `LPIPS`, or any callable `(images_a [K, ...], images_b [K, ...]) -> [K]`.
        outputs: array [N, M, H, W, C] (N ≥ 1 inputs, M ≥ 2 outputs each), in the value range
            `distance` expects.
        batch_size: pairs per call of `distance`.

    Returns:
        {"mean": float, "stderr": float, "num_pairs": int, "num_inputs": N,
        "outputs_per_input": M, "metric": distance.metric_name or None}.

    Raises:
        ValueError: on a wrong shape, fewer than 2 outputs per input, a bad batch size, or
            distances that are not finite or do not match the number of pairs.

    References:
        Zhu et al., NeurIPS 2017 (BicycleGAN); Zhang et al., CVPR 2018 (LPIPS).
    """
    outputs = np.asarray(outputs)
    if outputs.ndim != 5:
        raise ValueError(
            f"outputs must have shape [N_inputs, M_outputs, H, W, C], got {outputs.shape}.")
    num_inputs, per_input = outputs.shape[:2]
    if num_inputs < 1 or per_input < 2:
        raise ValueError(
            f"outputs need at least 1 input with at least 2 outputs each to form a pair, got "
            f"{num_inputs} input(s) with {per_input} output(s).")
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    first, second = np.triu_indices(per_input, k=1)
    input_index = np.repeat(np.arange(num_inputs), first.size)
    first = np.tile(first, num_inputs)
    second = np.tile(second, num_inputs)
    chunks = []
    for start in range(0, input_index.size, batch_size):
        rows = slice(start, start + batch_size)
        a = outputs[input_index[rows], first[rows]]
        b = outputs[input_index[rows], second[rows]]
        values = np.asarray(distance(a, b), dtype=np.float64).reshape(-1)
        if values.shape[0] != a.shape[0]:
            raise ValueError(
                f"distance returned {values.shape[0]} values for {a.shape[0]} pairs; it must "
                "return one distance per pair.")
        chunks.append(values)
    values = np.concatenate(chunks)
    if not np.all(np.isfinite(values)):
        raise ValueError("distance returned non-finite values; check the outputs for NaNs.")
    return {
        "mean": float(values.mean()),
        "stderr": float(values.std() / np.sqrt(values.size)),
        "num_pairs": int(values.size),
        "num_inputs": int(num_inputs),
        "outputs_per_input": int(per_input),
        "metric": getattr(distance, "metric_name", None),
    }
