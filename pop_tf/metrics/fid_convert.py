"""Converts pytorch-fid's Inception weights (the 2015-12-05 FID graph) into a Keras weights file.

    python -m pop_tf.metrics.fid_convert --input pt_inception-2015-12-05-6726825d.pth \\
        --output fid_inception.weights.h5

`pt_inception-2015-12-05-6726825d.pth` is what pytorch-fid downloads on first use (from the
mseitzer/pytorch-fid GitHub release "fid_weights") into torch.hub's cache,
`~/.cache/torch/hub/checkpoints/`; without `--input` the converter looks for it there. It is the
state dict of `pytorch_fid.inception.fid_inception_v3()`: a torchvision `Inception3` whose blocks
are pytorch-fid's FID blocks, keys `<module>.conv.weight` [out, in, kh, kw] and
`<module>.bn.weight|bias|running_mean|running_var`, plus a 1008-way `fc` that FID does not use.
It becomes a Keras weights file for `pop_tf.metrics.fid_inception.fid_inception()`:
convolutions to [kh, kw, in, out] (both frameworks compute a cross-correlation: no flip), batch
norms to gamma, beta, moving mean and variance (eps 1e-3 in both).

The output records the network and the SHA-256 of the .pth (see `fid_inception`), so
`evaluate.inception_weights=fid_inception.weights.h5` alone runs the FID graph, and its figure is
named "fid" only when the .pth was the published file (hash prefix 6726825d); any other
checkpoint of the same architecture converts, and its figure stays "fid_like".

PyTorch is needed only to read the .pth (`pip install 'pop_tf[torch]'`); the conversion itself
(`keras_weights_from_state_dict` on a dict of numpy arrays) does not import it.

References:
    Seitzer, pytorch-fid (`src/pytorch_fid/inception.py`); Heusel et al., NeurIPS 2017 (FID).
"""

import argparse
import hashlib
import os
import re
import sys

import numpy as np

from pop_tf.errors import PopTfError, UsageError
from pop_tf.metrics import fid_inception
from pop_tf.models.convert import ConversionError, load_state_dict

# `<module>.conv.weight` and `<module>.bn.<parameter>` of every BasicConv2d.
_KEY = re.compile(r"^(?P<prefix>[A-Za-z0-9_.]+)\.(?P<param>conv\.weight|bn\.(?:weight|bias|running_mean|"
                  r"running_var|num_batches_tracked))$")
# The classifier and torchvision's auxiliary head sit outside the pool features FID reads.
_UNUSED_PREFIXES = ("fc.", "AuxLogits.")
_BN_PARAMS = ("bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def torch_hub_checkpoint() -> str:
    """Where torch.hub (so pytorch-fid) caches the published file: $TORCH_HOME/hub/checkpoints/."""
    # torch.hub.get_dir()'s rule, without importing torch.
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
    return os.path.join(torch_home, "hub", "checkpoints", fid_inception.PUBLISHED_FILE)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def keras_weights_from_state_dict(state_dict) -> dict:
    """pytorch-fid's FID Inception state dict in `fid_inception()`'s layout.

    Args:
        state_dict: {name: numpy array}, e.g. `pop_tf.models.convert.load_state_dict(path)`.

    Returns:
        {Keras layer name: [arrays in the layer's weight order]}: `<name>_conv`: [kernel
        float32 [kh, kw, in, out]], `<name>_bn`: [gamma, beta, moving_mean, moving_variance].

    Raises:
        ConversionError: a key that is no BasicConv2d parameter, a missing batch-norm parameter,
            or a misshapen or non-finite array.
    """
    groups = {}
    for key, value in state_dict.items():
        if key.startswith(_UNUSED_PREFIXES):
            continue
        match = _KEY.match(key)
        if not match:
            raise ConversionError(
                f"The state dict has {key}, which is no parameter of pytorch-fid's FID Inception "
                "(<module>.conv.weight or <module>.bn.*); is it another network?")
        groups.setdefault(match["prefix"], {})[match["param"]] = np.asarray(value)
    layers = {}
    for prefix, params in groups.items():
        missing = [p for p in ("conv.weight",) + _BN_PARAMS if p not in params]
        if missing:
            raise ConversionError(
                f"The state dict has no {', '.join(f'{prefix}.{p}' for p in missing)}; it is not "
                "pytorch-fid's FID Inception (pt_inception-2015-12-05-6726825d.pth).")
        kernel = params["conv.weight"]
        if kernel.ndim != 4:
            raise ConversionError(f"{prefix}.conv.weight has shape {list(kernel.shape)}; a "
                                  "convolution weight is [out, in, kh, kw].")
        for param in ("conv.weight",) + _BN_PARAMS:
            array = params[param]
            if param != "conv.weight" and array.shape != (kernel.shape[0],):
                raise ConversionError(
                    f"{prefix}.{param} has shape {list(array.shape)}, but its convolution has "
                    f"{kernel.shape[0]} output channels.")
            if not np.all(np.isfinite(array)):
                raise ConversionError(f"{prefix}.{param} holds non-finite values.")
        name = fid_inception.keras_name(prefix)
        layers[f"{name}_conv"] = [np.ascontiguousarray(kernel.transpose(2, 3, 1, 0), dtype=np.float32)]
        layers[f"{name}_bn"] = [params[p].astype(np.float32) for p in _BN_PARAMS]
    return layers


def set_model_weights(model, layers) -> None:
    """Fills `fid_inception()` with converted weights, checking that they cover it exactly.

    Raises:
        ConversionError: a layer of the model with no weights in `layers`, weights for a layer
            the model lacks, or shapes that differ.
    """
    expected = {layer.name: layer for layer in model.layers if layer.weights}
    missing, extra = sorted(set(expected) - set(layers)), sorted(set(layers) - set(expected))
    if missing or extra:
        raise ConversionError(
            "The state dict does not match the FID Inception graph: "
            + "; ".join(part for part in (
                f"no weights for {', '.join(missing[:3])}{', …' if len(missing) > 3 else ''}" if missing else "",
                f"weights for unknown modules {', '.join(extra[:3])}{', …' if len(extra) > 3 else ''}"
                if extra else "") if part)
            + ". Convert pt_inception-2015-12-05-6726825d.pth, pytorch-fid's FID weights.")
    for name, arrays in layers.items():
        layer = expected[name]
        wanted, given = [tuple(w.shape) for w in layer.weights], [a.shape for a in arrays]
        if wanted != given:
            raise ConversionError(f"The weights for {name} have shapes {given}, but the FID Inception "
                                  f"graph has {wanted}.")
        layer.set_weights(arrays)


def save_weights(path, model, source_sha256: str) -> None:
    """Writes the model's weights to `path` (.weights.h5) with their provenance attributes."""
    import h5py

    path = os.fspath(path)
    if not path.endswith(".weights.h5"):
        raise UsageError(f"The output {path} must end in .weights.h5 (a Keras 3 rule).")
    model.save_weights(path)
    with h5py.File(path, "a") as f:
        f.attrs[fid_inception.NETWORK_ATTRIBUTE] = fid_inception.NETWORK_NAME
        f.attrs[fid_inception.SOURCE_SHA256_ATTRIBUTE] = source_sha256


def convert(input_path, output_path) -> dict:
    """Converts the .pth at `input_path` into `output_path`; returns the written file's provenance."""
    state_dict = load_state_dict(input_path)
    layers = keras_weights_from_state_dict(state_dict)
    model = fid_inception.fid_inception()
    set_model_weights(model, layers)
    parent = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(parent, exist_ok=True)
    save_weights(output_path, model, file_sha256(input_path))
    return fid_inception.read_provenance(output_path)


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m pop_tf.metrics.fid_convert",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="pytorch-fid's weights (default: torch.hub's cached "
                                        f"{fid_inception.PUBLISHED_FILE})")
    parser.add_argument("--output", required=True, help="the Keras weights file (.weights.h5)")
    args = parser.parse_args(argv)
    if not args.output.endswith(".weights.h5"):
        parser.error(f"--output {args.output} must end in .weights.h5 (a Keras 3 rule)")
    return args


def main(argv=None) -> int:
    """Runs the conversion; returns 0, 1 for a bad checkpoint, 2 for usage or missing torch."""
    args = _parse_args(argv)
    source = args.input or torch_hub_checkpoint()
    try:
        if not os.path.isfile(source):
            raise UsageError(
                f"The weights file {source} does not exist; download {fid_inception.PUBLISHED_URL} "
                + ("and pass its path." if args.input else "into that folder or pass --input."))
        provenance = convert(source, args.output)
    except (PopTfError, OSError) as exc:
        from pop_tf.errors import report

        return report("fid_convert", exc)
    published = fid_inception.is_published(provenance)
    print(f"wrote {args.output}: the FID Inception graph from {source} (SHA-256 "
          f"{provenance['source_sha256'][:16]}…); "
          + ("the published weights, figures are named fid" if published else
             f"not the published file (its hash starts with {fid_inception.PUBLISHED_SHA256_PREFIX}), "
             "figures stay fid_like"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
