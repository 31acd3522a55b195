"""Backend registry: each module in this package registers one backend on import."""

import importlib
import pkgutil

from ..errors import BadInput
from .base import Backend

_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    _REGISTRY[backend.name] = backend
    return backend


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Backend:
    _load_all()
    if name not in _REGISTRY:
        raise BadInput(f"unknown backend '{name}'; known backends: {', '.join(sorted(_REGISTRY))}.")
    return _REGISTRY[name]
