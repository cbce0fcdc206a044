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


def check_choice(value, choices, name):
    """A ValueError naming `name` unless `value` is one of `choices`."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")


def rate(value, name):
    """`value` as a float in [0, 1) (a dropout rate)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}.")
    return float(value)
