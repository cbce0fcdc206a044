"""The Inception network of published FID (the 2015-12-05 TensorFlow graph) as a Keras model.

FID as published (Heusel et al.'s TTUR code, pytorch-fid, most papers) runs the
`inception-2015-12-05` TensorFlow graph, not `keras.applications.InceptionV3`. The two have the
same layer sizes, but the graph differs in two places that change every feature:

- its last block, `Mixed_7c`, pools its fourth branch by **max** (3×3, stride 1), where the
  paper and Keras pool by average (pytorch-fid's `FIDInceptionE_2`);
- its batch norms have a learned scale (Keras's InceptionV3 builds them with `scale=False`), so
  its weights do not even load into the Keras network.

Its average pools (Mixed_5b-d, 6b-e, 7b) leave the padding out of the mean, which Keras's "same"
average pooling already does (pytorch-fid patches torchvision's blocks for it). `fid_inception()`
builds the graph layer for layer after pytorch-fid's `inception.py` (`fid_inception_v3`,
`FIDInceptionA/C/E_1/E_2`), with Keras layers named after the PyTorch modules (`Mixed_5b.branch1x1`
→ `Mixed_5b_branch1x1_conv` / `_bn`), so `pop_tf.metrics.fid_convert` can fill it from pytorch-fid's
weights file. The input is what the blocks see: 299×299 RGB in [-1, 1]; resizing and scaling are
`pop_tf.metrics.fid.InceptionFeatures`'s, as pytorch-fid's `InceptionV3.forward` does them.

Provenance. A weights file written by `pop_tf.metrics.fid_convert` carries two HDF5 attributes:
which network it holds (`fid_inception_2015_12_05`) and the SHA-256 of the .pth it was converted
from. `InceptionFeatures` picks the network from the first and calls its figure "fid" only when the
second starts with 6726825d, the hash pytorch-fid publishes in the file's name.

References:
    Szegedy et al. "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
    Heusel et al. "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
    Equilibrium", NeurIPS 2017 (FID; bioinf-jku/TTUR).
    Seitzer, pytorch-fid (mseitzer/pytorch-fid, `src/pytorch_fid/inception.py`).
"""

import os

INPUT_SIZE = 299
FEATURE_DIM = 2048
# torchvision's BasicConv2d: BatchNorm2d(eps=0.001).
BN_EPSILON = 1e-3
# What pytorch-fid downloads (and torch.hub caches in ~/.cache/torch/hub/checkpoints/).
PUBLISHED_FILE = "pt_inception-2015-12-05-6726825d.pth"
PUBLISHED_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                 + PUBLISHED_FILE)
# torch.hub names a file after the first hex digits of its SHA-256 and checks them on download.
PUBLISHED_SHA256_PREFIX = "6726825d"
NETWORK_NAME = "fid_inception_2015_12_05"
# HDF5 attributes of a converted weights file (on its root group).
NETWORK_ATTRIBUTE = "pop_tf_network"
SOURCE_SHA256_ATTRIBUTE = "pop_tf_source_sha256"


def keras_name(torch_prefix: str) -> str:
    """The Keras name of the BasicConv2d at `torch_prefix` (`Mixed_5b.branch1x1` → `Mixed_5b_branch1x1`)."""
    return torch_prefix.replace(".", "_")


def fid_inception(input_size=INPUT_SIZE, name: str = "fid_inception_v3"):
    """The 2015-12-05 FID Inception graph: [N, S, S, 3] RGB in [-1, 1] → [N, 2048] pool features.

    Randomly initialised; fill it with `pop_tf.metrics.fid_convert` weights (`load_weights`).
    Built under the current dtype policy. FID feeds it 299×299 images (`input_size`); the network
    is fully convolutional, so None takes any size from 75×75 up (pytorch-fid's
    `resize_input=False`).
    """
    import keras

    layers = keras.layers

    def basic(x, prefix, filters, kernel, strides=1, padding="same"):
        # torchvision's BasicConv2d: convolution without bias, batch norm, ReLU. Every stride-1
        # convolution pads (k - 1) / 2 on each side ("same"); every stride-2 one pads nothing.
        x = layers.Conv2D(filters, kernel, strides=strides, padding=padding, use_bias=False,
                          name=f"{keras_name(prefix)}_conv")(x)
        x = layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{keras_name(prefix)}_bn")(x)
        return layers.ReLU(name=f"{keras_name(prefix)}_relu")(x)

    def average_pool(x, block):
        # TF's (and pytorch-fid's count_include_pad=False) mean over the unpadded pixels only.
        return layers.AveragePooling2D(3, strides=1, padding="same", name=f"{block}_pool")(x)

    def concat(tensors, name):
        return layers.Concatenate(axis=-1, name=name)(tensors)

    def block_a(x, block, pool_features):
        b1 = basic(x, f"{block}.branch1x1", 64, 1)
        b5 = basic(x, f"{block}.branch5x5_1", 48, 1)
        b5 = basic(b5, f"{block}.branch5x5_2", 64, 5)
        b3 = basic(x, f"{block}.branch3x3dbl_1", 64, 1)
        b3 = basic(b3, f"{block}.branch3x3dbl_2", 96, 3)
        b3 = basic(b3, f"{block}.branch3x3dbl_3", 96, 3)
        bp = basic(average_pool(x, block), f"{block}.branch_pool", pool_features, 1)
        return concat([b1, b5, b3, bp], block)

    def block_b(x, block):
        b3 = basic(x, f"{block}.branch3x3", 384, 3, strides=2, padding="valid")
        bd = basic(x, f"{block}.branch3x3dbl_1", 64, 1)
        bd = basic(bd, f"{block}.branch3x3dbl_2", 96, 3)
        bd = basic(bd, f"{block}.branch3x3dbl_3", 96, 3, strides=2, padding="valid")
        bp = layers.MaxPooling2D(3, strides=2, name=f"{block}_pool")(x)
        return concat([b3, bd, bp], block)

    def block_c(x, block, c7):
        b1 = basic(x, f"{block}.branch1x1", 192, 1)
        b7 = basic(x, f"{block}.branch7x7_1", c7, 1)
        b7 = basic(b7, f"{block}.branch7x7_2", c7, (1, 7))
        b7 = basic(b7, f"{block}.branch7x7_3", 192, (7, 1))
        bd = basic(x, f"{block}.branch7x7dbl_1", c7, 1)
        bd = basic(bd, f"{block}.branch7x7dbl_2", c7, (7, 1))
        bd = basic(bd, f"{block}.branch7x7dbl_3", c7, (1, 7))
        bd = basic(bd, f"{block}.branch7x7dbl_4", c7, (7, 1))
        bd = basic(bd, f"{block}.branch7x7dbl_5", 192, (1, 7))
        bp = basic(average_pool(x, block), f"{block}.branch_pool", 192, 1)
        return concat([b1, b7, bd, bp], block)

    def block_d(x, block):
        b3 = basic(x, f"{block}.branch3x3_1", 192, 1)
        b3 = basic(b3, f"{block}.branch3x3_2", 320, 3, strides=2, padding="valid")
        b7 = basic(x, f"{block}.branch7x7x3_1", 192, 1)
        b7 = basic(b7, f"{block}.branch7x7x3_2", 192, (1, 7))
        b7 = basic(b7, f"{block}.branch7x7x3_3", 192, (7, 1))
        b7 = basic(b7, f"{block}.branch7x7x3_4", 192, 3, strides=2, padding="valid")
        bp = layers.MaxPooling2D(3, strides=2, name=f"{block}_pool")(x)
        return concat([b3, b7, bp], block)

    def block_e(x, block, max_pool):
        b1 = basic(x, f"{block}.branch1x1", 320, 1)
        b3 = basic(x, f"{block}.branch3x3_1", 384, 1)
        b3 = concat([basic(b3, f"{block}.branch3x3_2a", 384, (1, 3)),
                     basic(b3, f"{block}.branch3x3_2b", 384, (3, 1))], f"{block}_branch3x3")
        bd = basic(x, f"{block}.branch3x3dbl_1", 448, 1)
        bd = basic(bd, f"{block}.branch3x3dbl_2", 384, 3)
        bd = concat([basic(bd, f"{block}.branch3x3dbl_3a", 384, (1, 3)),
                     basic(bd, f"{block}.branch3x3dbl_3b", 384, (3, 1))], f"{block}_branch3x3dbl")
        if max_pool:
            # FIDInceptionE_2: the 2015-12-05 graph max-pools here (torch pads with -inf, TF's
            # "same" max pool ignores the padding: the same maxima).
            pooled = layers.MaxPooling2D(3, strides=1, padding="same", name=f"{block}_pool")(x)
        else:
            pooled = average_pool(x, block)
        bp = basic(pooled, f"{block}.branch_pool", 192, 1)
        return concat([b1, b3, bd, bp], block)

    inputs = keras.Input((input_size, input_size, 3), name="images")
    x = basic(inputs, "Conv2d_1a_3x3", 32, 3, strides=2, padding="valid")
    x = basic(x, "Conv2d_2a_3x3", 32, 3, padding="valid")
    x = basic(x, "Conv2d_2b_3x3", 64, 3)
    x = layers.MaxPooling2D(3, strides=2, name="maxpool1")(x)
    x = basic(x, "Conv2d_3b_1x1", 80, 1, padding="valid")
    x = basic(x, "Conv2d_4a_3x3", 192, 3, padding="valid")
    x = layers.MaxPooling2D(3, strides=2, name="maxpool2")(x)
    x = block_a(x, "Mixed_5b", 32)
    x = block_a(x, "Mixed_5c", 64)
    x = block_a(x, "Mixed_5d", 64)
    x = block_b(x, "Mixed_6a")
    x = block_c(x, "Mixed_6b", 128)
    x = block_c(x, "Mixed_6c", 160)
    x = block_c(x, "Mixed_6d", 160)
    x = block_c(x, "Mixed_6e", 192)
    x = block_d(x, "Mixed_7a")
    x = block_e(x, "Mixed_7b", max_pool=False)
    x = block_e(x, "Mixed_7c", max_pool=True)
    outputs = layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(inputs, outputs, name=name)


def read_provenance(path) -> dict:
    """The network and source hash a `fid_convert` weights file records; {} for any other file.

    Returns:
        {"network": str, "source_sha256": str} when both attributes are present, else {}.
    """
    import h5py

    path = os.fspath(path)
    try:
        if not h5py.is_hdf5(path):
            return {}
        with h5py.File(path, "r") as f:
            network = f.attrs.get(NETWORK_ATTRIBUTE)
            source = f.attrs.get(SOURCE_SHA256_ATTRIBUTE)
    except OSError:
        # Unreadable here; loading it will say why, with the file's name.
        return {}
    if network is None or source is None:
        return {}
    decode = lambda value: value.decode() if isinstance(value, bytes) else str(value)  # noqa: E731
    return {"network": decode(network), "source_sha256": decode(source)}


def is_published(provenance: dict) -> bool:
    """Whether a file's provenance is the FID graph converted from pytorch-fid's published weights."""
    return (provenance.get("network") == NETWORK_NAME
            and provenance.get("source_sha256", "").startswith(PUBLISHED_SHA256_PREFIX))
