"""A plug-in registry: every module of a package registers its one item on import (like west's runners).

Loading a registry imports each module of its package except `base` (the protocol) and modules whose
name starts with "_" (helpers that register nothing); a subpackage registers in its __init__.
"""

import importlib
import pkgutil
from typing import Generic, TypeVar

from .errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, package: str):
        self.kind = kind  # "backend", "runner": used in messages
        self.package = package
        self._items: dict[str, T] = {}
        self._loaded = False

    def register(self, item: T) -> T:
        self._items[item.name] = item
        return item

    def _load_all(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name != "base" and not info.name.startswith("_"):
                importlib.import_module(f"{self.package}.{info.name}")

    def names(self) -> list[str]:
        self._load_all()
        return sorted(self._items)

    def get(self, name: str) -> T:
        self._load_all()
        if name not in self._items:
            raise BadInput(f"unknown {self.kind} '{name}'; known {self.kind}s: {', '.join(sorted(self._items))}.")
        return self._items[name]
