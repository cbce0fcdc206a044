"""Imports the PyTorch reference packages (pytorch-fid, lpips) that the metric tests compare with.

Both import torchvision, whose compiled operators only load against the torch build they were
made for. Where they do not (this project's machines pair the CPU-only torch wheel with the CUDA
torchvision wheel from PyPI), torchvision's import dies registering fake kernels for its `nms` and
`qnms` operators. Neither metric uses an operator of torchvision's, only its Python model
definitions, so the two operators are declared as schemas and the import retried.
"""

import importlib

import pytest

_OPERATOR_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def _import_torchvision():
    import torch

    try:
        return importlib.import_module("torchvision")
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for operator in ("nms", "qnms"):
        try:
            torch.library.define(f"torchvision::{operator}", _OPERATOR_SCHEMA)
        except RuntimeError:
            pass  # declared already; the import below says what else is wrong
    return importlib.import_module("torchvision")


def reference(module):
    """Imports `module` (e.g. "pytorch_fid.inception" or "lpips"); skips the test when its
    package is not installed (both come with the `test` extra)."""
    pytest.importorskip("torch")
    try:
        _import_torchvision()
    except ImportError as exc:
        pytest.skip(f"torchvision is not installed ({exc})")
    return pytest.importorskip(module)
