"""Reusable Keras 3 layers for the GANs (DMIT, pix2pix): PyTorch-faithful normalisation and padding,
DMIT's CBIN, and spectrally normalised conv/residual blocks. Channels-last throughout.

Every layer takes base-layer `**kwargs`, round-trips through `get_config`, and is registered
for Keras serialisation under the package name "pop_tf". `keras.layers.LayerNormalization` is
not reused for DMIT's up-sampling blocks: DMIT's layer norm has per-channel (not per-element)
affine weights and epsilon 1e-5 (see `LayerNormalization` here).
"""

from pop_tf.layers.blocks import (
    UP_TYPES,
    ConvBlock,
    ConvTransposeBlock,
    DownResidualBlock,
    ResidualBlock,
    SpatialBroadcastConcat,
    make_activation,
    make_normalization,
    normal_initializer,
    spectral_conv2d,
    spectral_conv2d_transpose,
    spectral_dense,
    upsample,
)
from pop_tf.layers.normalization import (
    AdaptiveInstanceNorm,
    CentralBiasingInstanceNorm,
    InstanceNormalization,
    LayerNormalization,
)
from pop_tf.layers.padding import PaddedAveragePooling2D, ReflectionPadding2D

__all__ = [
    "UP_TYPES",
    "AdaptiveInstanceNorm",
    "CentralBiasingInstanceNorm",
    "ConvBlock",
    "ConvTransposeBlock",
    "DownResidualBlock",
    "InstanceNormalization",
    "LayerNormalization",
    "PaddedAveragePooling2D",
    "ReflectionPadding2D",
    "ResidualBlock",
    "SpatialBroadcastConcat",
    "make_activation",
    "make_normalization",
    "normal_initializer",
    "spectral_conv2d",
    "spectral_conv2d_transpose",
    "spectral_dense",
    "upsample",
]
