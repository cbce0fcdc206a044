"""Converts Ding et al.'s released popularity model (PyTorch) into pop_tf's ranker.

    python -m pop_tf.models.convert ding --input model-resnet50.pth --output ding_ranker.keras
    python -m pop_tf.models.convert ding --input model-resnet50.pth --output ding_ranker.keras \\
        --saved-model saved_models/ranker/ding

The released model (`model/model-resnet50.pth` of dingkeyan93/Intrinsic-Image-Popularity) is the
state dict of torchvision's `resnet50()` with `fc = Linear(2048, 1)`, fed RGB in [0, 1] resized to
224×224 with no mean/std normalisation. It becomes a `PopularityRanker` with
`input_preprocessing="unit"` whose backbone, `torchvision_resnet50`, is torchvision's network
layer for layer, not keras.applications' ResNet50, which differs in three ways that change
scores:
- torchvision's ResNet50 is "v1.5": a downsampling bottleneck strides its 3×3 convolution;
  Keras's strides the first 1×1 convolution;
- TensorFlow's "same" padding of a stride-2 3×3 convolution on an even input pads only the
  bottom/right, torchvision pads 1 on every side: here stride-2 convolutions get an explicit
  `ZeroPadding2D(1)` (and conv1, 7×7 stride 2, `ZeroPadding2D(3)`, torchvision's padding=3);
- torchvision's batch norm has epsilon 1e-5 (Keras's ResNet50 1.001e-5) and no convolution bias.
torchvision's max pool pads with −inf, Keras's stem with `ZeroPadding2D(1)`; after the ReLU every
value is ≥ 0, so both take the same maxima. Its batch-norm layers are
`pop_tf.layers.normalization.BatchNormalization` (the fused kernel) with PyTorch's momentum (0.1,
Keras's 0.9), so fine-tuning updates the running statistics at PyTorch's rate.

Weights: convolutions [out, in, kh, kw] → Keras [kh, kw, in, out] (both frameworks compute a
cross-correlation: no flip); batch norm weight, bias, running_mean, running_var → gamma, beta,
moving_mean, moving_variance; fc.weight [1, 2048] → the head kernel [2048, 1], fc.bias → its bias.

Outputs: a `.keras` file (the whole ranker, config included: `keras.saving.load_model`, or
`weights=<file>.keras` in `build_ranker` and the train_ranker stage to fine-tune it at any image
size), a `.weights.h5` file (the weights only, for `ding_ranker(image_size).load_weights`), and
with `--saved-model` the ranker SavedModel the score stage reads (`pop_tf.serving.export_ranker`).

PyTorch is needed only to read the .pth file (`pip install 'pop_tf[torch]'`); the conversion
itself (`ranker_from_torch_state_dict` on a dict of numpy arrays) does not import it.

Reference:
    Ding, Ma, Tang, Wen, Lin. "Intrinsic Image Popularity Assessment", ACM MM 2019
    (arXiv 1907.01985); He et al., "Deep Residual Learning for Image Recognition", CVPR 2016;
    torchvision `models/resnet.py`.
"""

import argparse
import os
import sys

import numpy as np

from pop_tf.errors import PopTfError, UsageError

BN_EPSILON = 1e-5  # torch.nn.BatchNorm2d's eps
BN_MOMENTUM = 0.9  # Keras's momentum for torch's 0.1
# torchvision resnet50: (layer, blocks, bottleneck width); outputs are 4 × width channels.
STAGES = ((1, 3, 64), (2, 4, 128), (3, 6, 256), (4, 3, 512))
TORCH_INSTALL_HINT = ("Reading a .pth file needs PyTorch, which pop_tf does not install: run "
                      "`pip install 'pop_tf[torch]'` (or `pip install torch --index-url "
                      "https://download.pytorch.org/whl/cpu`) and retry.")


class TorchMissingError(UsageError):
    """PyTorch is needed to read a .pth file and is not installed."""


class ConversionError(PopTfError):
    """A state dict that is not torchvision's resnet50 with a 2048 → 1 fc layer."""


def torchvision_resnet50(image_size: int, name: str = "torchvision_resnet50"):
    """torchvision's `resnet50()` without fc as a Keras functional model: [N, S, S, 3] → [N, 2048].

    Layer names follow keras.applications' ResNet50 (`conv1_conv`, `conv2_block1_1_conv`, …,
    shortcut `_0_`), with `_pad` layers before the stride-2 convolutions; see the module docstring
    for what differs from Keras's network. Built under the current dtype policy.
    """
    import keras

    from pop_tf.layers import normalization

    def bn(x, layer_name):
        return normalization.BatchNormalization(epsilon=BN_EPSILON, momentum=BN_MOMENTUM, name=layer_name)(x)

    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.ZeroPadding2D(3, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = keras.layers.ReLU(name="conv1_relu")(bn(x, "conv1_bn"))
    x = keras.layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for layer, blocks, width in STAGES:
        for block in range(blocks):
            prefix = f"conv{layer + 1}_block{block + 1}"
            stride = 2 if layer > 1 and block == 0 else 1
            shortcut = x
            if block == 0:
                shortcut = keras.layers.Conv2D(4 * width, 1, strides=stride, use_bias=False,
                                               name=f"{prefix}_0_conv")(x)
                shortcut = bn(shortcut, f"{prefix}_0_bn")
            y = keras.layers.Conv2D(width, 1, use_bias=False, name=f"{prefix}_1_conv")(x)
            y = keras.layers.ReLU(name=f"{prefix}_1_relu")(bn(y, f"{prefix}_1_bn"))
            if stride == 1:
                y = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{prefix}_2_conv")(y)
            else:
                y = keras.layers.ZeroPadding2D(1, name=f"{prefix}_2_pad")(y)
                y = keras.layers.Conv2D(width, 3, strides=stride, use_bias=False, name=f"{prefix}_2_conv")(y)
            y = keras.layers.ReLU(name=f"{prefix}_2_relu")(bn(y, f"{prefix}_2_bn"))
            y = keras.layers.Conv2D(4 * width, 1, use_bias=False, name=f"{prefix}_3_conv")(y)
            y = bn(y, f"{prefix}_3_bn")
            x = keras.layers.ReLU(name=f"{prefix}_out")(keras.layers.Add(name=f"{prefix}_add")([shortcut, y]))
    outputs = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    return keras.Model(inputs, outputs, name=name)


def _torch_names():
    """(Keras layer, torch prefix, kind) for every layer with weights, in `torchvision_resnet50` order."""
    names = [("conv1_conv", "conv1", "conv"), ("conv1_bn", "bn1", "bn")]
    for layer, blocks, _ in STAGES:
        for block in range(blocks):
            prefix, torch_prefix = f"conv{layer + 1}_block{block + 1}", f"layer{layer}.{block}"
            if block == 0:
                names += [(f"{prefix}_0_conv", f"{torch_prefix}.downsample.0", "conv"),
                          (f"{prefix}_0_bn", f"{torch_prefix}.downsample.1", "bn")]
            for i in (1, 2, 3):
                names += [(f"{prefix}_{i}_conv", f"{torch_prefix}.conv{i}", "conv"),
                          (f"{prefix}_{i}_bn", f"{torch_prefix}.bn{i}", "bn")]
    return names


def load_state_dict(path_or_dict) -> dict:
    """A state dict as {name: float32 numpy array}: read from a .pth file with
    `torch.load(path, map_location="cpu", weights_only=True)`, or taken from a mapping of torch
    tensors or arrays. A `module.` prefix (DataParallel) is dropped, and so is a wrapping
    {"state_dict": ...}.

    Raises:
        TorchMissingError: a path, and PyTorch is not installed.
        ConversionError: a file that is not a state dict.
    """
    if isinstance(path_or_dict, (str, os.PathLike)):
        path = os.fspath(path_or_dict)
        if not os.path.isfile(path):
            raise UsageError(f"The PyTorch model {path} does not exist.")
        try:
            import torch
        except ImportError as exc:
            raise TorchMissingError(TORCH_INSTALL_HINT) from exc
        try:
            # weights_only: a downloaded checkpoint is data; never run pickled code from it.
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ConversionError(f"Could not read {path} as a PyTorch state dict ({exc}).") from exc
        source = path
    else:
        loaded, source = path_or_dict, "the state dict"
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise ConversionError(f"{source} holds a {type(loaded).__name__}, not a state dict.")
    arrays = {}
    for key, value in loaded.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        arrays[key[len("module."):] if key.startswith("module.") else key] = np.asarray(value)
    return arrays


def keras_weights_from_state_dict(state_dict) -> dict:
    """torchvision resnet50 (fc 2048 → 1) weights in `torchvision_resnet50`'s layout.

    Args:
        state_dict: {name: numpy array} (see `load_state_dict`).

    Returns:
        {Keras layer name: [arrays in the layer's weight order]}, the backbone's layers and
        "head": [kernel float32 [2048, 1], bias float32 [1]].

    Raises:
        ConversionError: a missing, unexpected, misshapen or non-finite parameter, or an fc
            layer with other than one output (e.g. torchvision's ImageNet classifier).
    """
    used, layers = set(), {}

    def take(key, shape=None):
        if key not in state_dict:
            raise ConversionError(f"The state dict has no {key}; it is not torchvision's resnet50 "
                                  "(Ding et al.'s model-resnet50.pth).")
        array = np.asarray(state_dict[key], dtype=np.float32)
        if shape is not None and array.shape != tuple(shape):
            raise ConversionError(f"{key} has shape {list(array.shape)}, but {list(shape)} is needed.")
        if not np.all(np.isfinite(array)):
            raise ConversionError(f"{key} holds non-finite values.")
        used.add(key)
        return array

    for name, prefix, kind in _torch_names():
        if kind == "conv":
            layers[name] = [np.ascontiguousarray(take(f"{prefix}.weight").transpose(2, 3, 1, 0))]
        else:
            gamma = take(f"{prefix}.weight")
            shape = gamma.shape
            layers[name] = [gamma, take(f"{prefix}.bias", shape), take(f"{prefix}.running_mean", shape),
                            take(f"{prefix}.running_var", shape)]
            used.add(f"{prefix}.num_batches_tracked")
    fc_weight = state_dict.get("fc.weight")
    if fc_weight is not None and np.shape(fc_weight) != (1, 2048):
        raise ConversionError(f"fc.weight has shape {list(np.shape(fc_weight))}: this is not a popularity model "
                              "(fc = Linear(2048, 1)); an ImageNet classifier has [1000, 2048].")
    layers["head"] = [np.ascontiguousarray(take("fc.weight", (1, 2048)).T), take("fc.bias", (1,))]
    unexpected = sorted(set(state_dict) - used)
    if unexpected:
        raise ConversionError(f"The state dict has parameters torchvision's resnet50 does not ({', '.join(unexpected[:3])}"
                              f"{', …' if len(unexpected) > 3 else ''}); it is not Ding et al.'s model.")
    return layers


def ding_ranker(image_size: int = 224, mixed_precision: str = "none", dropout: float = 0.0, name: str = "ranker"):
    """An untrained `PopularityRanker` of Ding et al.'s architecture (torchvision ResNet50, fc 2048 → 1,
    [0, 1] input): what `ranker_from_torch_state_dict` fills, and what a converted `.weights.h5` loads into."""
    import tensorflow as tf

    from pop_tf import precision
    from pop_tf.models import ranker as ranker_lib

    with precision.policy(mixed_precision):
        ranker = ranker_lib.PopularityRanker(torchvision_resnet50(image_size), dropout=dropout,
                                             input_preprocessing="unit", name=name)
        ranker(tf.zeros([1, image_size, image_size, 3]))
    return ranker


def ranker_from_torch_state_dict(path_or_dict, image_size: int = 224, mixed_precision: str = "none",
                                 dropout: float = 0.0, name: str = "ranker"):
    """Ding et al.'s released model as a `PopularityRanker`, to score with or fine-tune.

    Args:
        path_or_dict: the .pth file (`model-resnet50.pth`), or its state dict (torch tensors or
            numpy arrays).
        image_size: the ranker's input side S (Ding's model was trained at 224; the network is
            fully convolutional, so any S ≥ 32 runs).
        mixed_precision: the backbone's dtype policy (`pop_tf.precision`); the head stays float32.
        dropout: as `PopularityRanker`'s (training only).
        name: the model's name.

    Returns:
        A built ranker taking RGB float [N, S, S, 3] in [0, 1] (`input_preprocessing="unit"`).

    Raises:
        TorchMissingError: a path and no PyTorch; ConversionError: see `keras_weights_from_state_dict`.
    """
    weights = keras_weights_from_state_dict(load_state_dict(path_or_dict))
    ranker = ding_ranker(image_size, mixed_precision=mixed_precision, dropout=dropout, name=name)
    for layer_name, arrays in weights.items():
        layer = ranker.head if layer_name == "head" else ranker.backbone.get_layer(layer_name)
        expected, given = [tuple(w.shape) for w in layer.weights], [a.shape for a in arrays]
        if expected != given:
            raise ConversionError(f"The state dict's weights for {layer_name} have shapes {given}, but "
                                  f"torchvision's resnet50 has {expected}.")
        layer.set_weights(arrays)
    return ranker


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m pop_tf.models.convert", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ding = commands.add_parser("ding", help="Ding et al.'s model-resnet50.pth → a pop_tf ranker")
    ding.add_argument("--input", required=True, help="the PyTorch state dict (model-resnet50.pth)")
    ding.add_argument("--output", required=True,
                      help="the converted ranker: .keras (model and config) or .weights.h5 (weights only)")
    ding.add_argument("--image-size", type=int, default=224, help="the ranker's input side (default 224, Ding's)")
    ding.add_argument("--saved-model", help="also export the ranker SavedModel (score stage, TF Serving) here")
    args = parser.parse_args(argv)
    if not args.output.endswith((".keras", ".weights.h5")):
        parser.error(f"--output {args.output} must end in .keras or .weights.h5 (Keras 3 rules)")
    if args.image_size < 32:
        parser.error(f"--image-size {args.image_size} is too small for ResNet50 (32 at least)")
    return args


def main(argv=None) -> int:
    """Runs the conversion; returns 0, 1 for a bad checkpoint, 2 for usage or missing torch."""
    args = _parse_args(argv)
    try:
        ranker = ranker_from_torch_state_dict(args.input, args.image_size)
        parent = os.path.dirname(os.path.abspath(args.output))
        os.makedirs(parent, exist_ok=True)
        if args.output.endswith(".keras"):
            ranker.save(args.output)
        else:
            ranker.save_weights(args.output)
        print(f"wrote {args.output}: Ding et al.'s popularity ranker, {args.image_size}² RGB in [0, 1]")
        if args.saved_model:
            from pop_tf import serving

            config = {"source": "ding", "input": os.path.abspath(args.input), "image_size": args.image_size}
            serving.export_ranker(ranker, args.saved_model, config, serving.file_fingerprint(args.input))
            print(f"wrote {args.saved_model}: the ranker SavedModel (score, score_jpeg)")
    except (PopTfError, OSError) as exc:
        from pop_tf.errors import report

        return report("convert", exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
