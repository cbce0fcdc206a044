"""Ding et al.'s released PyTorch model converted into pop_tf's ranker (`pop_tf.models.convert`).

Needs PyTorch (skipped without it): `pip install 'pop_tf[torch]'` or
`pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu`. The reference
network is torchvision's `resnet50()` with `fc = Linear(2048, 1)`, as in Ding's `test.py`; where
torchvision is missing or broken (a CUDA torchvision beside a CPU torch cannot load its
operators), a copy of torchvision's ResNet50 in plain torch.nn with the same state-dict keys
stands in, and the test says so.
"""

import io
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFilter

torch = pytest.importorskip("torch", reason="the conversion tests need PyTorch (pip install 'pop_tf[torch]')")

from pop_tf.layers import normalization  # noqa: E402
from pop_tf.models import convert  # noqa: E402
from pop_tf.models import ranker as ranker_lib  # noqa: E402


# ------------------------------------------------------------------------ the PyTorch reference


class _Bottleneck(torch.nn.Module):
    """torchvision.models.resnet.Bottleneck (v1.5: the stride on the 3×3 convolution)."""

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ResNet50(torch.nn.Module):
    """torchvision.models.resnet50() in plain torch.nn: the same modules, keys and forward."""

    def __init__(self):
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))):
            downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
            layers = [_Bottleneck(inplanes, planes, stride, downsample)]
            inplanes = planes * 4
            layers += [_Bottleneck(inplanes, planes) for _ in range(1, blocks)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2048, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _torchvision_resnet50():
    """(torchvision's resnet50(), "torchvision"), or the torch.nn copy and why."""
    try:
        import torchvision
        return torchvision.models.resnet50(), "torchvision"
    except Exception as exc:  # absent, or a build whose operators do not load against this torch
        return _ResNet50(), f"torch.nn copy ({type(exc).__name__}: {str(exc)[:80]})"


def _images(count, size, seed=0):
    """Photo-like RGB uint8 images: a shaded background, blurred shapes, noise, a JPEG round trip."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0.0, 1.0, size)[:, None, None]
        image = Image.fromarray(np.uint8(top * (1 - ramp) + bottom * ramp + np.zeros((size, size, 3))))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = rng.integers(0, size * 3 // 4, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=color)
        image = image.filter(ImageFilter.GaussianBlur(1.5))
        noisy = np.clip(np.asarray(image, np.float32) + rng.normal(0, 6, (size, size, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=85)
        out.append(np.asarray(Image.open(buffer).convert("RGB")))
    return np.stack(out)


@pytest.fixture(scope="module")
def ding_model(tmp_path_factory):
    """A random torchvision resnet50 with fc = Linear(2048, 1) and calibrated batch-norm statistics,
    in eval mode, its state dict saved as Ding's .pth is; plus images and its scores."""
    torch.manual_seed(0)
    model, source = _torchvision_resnet50()
    model.fc = torch.nn.Linear(2048, 1)
    calibration = torch.from_numpy(_images(4, 224, seed=1).transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    # Running statistics of real activations (a trained model's are), not 0 and 1: with those a
    # random ResNet's activations grow block by block and the test would compare huge numbers.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # cumulative average
            with torch.no_grad():
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    model.train()
    with torch.no_grad():
        model(calibration)
    model.eval()
    path = tmp_path_factory.mktemp("ding") / "model-resnet50.pth"
    torch.save(model.state_dict(), path)
    images = _images(4, 224)
    with torch.no_grad():
        # Ding's test.py: ToTensor() — RGB in [0, 1], no normalisation.
        expected = model(torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)).numpy()[:, 0]
    print(f"reference network: {source}")
    return {"path": str(path), "model": model, "images": images, "expected": expected, "source": source}


# ------------------------------------------------------------------------------------- tests


def test_converted_ding_model_scores_like_pytorch(ding_model):
    ranker = convert.ranker_from_torch_state_dict(ding_model["path"], image_size=224)
    assert ranker.input_preprocessing == "unit"
    scores = ranker(ding_model["images"].astype(np.float32) / 255.0).numpy()
    difference = np.abs(scores - ding_model["expected"]).max()
    print(f"max |keras - torch| = {difference:.2e} over scores {ding_model['expected']} ({ding_model['source']})")
    assert np.std(ding_model["expected"]) > 1e-2  # the images really score differently
    np.testing.assert_allclose(scores, ding_model["expected"], atol=1e-4)
    # Ding's preprocessing (uint8 / 255 through pairwise_logits) and the fused batch norm with torch's epsilon.
    logits = ranker_lib.pairwise_logits(ranker, ding_model["images"][:2], ding_model["images"][2:], training=False)
    np.testing.assert_allclose(logits.numpy(), ding_model["expected"][:2] - ding_model["expected"][2:], atol=2e-4)
    norms = [layer for layer in ranker.backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 53 and all(type(layer) is normalization.BatchNormalization for layer in norms)
    assert {layer.epsilon for layer in norms} == {1e-5}


def test_state_dict_of_numpy_arrays_converts_without_reading_a_file(ding_model):
    state = {f"module.{k}": v.numpy() for k, v in ding_model["model"].state_dict().items()}
    ranker = convert.ranker_from_torch_state_dict(state, image_size=64)
    images = tf.image.resize(ding_model["images"][:2].astype(np.float32) / 255.0, [64, 64]).numpy()
    with torch.no_grad():
        expected = ding_model["model"](torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()[:, 0]
    np.testing.assert_allclose(ranker(images).numpy(), expected, atol=1e-4)


def test_cli_writes_a_keras_file_that_fine_tunes_at_another_size(ding_model, tmp_path):
    output = tmp_path / "ding_ranker.keras"
    # `python -m pop_tf.models.convert ding ...`, in this process.
    assert convert.main(["ding", "--input", ding_model["path"], "--output", str(output)]) == 0
    loaded = keras.saving.load_model(output)
    assert loaded.input_preprocessing == "unit"
    np.testing.assert_allclose(loaded(ding_model["images"][:2].astype(np.float32) / 255.0).numpy(),
                               ding_model["expected"][:2], atol=1e-4)
    # weights=<ranker .keras> in build_ranker (and so the train_ranker stage): same network at 64².
    small = ranker_lib.build_ranker("resnet50", str(output), 64)
    assert small.input_preprocessing == "unit" and small.backbone.name == ranker_lib.TORCHVISION_RESNET50
    images = tf.image.resize(ding_model["images"][:2].astype(np.float32) / 255.0, [64, 64]).numpy()
    with torch.no_grad():
        expected = ding_model["model"](torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()[:, 0]
    np.testing.assert_allclose(small(images).numpy(), expected, atol=1e-4)
    with pytest.raises(Exception, match="resnet50 backbone but backbone='small'"):
        ranker_lib.build_ranker("small", str(output), 64)


def test_wrong_state_dicts_fail_with_one_sentence(ding_model, tmp_path):
    state = {k: v.numpy() for k, v in ding_model["model"].state_dict().items()}
    with pytest.raises(convert.ConversionError, match="not a popularity model"):
        convert.keras_weights_from_state_dict({**state, "fc.weight": np.zeros((1000, 2048), np.float32),
                                               "fc.bias": np.zeros(1000, np.float32)})
    with pytest.raises(convert.ConversionError, match="has no layer4.2.bn3.running_var"):
        convert.keras_weights_from_state_dict({k: v for k, v in state.items() if k != "layer4.2.bn3.running_var"})
    with pytest.raises(convert.ConversionError, match="does not"):
        convert.keras_weights_from_state_dict({**state, "extra.weight": np.zeros(1, np.float32)})
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(convert.ConversionError, match="Could not read"):
        convert.load_state_dict(str(bad))


def test_missing_torch_is_one_sentence(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch → ImportError
    path = tmp_path / "model.pth"
    path.write_bytes(b"x")
    with pytest.raises(convert.TorchMissingError, match=r"pip install 'pop_tf\[torch\]'"):
        convert.ranker_from_torch_state_dict(str(path))
