"""Converts the published LPIPS checkpoints (PyTorch) into files `pop_tf.metrics.lpips` loads.

    python -m pop_tf.metrics.lpips_convert --net alex --output lpips_alex.npz
    python -m pop_tf.metrics.lpips_convert --net vgg --linear vgg.pth --output lpips_vgg.npz
    python -m pop_tf.metrics.lpips_convert --alex alexnet-owt-7be5be79.pth \\
        --alex-output alexnet_torchvision.weights.h5
    python -m pop_tf.metrics.lpips_convert --vgg vgg16-397923af.pth \\
        --vgg-output vgg16_torchvision.weights.h5

- `--output` (with `--net vgg|alex`, default vgg): the LPIPS v0.1 linear layers, keys
  `lin<k>.model.1.weight` (or `.model.0.` without dropout) of shape [1, C, 1, 1], become an .npz
  with keys `lin0` … `lin4` of shape [C]. They come from `--linear FILE`, or else from the
  installed `lpips` package, whose wheel ships them (`lpips/weights/v0.1/{alex,vgg}.pth`): no
  download, and the package is not imported (only its files are read).
- `--vgg`: torchvision's ImageNet VGG16 (`vgg16-397923af.pth`, what `lpips` loads as its
  backbone), keys `features.<i>.weight|bias`, becomes a Keras weights file for
  `keras.applications.VGG16(include_top=False)`. torchvision's padding=1 3×3 convolutions and
  floor 2×2 poolings are Keras's "same" convolutions and "valid" poolings. The classifier is
  dropped.
- `--alex`: torchvision's ImageNet AlexNet (`alexnet-owt-7be5be79.pth`), keys
  `features.{0,3,6,8,10}.weight|bias`, becomes a Keras weights file for
  `pop_tf.metrics.lpips.alexnet_features()`.
Convolution kernels go from PyTorch's [out, in, kh, kw] to Keras's [kh, kw, in, out]; both
frameworks compute a cross-correlation, so no flip is needed. A saved `lpips.LPIPS` module's
backbone keys (`net.slice<s>.<i>.`, torchvision's indices) are read as well.

A converted backbone and linear layers of the same net give published LPIPS (v0.1), e.g.
`LPIPS(net="alex", weights="alexnet_torchvision.weights.h5", linear_weights="lpips_alex.npz",
standard=True)`.

PyTorch is needed only to read the .pth files and is not a pop_tf dependency; the conversions
themselves (`linear_weights_from_state_dict`, `vgg16_kernels_from_state_dict`,
`alexnet_kernels_from_state_dict`) take plain dicts of numpy arrays.

References:
    Zhang et al. "The Unreasonable Effectiveness of Deep Features as a Perceptual Metric",
    CVPR 2018 (richzhang/PerceptualSimilarity: `lpips/lpips.py`, `lpips/pretrained_networks.py`).
"""

import argparse
import os
import re
import sys

import numpy as np

from pop_tf.errors import PopTfError, UsageError
from pop_tf.metrics.lpips import BACKBONE_NAMES, LINEAR_KEYS, NET_CHANNELS, NETS, LinearWeightsError, \
    alexnet_features, check_linear_weights, save_linear_weights

# torchvision vgg16().features: index of every convolution → the Keras VGG16 layer, with
# (in, out) channels.
VGG16_CONVOLUTIONS = (
    (0, "block1_conv1", 3, 64), (2, "block1_conv2", 64, 64),
    (5, "block2_conv1", 64, 128), (7, "block2_conv2", 128, 128),
    (10, "block3_conv1", 128, 256), (12, "block3_conv2", 256, 256),
    (14, "block3_conv3", 256, 256),
    (17, "block4_conv1", 256, 512), (19, "block4_conv2", 512, 512),
    (21, "block4_conv3", 512, 512),
    (24, "block5_conv1", 512, 512), (26, "block5_conv2", 512, 512),
    (28, "block5_conv3", 512, 512),
)
# torchvision alexnet().features: index of every convolution → the layer of
# `lpips.alexnet_features()`, with (in, out) channels and kernel size.
ALEXNET_CONVOLUTIONS = (
    (0, "conv1", 3, 64, 11), (3, "conv2", 64, 192, 5), (6, "conv3", 192, 384, 3),
    (8, "conv4", 384, 256, 3), (10, "conv5", 256, 256, 3),
)
# The lpips package's linear layers, relative to its folder.
INSTALLED_LINEAR_WEIGHTS = os.path.join("weights", "v0.1", "{net}.pth")
# `lin<k>.model.<i>.weight`: i is 1 after the Dropout of the released models, 0 without it.
_LINEAR_KEY = re.compile(r"^(?:module\.)?lin(\d+)\.model\.(\d+)\.weight$")
# `features.<i>.` in torchvision's VGG16 and AlexNet; `net.slice<s>.<i>.` in a saved
# lpips.LPIPS module, which keeps torchvision's indices.
_FEATURES_KEY = re.compile(r"^(?:module\.)?(?:features|net\.slice[1-5])\.(\d+)\.(weight|bias)$")
TORCH_INSTALL_HINT = (
    "Reading .pth checkpoints needs PyTorch, which pop_tf does not install: run `pip install "
    "torch --index-url https://download.pytorch.org/whl/cpu` (or any torch build) and retry.")


class TorchMissingError(UsageError):
    """PyTorch is needed to read a .pth file and is not installed."""


def linear_weights_from_state_dict(state_dict, net="vgg"):
    """The five LPIPS linear layers of a checkpoint, as the .npz mapping `lpips` loads.

    Args:
        state_dict: mapping of parameter names to numpy arrays, e.g. the LPIPS v0.1 `vgg.pth` or
            `alex.pth` (keys `lin0.model.1.weight` … `lin4.model.1.weight`, shapes [1, C, 1, 1]).
            Keys that are not linear layers (a full LPIPS module also holds its backbone) are
            ignored.
        net: the backbone the layers belong to, `"vgg"` or `"alex"`.

    Returns:
        {"lin0": float32 [C0], …, "lin4": [C4]}, C = (64, 128, 256, 512, 512) for vgg and
        (64, 192, 384, 256, 256) for alex.

    Raises:
        LinearWeightsError: when a layer is missing or given twice, the checkpoint has more than
            five layers (SqueezeNet's has seven), a shape is not [1, C, 1, 1] for the net's
            channels (naming the other net when they are its), or a weight is negative or not
            finite.
    """
    if net not in NET_CHANNELS:
        raise LinearWeightsError(f"net must be one of {', '.join(NETS)}, got {net!r}.")
    found = {}
    for key, value in state_dict.items():
        match = _LINEAR_KEY.match(key)
        if not match:
            continue
        name = f"lin{int(match.group(1))}"
        if name in found:
            raise LinearWeightsError(
                f"The checkpoint holds two weights for {name} ({found[name][0]} and {key}).")
        found[name] = (key, np.asarray(value))
    extra = sorted(set(found) - set(LINEAR_KEYS))
    if extra:
        raise LinearWeightsError(
            f"The checkpoint has linear layers {', '.join(extra)} beyond lin4, so it is not an "
            "LPIPS vgg or alex checkpoint (SqueezeNet has 7 layers); convert the v0.1 vgg.pth or "
            "alex.pth.")
    missing = [name for name in LINEAR_KEYS if name not in found]
    if missing:
        raise LinearWeightsError(
            f"The checkpoint has no {', '.join(missing)} (keys like lin0.model.1.weight); it is "
            "not an LPIPS linear-layer checkpoint.")
    shapes = [found[name][1].shape for name in LINEAR_KEYS]
    for other, channels in NET_CHANNELS.items():
        if other != net and shapes == [(1, c, 1, 1) for c in channels]:
            raise LinearWeightsError(
                f"The checkpoint holds the linear layers of LPIPS on {BACKBONE_NAMES[other]}, not "
                f"{BACKBONE_NAMES[net]}; pass --net {other} (net={other!r}).")
    vectors = {}
    for name, channels in zip(LINEAR_KEYS, NET_CHANNELS[net]):
        key, array = found[name]
        if array.shape != (1, channels, 1, 1):
            raise LinearWeightsError(
                f"{key} has shape {list(array.shape)}, but the {net} LPIPS layer {name} has shape "
                f"[1, {channels}, 1, 1]; is this the checkpoint of another network? (LPIPS's "
                + ", ".join(f"{n} has channels {', '.join(map(str, c))}" for n, c in NET_CHANNELS.items())
                + ")")
        vectors[name] = array.reshape(channels)
    return dict(zip(LINEAR_KEYS, check_linear_weights(vectors, source="the checkpoint", net=net)))


def installed_linear_weights(net="vgg"):
    """The v0.1 linear-layer checkpoint the installed `lpips` package ships for `net`.

    Finds the package without importing it (its import pulls in torchvision).

    Raises:
        UsageError: when `lpips` is not installed or lacks the file.
    """
    import importlib.util

    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(
            f"The lpips package is not installed, so its {net} linear layers cannot be read: run "
            "`pip install lpips` (it ships them; nothing else is downloaded) or pass --linear "
            f"<path to {net}.pth>.")
    path = os.path.join(list(spec.submodule_search_locations)[0], INSTALLED_LINEAR_WEIGHTS.format(net=net))
    if not os.path.isfile(path):
        raise UsageError(f"The installed lpips package has no {path}; reinstall it (`pip install "
                         "--force-reinstall lpips`) or pass --linear <path to the .pth>.")
    return path


def _convolutions_from_state_dict(state_dict, convolutions, network):
    """{Keras layer: [kernel [kh, kw, in, out], bias [out]]} for torchvision `features.<i>` convs."""
    found = {}
    for key, value in state_dict.items():
        match = _FEATURES_KEY.match(key)
        if match:
            found[(int(match.group(1)), match.group(2))] = (key, np.asarray(value))
    layers = {}
    for index, name, in_channels, out_channels, size in convolutions:
        expected = {"weight": (out_channels, in_channels, size, size), "bias": (out_channels,)}
        arrays = {}
        for kind, shape in expected.items():
            if (index, kind) not in found:
                raise ValueError(
                    f"The checkpoint has no features.{index}.{kind} ({network} {name}); it is not "
                    f"torchvision's {network.lower()} state dict.")
            key, array = found[(index, kind)]
            if array.shape != shape:
                raise ValueError(
                    f"{key} has shape {list(array.shape)}, but {network} {name} needs {list(shape)}.")
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{key} holds non-finite values.")
            arrays[kind] = array.astype(np.float32)
        layers[name] = [np.ascontiguousarray(arrays["weight"].transpose(2, 3, 1, 0)),
                        arrays["bias"]]
    return layers


def vgg16_kernels_from_state_dict(state_dict):
    """torchvision VGG16 convolution weights in the layout of `keras.applications.VGG16`.

    Args:
        state_dict: mapping of parameter names to numpy arrays, torchvision's `vgg16()` state
            dict (keys `features.<i>.weight` [out, in, 3, 3] and `features.<i>.bias` [out]);
            classifier keys are ignored.

    Returns:
        {Keras layer name: [kernel float32 [3, 3, in, out], bias float32 [out]]} for the 13
        convolutions.

    Raises:
        ValueError: when a convolution is missing or has the wrong shape or non-finite values.
    """
    return _convolutions_from_state_dict(
        state_dict, [(index, name, c_in, c_out, 3) for index, name, c_in, c_out in VGG16_CONVOLUTIONS],
        "VGG16")


def alexnet_kernels_from_state_dict(state_dict):
    """torchvision AlexNet convolution weights in the layout of `lpips.alexnet_features()`.

    Args:
        state_dict: mapping of parameter names to numpy arrays, torchvision's `alexnet()` state
            dict (keys `features.<i>.weight|bias`, i in 0, 3, 6, 8, 10) or a saved
            `lpips.LPIPS(net="alex")` module's (`net.slice<s>.<i>.`); other keys are ignored.

    Returns:
        {"conv1": [kernel float32 [11, 11, 3, 64], bias [64]], …, "conv5": [[3, 3, 256, 256], [256]]}.

    Raises:
        ValueError: when a convolution is missing or has the wrong shape or non-finite values.
    """
    return _convolutions_from_state_dict(state_dict, ALEXNET_CONVOLUTIONS, "AlexNet")


def _save_backbone(path, model, layers):
    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise UsageError(f"The backbone output {path} must end in .weights.h5 (a Keras 3 rule).")
    for name, arrays in layers.items():
        model.get_layer(name).set_weights(arrays)
    model.save_weights(path)


def save_vgg16_weights(path, layers):
    """Writes converted kernels as a Keras weights file for VGG16(include_top=False).

    Args:
        path: output file; Keras 3 needs the suffix `.weights.h5`.
        layers: the mapping returned by `vgg16_kernels_from_state_dict`.

    Raises:
        UsageError: when the path does not end in `.weights.h5`.
    """
    import keras

    _save_backbone(path, keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3)),
                   layers)


def save_alexnet_weights(path, layers):
    """Writes converted kernels as a Keras weights file for `lpips.alexnet_features()`.

    Args:
        path: output file; Keras 3 needs the suffix `.weights.h5`.
        layers: the mapping returned by `alexnet_kernels_from_state_dict`.

    Raises:
        UsageError: when the path does not end in `.weights.h5`.
    """
    _save_backbone(path, alexnet_features(), layers)


def load_torch_state_dict(path):
    """Reads a .pth state dict into numpy arrays with PyTorch (imported only here).

    Raises:
        TorchMissingError: when PyTorch is not installed.
        PopTfError: when the file cannot be read as a state dict.
    """
    try:
        import torch
    except ImportError as exc:
        raise TorchMissingError(TORCH_INSTALL_HINT) from exc
    try:
        # weights_only: a checkpoint is data; never run pickled code from a downloaded file.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PopTfError(f"Could not read {path} as a PyTorch state dict ({exc}).") from exc
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise PopTfError(f"{path} holds a {type(loaded).__name__}, not a state dict.")
    return {key: value.detach().cpu().numpy() for key, value in loaded.items()
            if hasattr(value, "detach")}


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m pop_tf.metrics.lpips_convert", description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=NETS, default="vgg",
                        help="the backbone of the linear layers (default vgg; lpips's default is alex)")
    parser.add_argument("--linear", help="LPIPS v0.1 linear-layer checkpoint (default: the installed "
                                         "lpips package's weights/v0.1/<net>.pth)")
    parser.add_argument("--output", help="where to write the linear weights (.npz)")
    parser.add_argument("--vgg", help="torchvision VGG16 checkpoint (vgg16-397923af.pth)")
    parser.add_argument("--vgg-output", help="where to write the Keras VGG16 weights "
                                             "(.weights.h5)")
    parser.add_argument("--alex", help="torchvision AlexNet checkpoint (alexnet-owt-7be5be79.pth)")
    parser.add_argument("--alex-output", help="where to write the Keras AlexNet weights "
                                              "(.weights.h5)")
    args = parser.parse_args(argv)
    if args.linear and not args.output:
        parser.error("--linear needs --output.")
    if bool(args.vgg) != bool(args.vgg_output):
        parser.error("--vgg and --vgg-output go together.")
    if bool(args.alex) != bool(args.alex_output):
        parser.error("--alex and --alex-output go together.")
    if not (args.output or args.vgg or args.alex):
        parser.error("give --output (with --net, and --linear or the installed lpips package), "
                     "--vgg/--vgg-output, --alex/--alex-output, or several.")
    return args


def main(argv=None) -> int:
    """Runs the conversions; returns 0, 1 for a bad checkpoint, 2 for usage or missing torch."""
    args = _parse_args(argv)
    try:
        for given in (args.linear, args.vgg, args.alex):
            if given and not os.path.isfile(given):
                raise UsageError(f"The checkpoint {given} does not exist.")
        for output in (args.vgg_output, args.alex_output):
            if output and not output.endswith(".weights.h5"):
                raise UsageError(f"The backbone output {output} must end in .weights.h5 (a Keras 3 rule).")
        if args.output:
            linear = args.linear or installed_linear_weights(args.net)
            vectors = linear_weights_from_state_dict(load_torch_state_dict(linear), net=args.net)
            # numpy appends .npz to a name without it; say where the file really is.
            output = args.output if args.output.endswith(".npz") else args.output + ".npz"
            save_linear_weights(output, vectors, net=args.net)
            print(f"wrote {output}: LPIPS {args.net} linear weights from {linear}, "
                  + ", ".join(f"{k} [{v.shape[0]}]" for k, v in vectors.items()))
        if args.vgg:
            save_vgg16_weights(args.vgg_output,
                               vgg16_kernels_from_state_dict(load_torch_state_dict(args.vgg)))
            print(f"wrote {args.vgg_output}: torchvision VGG16 convolutions for "
                  "keras.applications.VGG16(include_top=False)")
        if args.alex:
            save_alexnet_weights(args.alex_output,
                                 alexnet_kernels_from_state_dict(load_torch_state_dict(args.alex)))
            print(f"wrote {args.alex_output}: torchvision AlexNet convolutions for "
                  "pop_tf.metrics.lpips.alexnet_features()")
    except PopTfError as exc:
        print(f"lpips_convert: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:
        print(f"lpips_convert: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
