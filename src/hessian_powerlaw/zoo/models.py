"""Models of the paper built from a spec string and a data bundle.

Model specs
-----------
``lenet``
    LeNet-5: conv(5x5, 6) - maxpool - conv(5x5, 16) - maxpool - fc 120 - fc 84 - fc C, ReLU.
    Padding adapts to the input: 28x28 pads the first conv ("same"), 32x32 pads none (the
    classic layout, 16x5x5 features either way), inputs smaller than 16x16 (digits' 8x8)
    pad both convs so the feature map stays non-empty.
``fcn:DxW``
    D hidden layers of width W with ReLU, then a linear read-out. ``fcn:0xW`` is a linear
    (softmax-regression) model.
``linear-net:DxW``
    The same stack without activations: a deep *linear* network (the paper's control).
``resnet18[:M]``
    CIFAR-style ResNet-18 (3x3 stem, no max-pool, four stages of two basic blocks with
    BatchNorm) with channel widths ``round(M * (64, 128, 256, 512))``; M = 0.25 fits a CPU.
``module:attr``
    ``attr`` (dotted path allowed) of the importable ``module``: a class or factory called
    with ``input_shape`` and ``num_classes`` when it accepts them, else with no arguments.
``chargpt:...``, ``hf:PATH``
    Language models, built by :mod:`hessian_powerlaw.zoo.gpt` and :mod:`hessian_powerlaw.zoo.hf`.

Models are built under ``torch.random.fork_rng`` with ``torch.manual_seed(seed)``, so the
same spec and seed give the same initial weights without touching the global RNG.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hessian_powerlaw.errors import UserInputError
from hessian_powerlaw.protocols import DataBundle
from hessian_powerlaw.zoo import MODEL_SPECS

# ---------------------------------------------------------------------------------------
# LeNet
# ---------------------------------------------------------------------------------------


class LeNet(nn.Module):
    """LeNet-5 with ReLU and max-pooling, adapted to the input size (see module docstring)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        channels, height, width = _image_shape(input_shape, "lenet")
        side = min(height, width)
        pad1 = 2 if side < 32 else 0
        pad2 = 2 if side < 16 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, kernel_size=5, padding=pad1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5, padding=pad2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        with torch.no_grad():
            flat = self.features(torch.zeros(1, channels, height, width)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of inputs."""
        return self.classifier(self.features(x))


def _image_shape(input_shape: Sequence[int], name: str) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise UserInputError(
            f"model {name!r} needs image data of shape (channels, height, width), got "
            f"input shape {shape}"
        )
    if min(shape[1:]) < 4:
        raise UserInputError(f"model {name!r} needs images of at least 4x4, got {shape}")
    return shape  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------
# Fully connected and deep linear networks
# ---------------------------------------------------------------------------------------


def mlp(
    input_shape: Sequence[int], num_classes: int, depth: int, width: int, activation: bool
) -> nn.Sequential:
    """Flatten, ``depth`` hidden Linear(width) layers (ReLU after each if ``activation``), out."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(int(d) for d in input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width))
        if activation:
            layers.append(nn.ReLU())
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def _parse_depth_width(spec: str, arg: str) -> tuple[int, int]:
    depth, sep, width = arg.partition("x")
    if not (sep and depth.isdigit() and width.isdigit() and int(width) >= 1):
        raise UserInputError(
            f"model spec {spec!r}: expected DxW with whole numbers D >= 0, W >= 1 (e.g. fcn:2x100)"
        )
    return int(depth), int(width)


# ---------------------------------------------------------------------------------------
# CIFAR-style ResNet-18
# ---------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 conv-BN) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of inputs."""
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small images (He et al. 2016, CIFAR variant) with a width multiplier."""

    def __init__(
        self, input_shape: Sequence[int], num_classes: int, width_multiplier: float = 1.0
    ) -> None:
        super().__init__()
        channels, _, _ = _image_shape(input_shape, "resnet18")
        widths = [max(1, round(width_multiplier * w)) for w in (64, 128, 256, 512)]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        )
        blocks: list[nn.Module] = []
        in_ch = widths[0]
        for stage, out_ch in enumerate(widths):
            stride = 1 if stage == 0 else 2
            blocks += [BasicBlock(in_ch, out_ch, stride), BasicBlock(out_ch, out_ch, 1)]
            in_ch = out_ch
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of inputs."""
        out = self.pool(self.layers(self.stem(x)))
        return self.fc(torch.flatten(out, 1))


def _parse_width_multiplier(spec: str, arg: str) -> float:
    if not arg:
        return 1.0
    try:
        value = float(arg)
    except ValueError:
        value = float("nan")
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(
            f"model spec {spec!r}: the width multiplier must be a positive number "
            "(e.g. resnet18:0.25)"
        )
    return value


# ---------------------------------------------------------------------------------------
# User factories (module:attr)
# ---------------------------------------------------------------------------------------


def _import_from_cwd(module_name: str) -> Any:
    """Import ``module_name`` with the current folder searched first.

    Import ``module_name`` with the current folder searched first, as ``python -m`` does
    (an installed console script does not put it on ``sys.path``).
    """
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(cwd)


def _import_factory(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserInputError(f"unknown model spec {spec!r}; valid specs: {MODEL_SPECS}")
    try:
        obj: Any = _import_from_cwd(module_name)
    except ImportError as exc:
        raise UserInputError(
            f"model spec {spec!r}: cannot import module {module_name!r} ({exc}) from the "
            f"current folder or sys.path; valid specs: {MODEL_SPECS}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserInputError(f"model spec {spec!r}: {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserInputError(f"model spec {spec!r}: {attr!r} is not callable")
    return obj


def _call_factory(spec: str, factory: Callable[..., Any], data: DataBundle) -> nn.Module:
    kwargs = {"input_shape": tuple(data.input_shape), "num_classes": int(data.num_classes)}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # builtins without a signature: try with no arguments
        signature = None
    if signature is not None and _accepts(signature, kwargs):
        model = factory(**kwargs)
    elif signature is None or _accepts(signature, {}):
        model = factory()
    else:
        raise UserInputError(
            f"model spec {spec!r}: the factory must take (input_shape, num_classes) or no "
            f"arguments; its signature is {signature}"
        )
    if not isinstance(model, nn.Module):
        raise UserInputError(
            f"model spec {spec!r}: the factory returned {type(model).__name__}, not an nn.Module"
        )
    return model


def _accepts(signature: inspect.Signature, kwargs: dict[str, Any]) -> bool:
    try:
        signature.bind(**kwargs)
    except TypeError:
        return False
    return True


# ---------------------------------------------------------------------------------------
# build_model
# ---------------------------------------------------------------------------------------


def build_model(spec: str, data: DataBundle, seed: int = 0) -> nn.Module:
    """Build the model named by ``spec`` for the data bundle ``data`` (see module docstring).

    Initial weights depend only on (spec, data shape, seed); the global RNG is left as it was.
    """
    if not isinstance(spec, str) or not spec:
        raise UserInputError(f"model spec must be a non-empty string; valid specs: {MODEL_SPECS}")
    name, _, arg = spec.partition(":")
    if name == "chargpt":
        from hessian_powerlaw.zoo.gpt import build_chargpt

        return build_chargpt(spec, data, seed)
    if name == "hf":
        if not arg:
            raise UserInputError(f"model spec {spec!r} needs a folder: hf:PATH")
        from hessian_powerlaw.zoo.hf import load_hf_model

        return load_hf_model(arg, data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _build_seeded(spec, name, arg, data)


def _build_seeded(spec: str, name: str, arg: str, data: DataBundle) -> nn.Module:
    if name in ("lenet", "fcn", "linear-net", "resnet18") and getattr(data, "kind", "") != "image":
        raise UserInputError(
            f"model {name!r} is an image classifier; data {getattr(data, 'spec', data)!r} is "
            f"{getattr(data, 'kind', 'unknown')} data"
        )
    if name == "lenet":
        if arg:
            raise UserInputError(f"model spec {spec!r}: lenet takes no options")
        return LeNet(data.input_shape, data.num_classes)
    if name in ("fcn", "linear-net"):
        depth, width = _parse_depth_width(spec, arg)
        return mlp(data.input_shape, data.num_classes, depth, width, activation=name == "fcn")
    if name == "resnet18":
        return ResNet18(data.input_shape, data.num_classes, _parse_width_multiplier(spec, arg))
    if not arg:
        raise UserInputError(f"unknown model spec {spec!r}; valid specs: {MODEL_SPECS}")
    return _call_factory(spec, _import_factory(spec), data)
