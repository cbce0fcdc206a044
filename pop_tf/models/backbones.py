"""Pretrained backbones from keras.applications or TF-Hub, with the `weights` option of every model.

Every model that uses a pretrained network takes `weights`:
- `"imagenet"`: Keras downloads the ImageNet weights into its cache on first use. Offline this
  fails; the error names the file to place in the cache and the options to pass instead.
- `"none"` (or None): random initialisation (tests, demos, training from scratch).
- a path: a Keras weights file (`.weights.h5`, or the legacy `.h5` from the Keras cache) whose
  layers match the keras.applications model.
- `"hub:<handle or local module dir>"`: a TF-Hub feature-vector module, loaded with `hub.load`
  inside `HubFeatures` (a Keras 3 layer; `hub.KerasLayer` only works in tf_keras models).
"""

import os

from pop_tf.errors import PopTfError


class WeightsError(PopTfError):
    """Weights that cannot be downloaded, found or loaded; the message says what to do."""


# keras.applications constructors and the cache file of their include_top=False ImageNet weights.
APPLICATIONS = {
    "resnet50": ("ResNet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "efficientnetb0": ("EfficientNetB0", "efficientnetb0_notop.h5"),
    "vgg16": ("VGG16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"),
    "inceptionv3": ("InceptionV3", "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"),
}


def keras_models_dir_for_humans() -> str:
    """Where Keras caches application weights, as a user would type it."""
    # Mirrors Keras's rule: $KERAS_HOME if set, else ~/.keras (/tmp/.keras if home is read-only).
    if "KERAS_HOME" in os.environ:
        return os.path.join(os.environ["KERAS_HOME"], "models") + os.sep
    if not os.access(os.path.expanduser("~"), os.W_OK):
        return "/tmp/.keras/models/"
    return "~/.keras/models/"


def parse_weights(weights) -> tuple:
    """Splits a `weights` option into (source, detail): ("imagenet"|"none"|"path"|"hub", value).

    Raises:
        WeightsError: for a path that does not exist or a value of the wrong kind.
    """
    if weights is None or (isinstance(weights, str) and weights.lower() == "none"):
        return "none", None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        return "imagenet", None
    if isinstance(weights, str) and weights.startswith("hub:"):
        handle = weights[len("hub:"):]
        if not handle:
            raise WeightsError("weights='hub:' needs a TF-Hub handle or module folder after 'hub:'.")
        return "hub", handle
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise WeightsError(
                f"The weights file {path} does not exist; pass the path of an existing "
                ".weights.h5 file, weights=imagenet, weights=none or weights=hub:<module>.")
        return "path", path
    raise WeightsError(f"weights must be 'imagenet', 'none', 'hub:<module>' or a file path, got {weights!r}.")


def application(name: str, weights, input_shape, pooling=None, **kwargs):
    """A keras.applications model (include_top=False) with weights per the `weights` option.

    Args:
        name: a key of `APPLICATIONS` (resnet50, efficientnetb0, vgg16, inceptionv3).
        weights: see the module docstring; `hub:` is not handled here (use `HubFeatures`).
        input_shape: (H, W, 3).
        pooling: None, "avg" or "max", as in keras.applications.
        **kwargs: passed to the constructor.

    Raises:
        WeightsError: offline ImageNet download, missing or mismatching weights file.

    Its batch-norm layers are `pop_tf.layers.normalization.BatchNormalization` (the fused kernel:
    same weights and results, faster, and no float32 upcast under a mixed policy).
    """
    import keras

    from pop_tf.layers import normalization

    if name not in APPLICATIONS:
        raise WeightsError(f"unknown backbone {name!r}; known: {', '.join(sorted(APPLICATIONS))}")
    constructor_name, cache_file = APPLICATIONS[name]
    constructor = getattr(keras.applications, constructor_name)
    source, detail = parse_weights(weights)
    if source == "hub":
        raise WeightsError(f"weights={weights!r}: a TF-Hub module replaces the whole {constructor_name}; "
                           "build it with HubFeatures instead of keras.applications.")
    if source == "imagenet":
        try:
            return normalization.with_fused_batch_norm(
                constructor(include_top=False, weights="imagenet", input_shape=tuple(input_shape),
                            pooling=pooling, **kwargs))
        except Exception as exc:
            # Keras raises a bare Exception ("URL fetch failure on ...") offline, so nothing
            # narrower identifies the failure; the cause stays in the sentence.
            raise WeightsError(
                f"Could not get the Keras ImageNet {constructor_name} weights ({exc}): place {cache_file} "
                f"in {keras_models_dir_for_humans()}, or pass weights=<path to a weights file> or "
                "weights=none.") from exc
    model = constructor(include_top=False, weights=None, input_shape=tuple(input_shape), pooling=pooling,
                        **kwargs)
    if source == "path":
        try:
            model.load_weights(detail)
        except Exception as exc:
            raise WeightsError(
                f"Could not load {constructor_name} weights from {detail} ({exc}); the file must be a "
                f"Keras weights file whose layers match keras.applications.{constructor_name}"
                "(include_top=False).") from exc
    return normalization.with_fused_batch_norm(model)


def _keras_layer_base():
    import keras
    return keras.layers.Layer


class HubFeatures(_keras_layer_base()):
    """A TF-Hub feature-vector module as a Keras 3 layer (`hub.load` inside a plain Layer).

    The module's variables are tracked by this layer; `trainable=True` fine-tunes those the module
    marks trainable. Images go in as the module expects them (TF-Hub image modules take float
    [0, 1] NHWC).

    Args:
        handle: a TF-Hub handle (URL) or a local SavedModel folder.
        trainable: whether the module's trainable variables are trained.
        **kwargs: standard Layer arguments.

    Raises:
        WeightsError: when the module cannot be loaded (offline handle, missing folder).

    Reference:
        docs/architecture.md, Platform notes: `hub.KerasLayer` only works inside tf_keras models.
    """

    def __init__(self, handle, trainable=False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        try:
            import tensorflow_hub as hub
            self._module = hub.load(handle)
        except Exception as exc:
            raise WeightsError(
                f"Could not load the TF-Hub module {handle!r} ({exc}); pass a local module folder "
                "(hub:/path/to/module) or download the module where there is network.") from exc
        self._hub_variables = list(getattr(self._module, "variables", ()))

    # Keras 3 only tracks its own variables; the module's tf.Variables join the layer's lists
    # here so models, optimizers and checkpoints see them.
    @property
    def variables(self):
        return super().variables + self._hub_variables

    @property
    def weights(self):
        return super().weights + self._hub_variables

    def call(self, images, training=False):
        return self._module(images)

    def get_config(self):
        config = super().get_config()
        config.update({"handle": self.handle})
        return config
