"""Padding and pooling with PyTorch's border semantics (channels-last).

- `ReflectionPadding2D` is PyTorch's `nn.ReflectionPad2d`, which DMIT puts in front of its convs.
- `PaddedAveragePooling2D` is `nn.AvgPool2d(k, stride, padding, count_include_pad=False)`, the
  down-sampler between the scales of DMIT's and BicycleGAN's multi-scale discriminators. Keras's
  `AveragePooling2D(padding="same")` also excludes the padding from the count, but pads only at
  the bottom/right for even sizes, shifting every window by half a pixel.
"""

import keras
from keras import ops

PACKAGE = "pop_tf"


def _pairs(padding, name):
    """((top, bottom), (left, right)) from an int, an (h, w) pair or a pair of pairs."""
    if isinstance(padding, int):
        result = ((padding, padding), (padding, padding))
    elif (isinstance(padding, (list, tuple)) and len(padding) == 2
          and all(isinstance(p, int) for p in padding)):
        result = ((padding[0], padding[0]), (padding[1], padding[1]))
    elif (isinstance(padding, (list, tuple)) and len(padding) == 2
          and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in padding)):
        result = (tuple(int(v) for v in padding[0]), tuple(int(v) for v in padding[1]))
    else:
        raise ValueError(
            f"{name} must be an int, (pad_h, pad_w) or ((top, bottom), (left, right)), "
            f"got {padding!r}.")
    if any(v < 0 for pair in result for v in pair):
        raise ValueError(f"{name} must not be negative, got {padding!r}.")
    return result


def _grown(size, before, after):
    return None if size is None else size + before + after


@keras.saving.register_keras_serializable(package=PACKAGE)
class ReflectionPadding2D(keras.layers.Layer):
    """Pads the spatial axes of [N, H, W, C] by reflection (the border pixel is not repeated).

    Same as PyTorch's `nn.ReflectionPad2d`; each pad must be smaller than the padded size.

    Args:
        padding: int, (pad_h, pad_w) or ((top, bottom), (left, right)).
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        DMIT `models/modules/network.py` (`Conv2dBlock`, `pad_type='reflect'`).
    """

    def __init__(self, padding=1, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(padding, "padding")

    def call(self, inputs):
        (top, bottom), (left, right) = self.padding
        return ops.pad(inputs, [[0, 0], [top, bottom], [left, right], [0, 0]], mode="reflect")

    def compute_output_shape(self, input_shape):
        (top, bottom), (left, right) = self.padding
        return (input_shape[0], _grown(input_shape[1], top, bottom),
                _grown(input_shape[2], left, right), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update({"padding": [list(p) for p in self.padding]})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PaddedAveragePooling2D(keras.layers.Layer):
    """Average pooling with symmetric zero padding that is left out of each window's count.

    Equals PyTorch's `nn.AvgPool2d(pool_size, strides, padding, count_include_pad=False)`: a
    window that overlaps the border averages only the pixels inside the image. Implemented as
    a valid pooling of the zero-padded input divided by the pooled padded ones-mask.

    Args:
        pool_size: window size (int).
        strides: stride (int).
        padding: zero padding on every side (int), at most half the window.
        **kwargs: base `keras.layers.Layer` arguments.

    References:
        DMIT `MultiStyleDiscriminator` and BicycleGAN `D_NLayersMulti`
        (`nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)`).
    """

    def __init__(self, pool_size=3, strides=2, padding=1, **kwargs):
        super().__init__(**kwargs)
        if pool_size < 1 or strides < 1:
            raise ValueError(
                f"pool_size and strides must be positive, got {pool_size} and {strides}.")
        if not 0 <= padding <= pool_size // 2:
            raise ValueError(
                f"padding must be between 0 and pool_size // 2 = {pool_size // 2}, got {padding}.")
        self.pool_size = int(pool_size)
        self.strides = int(strides)
        self.padding = int(padding)

    def call(self, inputs):
        p = self.padding
        pads = [[0, 0], [p, p], [p, p], [0, 0]]
        summed = ops.average_pool(ops.pad(inputs, pads), self.pool_size, self.strides, "valid")
        ones = ops.ones_like(inputs[:1, :, :, :1])
        counted = ops.average_pool(ops.pad(ones, pads), self.pool_size, self.strides, "valid")
        return summed / counted

    def compute_output_shape(self, input_shape):
        def out(size):
            if size is None:
                return None
            return (size + 2 * self.padding - self.pool_size) // self.strides + 1
        return (input_shape[0], out(input_shape[1]), out(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(
            {"pool_size": self.pool_size, "strides": self.strides, "padding": self.padding})
        return config
