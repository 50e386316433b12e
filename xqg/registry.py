"""Named extensions (generation backends, corpus formats): each is one module of its package that registers itself.

A package of extensions keeps a Registry in its `base` module; every extension module imports that module and
ends with a `register` call. The package's lookup functions call `import_package` first, which imports every
module of the package not named _private (once; later calls find them in sys.modules), so dropping a file into
the package is all it takes to add an extension. Extension modules must import their heavy engines inside
functions: the lookups import every one of them, also where only a name is checked (a config loaded on a
machine without the engine).

Registration and discovery live in different modules (`base` registers, the package's lookup module discovers),
so no extension module imports the module that imports it. Imports nothing of xqg.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Generic, TypeVar

T = TypeVar("T")


def import_package(package: str) -> None:
    """Import every module of a package but _private ones (its extensions register themselves as they are imported)."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


class Registry(Generic[T]):
    """Extensions of one kind by name; an unknown name is a ValueError listing the known ones."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.registered: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        """Add item under name; a second, different item under the same name is a ValueError."""
        existing = self.registered.get(name)
        if existing is not None and existing is not item:
            raise ValueError(f"two {self.kind}s named {name!r}: {existing!r} and {item!r}")
        self.registered[name] = item
        return item

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self.registered)

    def get(self, name: str) -> T:
        """The item registered under name."""
        if name not in self.registered:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self.registered[name]
