"""The popularity ranker of Ding et al. (2019) and its siamese trainer.

`f(x)` maps an image to an unbounded popularity score: a backbone (keras.applications ResNet50,
include_top=False, average pool, as in the paper; or a compact residual network of the same
shape for CPU demos) and one Dense(1) head.

Every caller feeds the ranker RGB float [0, 1] (uint8 / 255: training, scoring, the SavedModel);
the ranker itself turns that into what its weights expect, by its `input_preprocessing` (part of
its config, so saved and exported models keep it):
- `"unit"`: [0, 1] as is, *without* ImageNet mean/std normalisation. Ding's released model
  (`pop_tf.models.convert`), the small backbone, TF-Hub modules and random initialisation.
- `"caffe"`: `keras.applications.resnet50.preprocess_input` of the 0..255 image (RGB → BGR,
  ImageNet channel means subtracted, no scaling), what Keras's ImageNet ResNet50 was trained on;
  chosen for `weights=imagenet` and Keras weights files of the keras.applications ResNet50.
`build_ranker` picks it from the weights (`default_input_preprocessing`); pass it to override.

Training (`SiameseRankerTrainer`) sees popularity-discriminable pairs: Q = f(A) − f(B),
P = sigmoid(Q), binary cross-entropy against the target (1 when A is the more popular post; the
input pipeline swaps half the pairs, target 0). Backbone and head have their own Adam optimizers
(paper: 1e-5 and 1e-4), each bound to its own variable list.

Mixed precision (`build_ranker(..., mixed_precision="bfloat16" | "float16")`, `pop_tf.precision`): the
backbone computes in the mixed dtype with float32 variables, the score head stays float32 (scores
and the loss keep their full range); under float16 each optimizer is a `LossScaleOptimizer`
whose own scale the train step applies to the loss for its variables.

Reference:
    Ding, Ma, Tang, Wen, Lin. "Intrinsic Image Popularity Assessment", ACM MM 2019
    (arXiv 1907.01985).
"""

import keras
import tensorflow as tf

from pop_tf import precision
from pop_tf.layers import normalization
from pop_tf.models import backbones

# The ranker's input preprocessing (see the module docstring): images arrive in [0, 1] and are fed
# to the backbone as is ("unit") or as Keras's caffe-style ImageNet input ("caffe").
INPUT_PREPROCESSING = ("unit", "caffe")
# The backbone name of Ding et al.'s torchvision ResNet50 (`pop_tf.models.convert`).
TORCHVISION_RESNET50 = "torchvision_resnet50"


def default_input_preprocessing(backbone: str, weights) -> str:
    """The preprocessing the `weights` option's backbone expects: `"caffe"` for the keras.applications
    ResNet50 with `weights=imagenet` or a Keras weights file (`.h5`, `.weights.h5`: the layout of
    Keras's ImageNet weights), `"unit"` for everything else (`none`, the small backbone, `hub:`,
    and a saved ranker `.keras` file, which records its own: see `build_ranker`)."""
    source, detail = backbones.parse_weights(weights)
    if backbone == "resnet50" and (source == "imagenet" or (source == "path" and not _is_ranker_file(detail))):
        return "caffe"
    return "unit"


def _is_ranker_file(path) -> bool:
    return str(path).endswith(".keras")


def check_input_preprocessing(value: str) -> str:
    """`value` if it is one of `INPUT_PREPROCESSING`, else a ValueError naming the choices."""
    if value not in INPUT_PREPROCESSING:
        raise ValueError(f"input_preprocessing must be one of {', '.join(INPUT_PREPROCESSING)}, got {value!r}")
    return value


def small_resnet(image_size: int, width: int = 32, name: str = "small_resnet") -> keras.Model:
    """A compact ResNet (stem + 4 stages of one basic block each, average pool) for CPU demos.

    Same shape as ResNet50's use in the ranker (convolutional features → global average pool →
    a vector), about 1/100 of its FLOPs at width 32; widths double per stage.

    Args:
        image_size: input side S (images [N, S, S, 3] in [0, 1]).
        width: channels of the first stage.
        name: model name.
    """
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = normalization.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage in range(4):
        filters, strides = width * 2 ** stage, 1 if stage == 0 else 2
        prefix = f"stage{stage + 1}"
        shortcut = x
        if strides != 1 or x.shape[-1] != filters:
            shortcut = keras.layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"{prefix}_proj")(x)
            shortcut = normalization.BatchNormalization(name=f"{prefix}_proj_bn")(shortcut)
        y = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{prefix}_conv1")(x)
        y = normalization.BatchNormalization(name=f"{prefix}_bn1")(y)
        y = keras.layers.ReLU(name=f"{prefix}_relu1")(y)
        y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{prefix}_conv2")(y)
        y = normalization.BatchNormalization(name=f"{prefix}_bn2", gamma_initializer="zeros")(y)
        x = keras.layers.ReLU(name=f"{prefix}_out")(keras.layers.Add(name=f"{prefix}_add")([shortcut, y]))
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)


def build_backbone(backbone: str, weights: str, image_size: int, small_width: int = 32) -> keras.Model:
    """The ranker's feature network: images [N, S, S, 3] as the ranker's input preprocessing feeds
    them (see `PopularityRanker`) → features [N, C].

    Args:
        backbone: "resnet50" (keras.applications, include_top=False, average pool) or "small".
        weights: "imagenet", "none", a weights file, "hub:<module>" (a feature-vector module
            that takes [0, 1] images, replacing the backbone), or a saved ranker `.keras` file
            (e.g. Ding's converted model): its backbone's architecture and weights, at `image_size`.
        image_size: input side S.
        small_width: first-stage channels of the small backbone.

    Raises:
        backbones.WeightsError: weights that cannot be had; ValueError: an unknown backbone.
    """
    source, detail = backbones.parse_weights(weights)
    if source == "path" and _is_ranker_file(detail):
        return _backbone_like(load_ranker_file(detail), backbone, image_size)
    if source == "hub":
        inputs = keras.Input((image_size, image_size, 3), name="images")
        outputs = backbones.HubFeatures(detail, trainable=True, name="hub_features")(inputs)
        return keras.Model(inputs, outputs, name="hub_backbone")
    if backbone == "resnet50":
        return backbones.application("resnet50", weights, (image_size, image_size, 3), pooling="avg")
    if backbone == "small":
        model = small_resnet(image_size, small_width)
        if source == "imagenet":
            raise backbones.WeightsError("the small backbone has no ImageNet weights; use weights=none or a "
                                         "weights file saved from a trained small backbone")
        if source == "path":
            try:
                model.load_weights(detail)
            except Exception as exc:
                raise backbones.WeightsError(f"Could not load small-backbone weights from {detail} ({exc})") from exc
        return model
    raise ValueError(f"unknown backbone {backbone!r}; use 'resnet50' or 'small'")


def load_ranker_file(path) -> "PopularityRanker":
    """The `PopularityRanker` saved in the `.keras` file `path` (`model.save`, or the converter's output).

    Raises:
        backbones.WeightsError: a file that cannot be loaded or holds another kind of model.
    """
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as exc:
        raise backbones.WeightsError(f"Could not load the ranker {path} ({exc}); a .keras weights option must "
                                     "be a PopularityRanker saved with model.save or pop_tf.models.convert") from exc
    if not isinstance(model, PopularityRanker):
        raise backbones.WeightsError(f"{path} holds a {type(model).__name__}, not a pop_tf PopularityRanker")
    return model


def _backbone_like(saved: "PopularityRanker", backbone: str, image_size: int) -> keras.Model:
    """A new backbone of `saved`'s architecture at `image_size` (built under the current dtype
    policy) holding `saved`'s backbone weights and batch-norm epsilons."""
    name = saved.backbone.name
    kinds = {TORCHVISION_RESNET50: "resnet50", "resnet50": "resnet50", "small_resnet": "small"}
    if name not in kinds:
        raise backbones.WeightsError(f"the saved ranker's backbone {name!r} cannot be rebuilt; use a ranker with "
                                     "a resnet50, small or converted (pop_tf.models.convert) backbone")
    if kinds[name] != backbone:
        raise backbones.WeightsError(f"the saved ranker has a {kinds[name]} backbone but backbone={backbone!r}; "
                                     f"set backbone={kinds[name]}")
    if name == TORCHVISION_RESNET50:
        from pop_tf.models import convert
        model = convert.torchvision_resnet50(image_size)
    elif name == "resnet50":
        model = backbones.application("resnet50", "none", (image_size, image_size, 3), pooling="avg")
    else:
        model = small_resnet(image_size, int(saved.backbone.get_layer("stem_conv").filters))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.epsilon = saved.backbone.get_layer(layer.name).epsilon
    model.set_weights(saved.backbone.get_weights())
    return model


@keras.saving.register_keras_serializable(package="pop_tf")
class PopularityRanker(keras.Model):
    """f(x): images float [N, S, S, 3] in [0, 1] → popularity scores float32 [N].

    Args:
        backbone: a Keras model from images to feature vectors (see `build_backbone`).
        dropout: the rate of a Dropout on the features before the head (0: none; not the
            paper's). Active in training only; it holds no variables, so checkpoints with and
            without it are interchangeable.
        input_preprocessing: `"unit"` (the [0, 1] images go to the backbone as they are) or
            `"caffe"` (Keras's ImageNet ResNet50 input: see the module docstring). It holds no
            variables; it is part of the config, so `.keras` files and SavedModels keep it.
        **kwargs: standard Model arguments.

    Reference:
        Ding et al. 2019, §3.1 (ResNet-50 with a 2048→1 fully connected layer).
    """

    def __init__(self, backbone: keras.Model, dropout: float = 0.0, input_preprocessing: str = "unit", **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone
        self.input_preprocessing = check_input_preprocessing(input_preprocessing)
        self.dropout_rate = float(dropout)
        self.dropout = keras.layers.Dropout(self.dropout_rate, name="head_dropout") if self.dropout_rate else None
        # float32 whatever the global policy: under a mixed policy the scores (and the loss built
        # on their differences) keep float32 range and precision.
        self.head = keras.layers.Dense(1, name="head", dtype="float32")

    @property
    def input_dtype(self):
        # Images enter as float32 under any policy: the preprocessing runs in float32 and the
        # backbone casts its (preprocessed) input to its compute dtype itself.
        return "float32"

    def preprocess(self, images):
        """The backbone's input for images float [N, S, S, 3] in [0, 1] (float32)."""
        images = tf.cast(images, tf.float32)
        if self.input_preprocessing == "caffe":
            return keras.applications.resnet50.preprocess_input(images * 255.0)
        return images

    def call(self, images, training=False):
        features = self.backbone(self.preprocess(images), training=training)
        if self.dropout is not None:
            features = self.dropout(features, training=training)
        return tf.squeeze(self.head(features), axis=-1)

    @property
    def image_size(self) -> int:
        return int(self.backbone.input_shape[1])

    def get_config(self):
        config = super().get_config()
        config["backbone"] = keras.saving.serialize_keras_object(self.backbone)
        config["dropout"] = self.dropout_rate
        config["input_preprocessing"] = self.input_preprocessing
        return config

    @classmethod
    def from_config(cls, config):
        config["backbone"] = keras.saving.deserialize_keras_object(config["backbone"])
        return cls(**config)


def build_ranker(backbone: str, weights: str, image_size: int, small_width: int = 32,
                 mixed_precision: str = "none", name: str = "ranker", dropout: float = 0.0,
                 input_preprocessing: str = "auto") -> PopularityRanker:
    """A built `PopularityRanker` (see `build_backbone` for the arguments; `dropout` before the head).

    The backbone is built under the `mixed_precision` policy (`pop_tf.precision.policy`); the
    head is float32 either way. `input_preprocessing` is `"unit"`, `"caffe"` or `"auto"`: the
    choice of `default_input_preprocessing` for the weights. `weights` may be a saved ranker
    `.keras` file (e.g. Ding's model converted by `pop_tf.models.convert`): the new ranker takes
    its backbone architecture, all its weights (head included) and, with `"auto"`, its
    preprocessing, at this `image_size` and precision, to fine-tune or score.
    """
    source, detail = backbones.parse_weights(weights)
    saved = load_ranker_file(detail) if source == "path" and _is_ranker_file(detail) else None
    if input_preprocessing == "auto":
        input_preprocessing = saved.input_preprocessing if saved else default_input_preprocessing(backbone, weights)
    with precision.policy(mixed_precision):
        features = _backbone_like(saved, backbone, image_size) if saved else \
            build_backbone(backbone, weights, image_size, small_width)
        ranker = PopularityRanker(features, dropout=dropout, input_preprocessing=input_preprocessing, name=name)
        ranker(tf.zeros([1, image_size, image_size, 3]))
    if saved:
        ranker.head.set_weights(saved.head.get_weights())
    return ranker


def synchronize_batch_norm(ranker: PopularityRanker) -> int:
    """Makes the ranker's batch-norm layers take their training statistics over every replica's
    batch (Keras's `synchronized`); returns how many. Under a `tf.distribute` strategy each
    replica would otherwise normalise its slice of the global batch alone, and a step on R
    replicas would differ from the same step on one. The variables stay the same, so checkpoints
    resume either way."""
    layers = [layer for layer in ranker._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.synchronized = True
    return len(layers)


def pairwise_logits(ranker: PopularityRanker, images_a, images_b, training: bool):
    """Q = f(A) − f(B) for uint8 image batches, with A and B through the backbone as ONE batch.

    The images go to the ranker as [0, 1]; its `input_preprocessing` does the rest.

    One batch of 2N keeps batch-norm statistics shared between the two sides of the siamese
    network (two calls would normalise A and B separately) and halves the kernel launches.
    """
    images = tf.concat([images_a, images_b], axis=0)
    scores = ranker(tf.cast(images, tf.float32) / 255.0, training=training)
    score_a, score_b = tf.split(scores, 2, axis=0)
    return score_a - score_b


def pairwise_loss(targets, logits, label_smoothing: float = 0.0):
    """Mean binary cross-entropy of sigmoid(Q) against the targets (1: A more popular).

    `label_smoothing` s moves the targets to 1 − s/2 and s/2 (Keras's convention), so the loss is
    smallest at a finite score gap instead of pushing every training pair apart forever.
    """
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits))


class SiameseRankerTrainer(keras.Model):
    """Trains a `PopularityRanker` on PDIPs with one optimizer for the backbone, one for the head.

    `fit()` takes batches `{"image_a", "image_b": uint8 [B, S, S, 3], "target": float32 [B]}`
    (see `pop_tf.data.pair_dataset`); `train_step` and `test_step` share `_compute`. Metrics:
    `loss` and `pairwise_accuracy` (sign of Q agrees with the target). Either optimizer may be
    a `LossScaleOptimizer` (`pop_tf.precision.loss_scaled`): each scales the loss for its own variables.

    Args:
        ranker: the model being trained (its variables are the only ones updated).
        label_smoothing: see `pairwise_loss`; training only, so the held-out loss stays the plain
            cross-entropy and comparable across settings.
        **kwargs: standard Model arguments.
    """

    def __init__(self, ranker: PopularityRanker, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.ranker = ranker
        self.label_smoothing = float(label_smoothing)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="pairwise_accuracy")

    def compile(self, backbone_optimizer, head_optimizer, **kwargs):
        super().compile(**kwargs)
        self.backbone_optimizer = backbone_optimizer
        self.head_optimizer = head_optimizer

    def build_optimizers(self):
        """Builds both optimizers' slots now (before a checkpoint restore or a strategy run)."""
        self.backbone_optimizer.build(self.ranker.backbone.trainable_variables)
        self.head_optimizer.build(self.ranker.head.trainable_variables)

    @property
    def metrics(self):
        return [self.loss_tracker, self.accuracy_tracker]

    def call(self, inputs, training=False):
        return pairwise_logits(self.ranker, inputs["image_a"], inputs["image_b"], training)

    def _compute(self, batch, training: bool):
        logits = pairwise_logits(self.ranker, batch["image_a"], batch["image_b"], training)
        loss = pairwise_loss(batch["target"], logits, self.label_smoothing if training else 0.0)
        correct = tf.cast(tf.equal(tf.cast(logits > 0, tf.float32), batch["target"]), tf.float32)
        return loss, correct

    def _update_metrics(self, loss, correct):
        self.loss_tracker.update_state(loss)
        self.accuracy_tracker.update_state(correct)
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, batch):
        backbone_vars = self.ranker.backbone.trainable_variables
        head_vars = self.ranker.head.trainable_variables
        with tf.GradientTape() as tape:
            loss, correct = self._compute(batch, training=True)
            # The backbone optimizer's loss scale (the identity for a plain optimizer), over the
            # replicas: their gradients are summed, and each loss is its own batch's mean.
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled_loss = self.backbone_optimizer.scale_loss(loss) / float(replicas)
        gradients = tape.gradient(scaled_loss, backbone_vars + head_vars)
        # One backward pass serves both optimizers: the head's gradients are moved to the head
        # optimizer's own scale (a ratio of powers of two, exact), read before either update.
        rescale = self.head_optimizer.scale_loss(1.0) / self.backbone_optimizer.scale_loss(1.0)
        self.backbone_optimizer.apply(gradients[:len(backbone_vars)], backbone_vars)
        self.head_optimizer.apply([g * rescale for g in gradients[len(backbone_vars):]], head_vars)
        return self._update_metrics(loss, correct)

    def test_step(self, batch):
        loss, correct = self._compute(batch, training=False)
        return self._update_metrics(loss, correct)
