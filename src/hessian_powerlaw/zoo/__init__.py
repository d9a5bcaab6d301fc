"""Models and datasets of the paper, offline: ``load_data(spec)`` and ``build_model(spec, data)``.

Image data and image models live in :mod:`.data` and :mod:`.models`; text data and language
models (``shakespeare``, ``text:FILE``, ``chargpt:...``, ``hf:PATH``) are loaded lazily from
:mod:`.text`, :mod:`.gpt` and :mod:`.hf` only when such a spec is asked for.
"""

from __future__ import annotations

from hessian_powerlaw.zoo.data import DATA_SPECS, ImageData, load_data
from hessian_powerlaw.zoo.models import MODEL_SPECS, build_model

__all__ = ["DATA_SPECS", "MODEL_SPECS", "ImageData", "build_model", "load_data"]
