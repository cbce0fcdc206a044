"""pop_tf: popularity-driven, diverse garment image generation in TensorFlow/Keras."""

import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("pop_tf/__init__.py").read_text()).group(1)

# Ranges verified to install and import together on Python 3.11 (2026-11): tensorflow 2.21.0,
# keras 3.15.1, apache-beam 2.77.0, tensorflow-hub 0.16.1, tf-keras 2.21.0, numpy 2.4,
# scikit-learn 1.9, pillow 12.3, protobuf 6.33. tensorflow-addons is deliberately absent (EOL,
# incompatible with Keras 3): see the README.
INSTALL_REQUIRES = [
    "tensorflow>=2.21,<2.22",
    "keras>=3.10,<4",
    "apache-beam[tfrecord]>=2.77,<2.78",
    "google-crc32c>=1.5",  # the fast CRC that Beam's TFRecord writer looks for
    "tensorflow-hub>=0.16.1,<0.17",
    "tf-keras>=2.21,<2.22",  # tensorflow_hub and Beam's TF RunInference import it
    "scikit-learn>=1.5,<2",
    "scipy>=1.13",
    "numpy>=1.26,<3",
    "pillow>=10.4,<13",
    "tensorboard>=2.21,<2.22",
    # tensorflow_hub imports pkg_resources, which setuptools 81 and later no longer ship.
    "setuptools<81",
]
# torch checks the PyTorch-checkpoint converters against PyTorch itself. 2.13 is the series whose
# CPU-only wheel this project's machines serve; an unpinned torch resolves to a newer CUDA build
# of several GB from PyPI. pytorch-fid and lpips are the references of the FID graph and LPIPS
# (and lpips ships the linear weights its converter test reads); both import torchvision, pinned
# to the release built for torch 2.13 so that it does not pull a newer torch in.
# apache-beam[dask] (dask, distributed): tests/test_dask.py runs ingest and pairs on a LocalCluster.
DASK_REQUIRES = ["apache-beam[dask]>=2.77,<2.78"]
TEST_REQUIRES = ["pytest>=8,<10", "nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29", "torch==2.13.*",
                 "torchvision==0.28.*", "pytorch-fid==0.3.*", "lpips==0.1.4", *DASK_REQUIRES]

setup(
    name="pop_tf",
    version=VERSION,
    description=__doc__.strip(),
    long_description=Path("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["pop_tf", "pop_tf.*"]),
    package_data={"pop_tf": ["presets/*.json"]},
    install_requires=INSTALL_REQUIRES,
    # torch: only to read PyTorch checkpoints (pop_tf.models.convert, pop_tf.metrics.lpips_convert);
    # the CPU build is enough: pip install torch --index-url https://download.pytorch.org/whl/cpu.
    extras_require={"test": TEST_REQUIRES, "dask": DASK_REQUIRES,
                    "torch": ["torch>=2.1,<3"]},
    entry_points={"console_scripts": ["pop-tf=pop_tf.cli:main"]},
)
