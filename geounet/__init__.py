"""geounet: tile, segment and vectorize satellite and aerial imagery at region scale.

Notebook API (:mod:`geounet.api`, imported lazily): ``geounet.search(...)`` → scenes,
``geounet.predict(source, model, ...)`` → ``xarray.Dataset``, ``geounet.vectorize(...)`` →
GeoDataFrame. ``geounet.search`` and ``geounet.vectorize`` are also the submodules of those
names: calling the module calls the API function.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
import sys
import types
from typing import Any

from geounet.errors import GeounetError

__all__ = ["GeounetError", "__version__", "predict", "search", "vectorize"]

_CALLABLE_MODULES = ("search", "vectorize")


class _CallableModule(types.ModuleType):
    """A submodule that is also the notebook function of its name (``geounet.search(...)``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from geounet import api

        return getattr(api, self.__name__.rsplit(".", 1)[1])(*args, **kwargs)


class _Package(types.ModuleType):
    def __getattribute__(self, name: str) -> Any:
        value = super().__getattribute__(name)
        if name in _CALLABLE_MODULES and type(value) is types.ModuleType:
            value.__class__ = _CallableModule
        return value


def __getattr__(name: str) -> Any:
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"geounet.{name}")
    if name == "predict":
        from geounet.api import predict

        return predict
    raise AttributeError(f"module 'geounet' has no attribute {name!r}")


sys.modules[__name__].__class__ = _Package
