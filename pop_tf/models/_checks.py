"""Argument checks shared by the models' constructors: a bad value is a ValueError naming the argument."""

import numpy as np
import tensorflow as tf


def positive_int(value, name, minimum=1):
    """`value` as an int when it is an integer (not a bool) ≥ `minimum`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}.")
    return int(value)


def as_matrix(value, shape, name, dtype=tf.float32):
    """`value` as a constant tensor of `dtype` when its shape is `shape`."""
    tensor = tf.constant(np.asarray(value), dtype=dtype)
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(tensor.shape)}.")
    return tensor
